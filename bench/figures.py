"""The figures that matter, gathered across benchmarks into one table (`make bench`).

Each benchmark prints its own detail and hands its headline ratios to `record`; run
alone it only prints. Under bench/table.py, which names a file in BENCH_FIGURES, each
ratio is also written there, one JSON object a line, for the table at the end.
"""

from __future__ import annotations

import json
import os

FIGURES_ENV = "BENCH_FIGURES"


def record(bench: str, figure: str, value: str, target: str = "") -> None:
    """One ratio of one benchmark, measured in one run: its name, its value as printed
    and the target it is held to (if any)."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    row = {"bench": bench, "figure": figure, "value": value, "target": target}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")
