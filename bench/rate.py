"""The rate over one cycle: feeds a second per hundred feeds of a cold `monitor poll`
process, over feeds that are all alike, on a database that may already hold many
articles (issue 24: the last hundred at least 80% of the first hundred's rate).

    python bench/rate.py [--feeds 300] [--items 40] [--prefill 100000] [--runs 2]

Each feed finished is one "feed polled" line on the process's stderr; the bench stamps
each line as it comes, and prints the rate of every hundred feeds. The prefill is written
straight into the SQLite file after `monitor db upgrade`: articles of another feed seen
over the last three days (within the near-duplicate window, each with a MinHash
signature and band keys), and one match in twenty with a stored gist, as a busy desk's
database holds them. `--spy DIR` also records a py-spy profile of the whole process tree
(py-spy on PATH or in PY_SPY).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import record  # noqa: E402
from bench.poll import WORDS, items, proc_tree, start_server  # noqa: E402
from monitor.dedupe import lsh_bands, minhash  # noqa: E402
from tests.conftest import US_CHINA, write_config  # noqa: E402
from tests.servers import rss  # noqa: E402

_VECTOR = 384  # the meaning model's dimensions
_PREFILL_URL = "http://127.0.0.1:9/prefill.xml"


def prefill(db: Path, articles: int, rng: random.Random) -> None:
    """`articles` rows of one feed of their own, and a match for one in twenty."""
    now = datetime.now(UTC).replace(tzinfo=None)
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO feed (name, url, config_url, errors_in_row, items_seen, next_due_at, "
        "created_at, held_back, held_back_matching) VALUES (?, ?, ?, 0, 0, ?, ?, 0, 0)",
        ("prefill", _PREFILL_URL, _PREFILL_URL, now + timedelta(days=1), now),
    )
    feed_id = con.execute("SELECT id FROM feed WHERE name = 'prefill'").fetchone()[0]
    article_rows, match_rows = [], []
    for i in range(articles):
        text = " ".join(rng.choice(WORDS) for _ in range(40))
        sig = minhash(text)
        assert sig is not None
        seen = now - timedelta(seconds=rng.uniform(0, 3 * 86400))
        article_rows.append(
            (
                feed_id,
                f"guid:prefill-{i}",
                f"url:https://prefill.example/{i}",
                text[:80],
                f"https://prefill.example/{i}",
                text,
                seen,
                seen,
                1,
                json.dumps(list(sig)),
                *lsh_bands(sig),
            )
        )
    con.executemany(
        "INSERT INTO article (feed_id, key, story_key, title, url, body, published_at, "
        "seen_at, alertable, signature, band0, band1, band2, band3, band4, band5, band6, "
        "band7) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        article_rows,
    )
    ids = [
        r[0] for r in con.execute("SELECT id, seen_at FROM article WHERE feed_id = ?", (feed_id,))
    ]
    for n, article_id in enumerate(ids[::20]):
        vector = [round(rng.gauss(0, 0.05), 4) for _ in range(_VECTOR)]
        gist = {"v": vector, "n": [rng.choice(WORDS)]}
        created = now - timedelta(seconds=rng.uniform(0, 3 * 86400))
        match_rows.append(
            (
                US_CHINA["name"],
                f"url:https://prefill.example/{n}",
                article_id,
                '["Wang Yi"]',
                "[]",
                "",
                "mention",
                "[]",
                json.dumps(gist),
                created,
            )
        )
    con.executemany(
        "INSERT INTO match (watchlist, story_key, article_id, matched, hits, snippet, "
        "strength, highlights, gist, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        match_rows,
    )
    con.commit()
    con.close()


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by `root` and its descendants alive, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    return sum((int(fields[11]) + int(fields[12])) / tick for _, fields in proc_tree(root))


def poll(
    cfg: Path, env: dict[str, str], spy: Path | None
) -> tuple[float, list[float], list[float]]:
    """A whole `monitor poll`: its time, and when each "feed polled" line came, in
    seconds and in CPU seconds of its process tree."""
    argv = [sys.executable, "-m", "monitor", "--config", str(cfg), "poll"]
    if spy is not None:
        tool = os.environ.get("PY_SPY") or shutil.which("py-spy") or "py-spy"
        argv = [
            tool,
            "record",
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            "50",
            "--output",
            str(spy),
            "--",
            *argv,
        ]
    started = time.perf_counter()
    proc = subprocess.Popen(  # run from the tree: `-m` puts the current directory first
        argv,
        env=env,
        cwd=env.get("PYTHONPATH") or None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stamps: list[float] = []
    cpu: list[float] = []
    errors: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "feed polled" in line:
                stamps.append(time.perf_counter() - started)
                cpu.append(tree_cpu(proc.pid))
            elif " ERROR " in line or "Traceback" in line:
                errors.append(line.rstrip())

    reader = threading.Thread(target=read)
    reader.start()
    proc.wait()
    reader.join()
    if proc.returncode or errors:
        print(f"  ! monitor poll exited {proc.returncode}: {errors[:3]}", flush=True)
    return time.perf_counter() - started, stamps, cpu


def rates(stamps: list[float], step: int = 100) -> list[tuple[int, float]]:
    """(feeds done, feeds a second over the last `step`), per `step` feeds."""
    out = []
    for end in range(step, len(stamps) + 1, step):
        start = stamps[end - step - 1] if end > step else stamps[0]
        count = step if end > step else step - 1
        out.append((end, count / max(stamps[end - 1] - start, 1e-9)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=300)
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--prefill", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--against", type=Path, default=None, help="another tree, alternated")
    ap.add_argument("--spy", type=Path, default=None, help="py-spy raw profile to this file")
    args = ap.parse_args()
    rng = random.Random(7)
    step = 100 if args.feeds < 1000 else args.feeds // 10
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "www"
        root.mkdir()
        for f in range(args.feeds):
            (root / f"feed{f}.xml").write_bytes(rss(items(rng, f, 0, args.items)))
        server, port = start_server(root)
        feeds = [
            {"name": f"feed{f}", "url": f"http://127.0.0.1:{port}/feed{f}.xml"}
            for f in range(args.feeds)
        ]
        settings = {
            "http": {"concurrency": 16, "per_host": 16},
            "delivery": {"channel_interval": "1ms", "max_per_second": 100000},
        }
        cfg = write_config(Path(tmp) / "config", feeds, [US_CHINA], settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
        trees = {"this tree": str(Path(__file__).resolve().parents[1])}
        if args.against:
            trees["--against"] = str(args.against)
        bases = {}
        for label, tree in trees.items():  # each tree migrates its own copy
            base = Path(tmp) / f"base-{len(bases)}.db"
            subprocess.run(
                [sys.executable, "-m", "monitor", "--config", str(cfg), "db", "upgrade"],
                env={**env, "PYTHONPATH": tree, "MONITOR_DATABASE_URL": f"sqlite:///{base}"},
                cwd=tree or None,
                check=True,
                capture_output=True,
            )
            if args.prefill:
                prefill(base, args.prefill, random.Random(11))
            bases[label] = base
        print(
            f"{args.feeds} feeds x {args.items} items, {args.prefill:,} articles before, "
            "cold `monitor poll` processes"
        )
        for run in range(args.runs):
            for label, tree in trees.items():  # alternated, so both see the same drift
                db = Path(tmp) / f"run{run}.db"
                shutil.copy(bases[label], db)
                run_env = {**env, "PYTHONPATH": tree, "MONITOR_DATABASE_URL": f"sqlite:///{db}"}
                spy = args.spy if run == 0 and label == "this tree" else None
                total, stamps, cpu = poll(cfg, run_env, spy)
                if len(stamps) < step:
                    print(f"{label} run {run + 1}: only {len(stamps)} feeds polled")
                    continue
                table = rates(stamps, step)
                cells = "  ".join(f"{end:>5}: {rate:5.1f}" for end, rate in table)
                first, last = table[0][1], table[-1][1]
                per_cpu = rates(cpu, step)
                cpu_cells = "  ".join(f"{end:>5}: {rate:5.1f}" for end, rate in per_cpu)
                print(
                    f"{label:<10} run {run + 1}: {total:5.1f} s, first feed at {stamps[0]:4.1f} s\n"
                    f"    feeds a second to    {cells};  last/first {last / first:.2f}\n"
                    f"    feeds a CPU second   {cpu_cells};  last/first "
                    f"{per_cpu[-1][1] / per_cpu[0][1]:.2f}",
                    flush=True,
                )
                record(
                    "rate",
                    f"{args.feeds}x{args.items} {label} last/first {step}",
                    f"{last / first:.2f}",
                    ">= 0.8",
                )
        server.terminate()


if __name__ == "__main__":
    main()
