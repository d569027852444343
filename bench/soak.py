"""A short soak of queue mode under faults (issue 25): two `monitor run --workers-mode
queue` workers on a private PostgreSQL (initdb in a temporary directory, a free port),
feeds gaining matching items steadily, while PostgreSQL is restarted
(`pg_ctl restart -m fast`), stopped for a while and started again, and Slack answers
500 to every post for a while.

    python bench/soak.py [--seconds 150] [--feeds 12] [--every 1.5]

Prints items published, delivered, lost, duplicated, p50/p90/p99/max latency from
publication to Slack, worker restarts (processes that exited and had to be started
again: target 0) and unhandled errors (tracebacks, unretrieved task exceptions, failed
commands in the workers' logs: target 0). Targets: none lost or doubled, p99 <= 60 s.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import record  # noqa: E402
from tests.conftest import write_config  # noqa: E402
from tests.pgcluster import PrivatePostgres, binaries  # noqa: E402
from tests.servers import FakeSlack, FeedServer, Reply, Route, rss  # noqa: E402

NAMES = [
    "Qin Gang",
    "Wang Yi",
    "Li Shangfu",
    "Antony Blinken",
    "Janet Yellen",
    "Gina Raimondo",
    "Lloyd Austin",
    "Jake Sullivan",
    "Xie Feng",
    "Nicholas Burns",
    "Katherine Tai",
    "Liu He",
]
UNHANDLED = re.compile(r"Traceback|Task exception was never retrieved|command failed")


def worker(cfg: Path, slack: FakeSlack, db: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-soak",
        "SLACK_API_URL": slack.api_url,
        "MONITOR_DATABASE_URL": db,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "monitor", "--config", str(cfg), "run"]
            + ["--workers-mode", "queue"],
            env=env,
            stdout=out,
            stderr=out,
        )


def faults(pg: PrivatePostgres, slack: FakeSlack, seconds: float, done: threading.Event) -> None:
    """The schedule, as fractions of the run: restart, Slack down, stop-start (longer
    than the pools' 30 s timeout at the default length), restart."""
    plan: list[tuple[float, str]] = [
        (0.10, "restart"),
        (0.25, "slack down"),
        (0.40, "slack up"),
        (0.50, "stop"),
        (0.78, "start"),
        (0.90, "restart"),
    ]
    started = time.monotonic()
    for at, what in plan:
        if done.wait(max(0.0, started + at * seconds - time.monotonic())):
            return
        print(f"  {time.monotonic() - started:5.1f}s  fault: {what}", flush=True)
        if what == "restart":
            pg.restart()
        elif what == "stop":
            pg.stop()
        elif what == "start":
            pg.start()
        elif what == "slack down":
            slack.down = Reply(status=500)
        else:
            slack.down = None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--feeds", type=int, default=12, choices=range(1, len(NAMES) + 1))
    parser.add_argument("--every", type=float, default=1.5, help="seconds between new items")
    args = parser.parse_args()
    found = binaries()
    if found is None:
        sys.exit("no PostgreSQL binaries under /usr/lib/postgresql")
    root = Path(tempfile.mkdtemp(prefix="monitor-soak-"))
    pg = PrivatePostgres(found).init()
    pg.start()
    feeds, slack = FeedServer(), FakeSlack()
    feeds.start()
    slack.start()
    names = NAMES[: args.feeds]
    slack.channels |= {f"desk-{i}" for i in range(len(names))}
    cfg = write_config(
        root / "config",
        [
            {"name": f"feed-{i}", "url": feeds.url(f"/f{i}.xml"), "interval": "2s"}
            for i in range(len(names))
        ],
        [
            {"name": f"desk-{i}", "channel": f"#desk-{i}", "entities": [{"name": name}]}
            for i, name in enumerate(names)
        ],
        settings={
            "delivery": {
                "channel_interval": "1s",
                "max_per_second": 20,
                "lease": "30s",
                "retry_base": "5s",
                "flood_threshold": 1000,
            },
            "queue": {"heartbeat": "2s", "stalled_after": "10s", "feed_lease": "1m"},
        },
    )
    for i in range(len(names)):
        feeds.routes[f"/f{i}.xml"] = Route(rss([]))
    logs = [root / f"worker{n}.log" for n in range(2)]
    procs = [worker(cfg, slack, pg.url, log) for log in logs]
    published: dict[str, float] = {}
    items: dict[int, list[dict[str, str]]] = {i: [] for i in range(len(names))}
    restarts = 0
    done = threading.Event()
    schedule = threading.Thread(target=faults, args=(pg, slack, args.seconds, done))
    try:
        time.sleep(8)  # the workers start, and find the feeds empty
        print(f"soak: {args.seconds:.0f}s, {len(names)} feeds, a new item every {args.every}s")
        schedule.start()
        started = time.monotonic()
        k = 0
        while time.monotonic() - started < args.seconds:
            i = random.randrange(len(names))
            title = f"{names[i]} story {k}"
            items[i].append({"title": title, "link": f"https://n.example/{k}", "guid": f"g{k}"})
            feeds.routes[f"/f{i}.xml"] = Route(rss(list(items[i][-20:])), etag=f'"{k}"')
            published[title] = time.time()
            k += 1
            for n, proc in enumerate(procs):
                if proc.poll() is not None:
                    restarts += 1
                    procs[n] = worker(cfg, slack, pg.url, logs[n])
            time.sleep(args.every)
        schedule.join()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with slack.lock:
                landed = {m["text"].split(" https")[0] for m in slack.messages}
            if set(published) <= landed:
                break
            time.sleep(0.5)
        time.sleep(3)  # room for a late duplicate
        restarts += sum(proc.poll() is not None for proc in procs)
    finally:
        done.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        feeds.stop()
        slack.stop()
        pg.destroy()
    with slack.lock:
        posts = Counter(m["text"].split(" https")[0] for m in slack.messages)
        first: dict[str, float] = {}
        for m in slack.messages:
            first.setdefault(m["text"].split(" https")[0], float(m["ts"]))
    latencies = [first[t] - at for t, at in published.items() if t in first]
    lost = sum(1 for t in published if t not in posts)
    doubled = sum(n - 1 for t, n in posts.items() if t in published and n > 1)
    text = "".join(log.read_text(errors="replace") for log in logs)
    unhandled = len(UNHANDLED.findall(text))
    figures: dict[str, Any] = {
        "items": len(published),
        "lost": lost,
        "duplicated": doubled,
        "p50": percentile(latencies, 0.50),
        "p90": percentile(latencies, 0.90),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies, default=0.0),
        "worker restarts": restarts,
        "unhandled errors": unhandled,
        "outages logged": text.count("database unreachable"),
        "recoveries logged": text.count("database back"),
        "queue workers resumed": text.count("queue worker resumed"),
    }
    for name, value in figures.items():
        shown = f"{value:.1f}s" if isinstance(value, float) else str(value)
        print(f"  {name:22} {shown}")
    record("soak", "lost+duplicated", str(lost + doubled), "0")
    record("soak", "p99 latency", f"{figures['p99']:.1f}s", "<= 60s")
    record("soak", "worker restarts", str(restarts), "0")
    record("soak", "unhandled errors", str(unhandled), "0")
    print(f"  logs in {root}")


if __name__ == "__main__":
    main()
