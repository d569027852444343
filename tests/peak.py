"""Peak memory of a child process, measured by the child itself.

ru_maxrss alone would not do: Linux carries the parent's high-water mark over fork and exec,
so a child of a large pytest starts at its parent's size. VmHWM is the child's own mm.
"""

from __future__ import annotations

import inspect
import resource


def peak_kb() -> int:
    """This process's own peak resident memory, in kB (VmHWM; ru_maxrss where there is
    no /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# The same function as source, for a child started with `python -c`.
PEAK_KB = "import resource\n" + inspect.getsource(peak_kb).replace(" -> int", "")

# `python -c MONITOR PEAK_FILE ARGS...`: `monitor ARGS...`, its own peak (kB) written to
# PEAK_FILE as it exits; the exit code is monitor's.
MONITOR = (
    PEAK_KB
    + """
import sys
from monitor.cli import main

peak_file, args = sys.argv[1], sys.argv[2:]
try:
    code = main(args)
finally:
    with open(peak_file, "w") as out:
        out.write(str(peak_kb()))
raise SystemExit(code)
"""
)
