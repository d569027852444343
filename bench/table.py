"""Every benchmark in turn, then one table of their headline ratios: what `make bench`
prints, so a reviewer reruns one command and reads one table.

Each benchmark runs as its own process (its detail streams through as it goes); a
benchmark that fails is named in the table rather than stopping the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.figures import FIGURES_ENV  # noqa: E402

# (script, arguments): the sizes each issue's figures were measured at
RUNS = [
    ("poll.py", []),
    ("rate.py", ["--runs", "1"]),
    ("match.py", []),
    ("meaning.py", []),
    ("pipeline.py", []),
    ("fulltext.py", []),
    ("scale.py", []),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated scripts to run, e.g. poll.py,match.py")
    args = ap.parse_args()
    chosen = set(args.only.split(",")) if args.only else None
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.jsonl"
        figures.touch()
        for script, extra in RUNS:
            if chosen is not None and script not in chosen:
                continue
            print(f"==== bench/{script} {' '.join(extra)}", flush=True)
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, str(BENCH / script), *extra],
                env={**os.environ, FIGURES_ENV: str(figures)},
            )
            print(f"==== bench/{script}: {time.perf_counter() - started:.0f} s", flush=True)
            if done.returncode:
                failed.append(f"{script} (exit {done.returncode})")
        rows = [json.loads(line) for line in figures.read_text().splitlines()]
    widths = [max([len(h), *(len(r[k]) for r in rows)]) for h, k in _COLUMNS]
    print()
    print("  ".join(h.ljust(w) for (h, _), w in zip(_COLUMNS, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(row[k].ljust(w) for (_, k), w in zip(_COLUMNS, widths, strict=True)))
    for name in failed:
        print(f"!! {name}: its figures are missing")
    if failed:
        raise SystemExit(1)


_COLUMNS = [
    ("bench", "bench"),
    ("figure", "figure"),
    ("ratio (one run)", "value"),
    ("target", "target"),
]


if __name__ == "__main__":
    main()
