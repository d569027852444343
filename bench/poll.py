"""Times `monitor poll` over N generated feeds served on 127.0.0.1, as whole processes
(the way cron runs it) and cycles inside one service, beside a naive peer and the parse
floor, in one run.

    python bench/poll.py [--feeds 300] [--items 40] [--entities 50000]

- cold: every item new (fetch, parse, dedupe, match, store, and for a process also
  start-up and delivery of every alert to the console);
- warm: nothing changed, every feed answers 304 to the conditional GET;
- 10% changed: one feed in ten has five new items;
- naive peer: a sequential script that refetches every feed with feedparser.parse(url),
  no conditional GET (so its warm run is its cold run), as simple bots do; as a whole
  process beside the `monitor poll` processes, in-process beside the in-process cycles;
- floor: feedparser.parse on the same bytes read from disk, no HTTP, timed just before
  and just after the cold cycle (the machine's speed drifts).

Targets (issue 13): a whole warm `monitor poll` process at most 0.2x the naive peer's
process; a whole cold one at most 2x the parse floor. In-process (issue 5): warm at
least 20x faster than the naive peer, cold within 1.5x of the floor. With --entities N
it also times start-up (to "service ready") and peak RSS of `monitor poll` with a
watchlist of N sanctions-style entities (names with aliases), warm and cold (twice: the
first cold poll builds the matcher's phrase tables and keeps them in the data directory,
the second reads them back, as cron's next poll does: match/stored.py), and the
matcher's construction alone (issue 13: 50,000 entities within 10 s and 1 GB).

The feed server runs in its own process so it shares no GIL with what is timed. All
feeds sit on one host here, so the per-host limit is raised to the fetch concurrency:
the bench stands one server in for many publishers. Console alerts are not paced here
(channel_interval 1ms): pacing is Slack's, and issue 13 item 3 takes it off the console.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import feedparser  # noqa: E402

from bench.figures import record  # noqa: E402
from monitor import config as config_mod  # noqa: E402
from monitor.pipeline import run_feeds  # noqa: E402
from monitor.runtime.passes import PassPool  # noqa: E402
from monitor.service import build  # noqa: E402
from tests.conftest import US_CHINA, write_config  # noqa: E402
from tests.peak import PEAK_KB  # noqa: E402
from tests.servers import rss  # noqa: E402

COMMON = (
    "the a of to and in said on for with was that by he it as at from his her an were are "
    "which this be has have had not but after"
).split()


def _vocabulary(size: int, rng: random.Random) -> list[str]:
    """Made-up words, so unrelated articles share few phrases, as real ones do."""
    return [
        "".join(
            rng.choice("bcdfghjklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))
        )
        for _ in range(size)
    ]


WORDS = _vocabulary(3000, random.Random(1))
TERMS = ["Qin Gang", "Wang Yi", "military dialogue", "fentanyl", "export controls"]
NAIVE = """import sys, feedparser
for url in open(sys.argv[1]).read().split():
    feedparser.parse(url)
"""


# what a file is served as, by its suffix (bench/fulltext.py serves article pages too)
_TYPES = {".html": "text/html"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def serve(root: str, port: Any) -> None:
    """A static server with ETag and If-None-Match, as a well-behaved publisher runs."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = Path(root) / self.path.lstrip("/")
            try:
                stat = path.stat()
            except OSError:
                self.send_error(404)
                return
            etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            kind = _TYPES.get(path.suffix, "application/rss+xml; charset=utf-8")
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body)

    httpd = _Server(("127.0.0.1", 0), Handler)
    port.value = httpd.server_address[1]
    httpd.serve_forever()


def start_server(root: Path) -> tuple[multiprocessing.Process, int]:
    """serve() in its own process, so it shares no GIL with what is timed; and its port."""
    port = multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=serve, args=(str(root), port), daemon=True)
    server.start()
    while not port.value:
        time.sleep(0.01)
    return server, port.value


def items(rng: random.Random, feed: int, start: int, count: int) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    out = []
    for i in range(start, start + count):
        words = [rng.choice(COMMON) if rng.random() < 0.4 else rng.choice(WORDS) for _ in range(60)]
        if rng.random() < 0.05:
            words.insert(rng.randrange(len(words)), rng.choice(TERMS))
        out.append(
            {
                "title": " ".join(words[:8]).capitalize(),
                "guid": f"{feed}-{i}",
                "link": f"https://news{feed}.example/{i}",
                "description": " ".join(words),
                "published": now - timedelta(minutes=i),
            }
        )
    return out


def change_tenth(root: Path, feeds: int, count: int, rng: random.Random) -> None:
    """Five new items at the top of every tenth feed."""
    for f in range(0, feeds, 10):
        path = root / f"feed{f}.xml"
        path.write_bytes(rss(items(rng, f, count, 5) + items(rng, f, 0, count)))


SANCTIONS_FILE = 10_000  # entities a watchlist file: config.py refuses files over 2 MB


def sanctions(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Watchlists shaped like a sanctions list: people with transliterated and reordered
    names, and companies with a shorter form and an acronym (a typed short form); split
    into files of SANCTIONS_FILE entities, all alerting one channel. The names end in a
    consonant, which no word of the articles does: like most of a real list, they are
    not in the day's news (the articles' own terms still alert)."""
    swaps = [("v", "w"), ("i", "y"), ("k", "c"), ("ou", "u"), ("e", "a")]
    endings = ["ov", "ev", "in", "ski", "enko", "ian", "ar", "ul"]

    def word() -> str:
        return (rng.choice(WORDS) + rng.choice(endings)).capitalize()

    def variant(name: str) -> str:
        a, b = rng.choice(swaps)
        return name.replace(a, b) if a in name else name + "a"

    entities: list[dict[str, Any]] = []
    names: set[str] = set()
    while len(entities) < n:
        if len(entities) % 10 < 7:
            given, family = word(), word()
            middle = [word()] if rng.random() < 0.4 else []
            name = " ".join([given, *middle, family])
            aliases = {variant(name), f"{family} {given}", f"{given[0]}. {family}"}
            entity = {"name": name, "aliases": sorted(aliases - {name}), "type": "PERSON"}
        else:
            stem = f"{word()} {word()}"
            name = f"{stem} {rng.choice(['Trading', 'Holding', 'Shipping', 'Industrial'])} LLC"
            acronym = "".join(w[0] for w in name.split()[:3]).upper()
            entity = {"name": name, "aliases": [stem, acronym], "type": "ORG"}
        if name.lower() not in names:
            names.add(name.lower())
            entities.append(entity)
    return [
        {
            "name": f"sanctions-{i // SANCTIONS_FILE + 1}",
            "channel": "#sanctions",
            "entities": entities[i : i + SANCTIONS_FILE],
        }
        for i in range(0, n, SANCTIONS_FILE)
    ]


@dataclass
class Run:
    total: float  # seconds, process start to exit
    ready: float | None  # seconds to the "service ready" log line
    matcher: float | None  # seconds to the first "matcher built" or "matcher shared" line
    alerts: int  # lines on stdout: one per console alert
    peak_rss_mb: float  # the largest resident set of any one process of its tree
    peak_total_mb: float  # the largest sum over its tree (workers are grandchildren)
    peak_pss_mb: float  # the largest sum of PSS over its tree: shared pages counted once
    code: int


def proc_tree(root: int) -> list[tuple[int, list[str]]]:
    """Each pid and its /proc/PID/stat fields (after the command name) of `root` and its
    descendants alive now: the pass workers are grandchildren, under the fork server."""
    stats: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                stats[int(entry.name)] = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
    tree, grown = {root}, True
    while grown:
        more = {pid for pid, fields in stats.items() if int(fields[1]) in tree} - tree
        tree |= more
        grown = bool(more)
    return [(pid, stats[pid]) for pid in tree if pid in stats]


def tree_rss(root: int) -> tuple[float, float, float]:
    """(largest, total) resident MB of `root` and its descendants now, and their total
    proportional set size (a page shared by n processes counts 1/n in each), from /proc."""
    page = os.sysconf("SC_PAGE_SIZE") / 2**20
    tree = proc_tree(root)
    sizes = [int(fields[21]) * page for _, fields in tree] or [0.0]
    return max(sizes), sum(sizes), sum(_pss_mb(pid) for pid, _ in tree)


def _pss_mb(pid: int) -> float:
    """A process's proportional set size in MB (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process(argv: list[str], env: dict[str, str]) -> Run:
    """Runs a whole process, timing it from outside as cron or systemd would."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ready: list[float] = []
    matcher: list[float] = []
    lines: list[int] = [0]
    errors: list[str] = []

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if not ready and "service ready" in line:
                ready.append(time.perf_counter() - started)
            if not matcher and ("matcher built" in line or "matcher shared" in line):
                matcher.append(time.perf_counter() - started)
            if " ERROR " in line or "Traceback" in line:
                errors.append(line.rstrip())

    def read_out() -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            lines[0] += 1

    peaks = [0.0, 0.0, 0.0]
    done = threading.Event()

    def sample() -> None:  # every quarter second: pass workers are not waited-for children
        while not done.wait(0.25):
            now = tree_rss(proc.pid)
            peaks[:] = [max(peak, value) for peak, value in zip(peaks, now, strict=True)]

    readers = [threading.Thread(target=f) for f in (read_err, read_out, sample)]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - started
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    if proc.returncode or errors:
        print(f"  ! {argv[-1]} exited {proc.returncode}: {errors[:3]}", flush=True)
    # ru_maxrss (KB) is exact for the process itself and any children it waited for
    largest = max(peaks[0], usage.ru_maxrss / 1024)
    return Run(
        total,
        ready[0] if ready else None,
        matcher[0] if matcher else None,
        lines[0],
        largest,
        peaks[1],
        peaks[2],
        proc.returncode,
    )


def monitor_poll(cfg: Path, env: dict[str, str]) -> Run:
    return process([sys.executable, "-m", "monitor", "--config", str(cfg), "poll"], env)


def timed(label: str, fn: Any) -> float:
    started = time.perf_counter()
    fn()
    took = time.perf_counter() - started
    print(f"{label:<44} {took:8.2f} s", flush=True)
    return took


def shown(label: str, run: Run) -> Run:
    ready = f"ready at {run.ready:5.2f} s, " if run.ready is not None else ""
    matcher = f"matcher at {run.matcher:5.2f} s, " if run.matcher is not None else ""
    print(
        f"{label:<44} {run.total:8.2f} s  ({ready}{matcher}{run.alerts} alerts, peak RSS "
        f"{run.peak_rss_mb:.0f} MB, all its processes {run.peak_total_mb:.0f} MB, "
        f"PSS {run.peak_pss_mb:.0f} MB)",
        flush=True,
    )
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=300)
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--entities", type=int, default=0, help="also time a watchlist this big")
    args = ap.parse_args()
    # as installed: bytecode for the package even under PYTHONDONTWRITEBYTECODE (make does too)
    compileall.compile_dir(Path(config_mod.__file__).parent, quiet=1)
    rng = random.Random(5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "www"
        root.mkdir()
        for f in range(args.feeds):
            (root / f"feed{f}.xml").write_bytes(rss(items(rng, f, 0, args.items)))
        bodies = [(root / f"feed{f}.xml").read_bytes() for f in range(args.feeds)]
        server, port = start_server(root)
        urls = [f"http://127.0.0.1:{port}/feed{f}.xml" for f in range(args.feeds)]
        (Path(tmp) / "urls.txt").write_text("\n".join(urls))
        feeds = [{"name": f"feed{f}", "url": u} for f, u in enumerate(urls)]
        settings = {
            "http": {"concurrency": args.concurrency, "per_host": args.concurrency},
            "delivery": {"channel_interval": "1ms", "max_per_second": 100000},
        }
        cfg = write_config(Path(tmp) / "config", feeds, [US_CHINA], settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
        env["MONITOR_DATABASE_URL"] = f"sqlite:///{tmp}/process.db"
        print(
            f"{args.feeds} feeds x {args.items} items, {os.cpu_count()} cores, "
            f"fetch concurrency {args.concurrency}"
        )

        def floor_parse() -> None:
            for body in bodies:
                feedparser.parse(body)

        print("-- whole processes, timed from outside (alerts to the console)")
        p_floor_before = timed("floor: feedparser.parse(bytes)", floor_parse)
        p_cold = shown("monitor poll process, cold (all new)", monitor_poll(cfg, env))
        p_floor_after = timed("floor again, just after", floor_parse)
        p_floor = (p_floor_before + p_floor_after) / 2
        p_warm = shown("monitor poll process, warm (all 304)", monitor_poll(cfg, env))
        p_naive = shown(
            "naive peer process (refetches everything)",
            process([sys.executable, "-c", NAIVE, str(Path(tmp) / "urls.txt")], env),
        )
        change_tenth(root, args.feeds, args.items, rng)
        p_changed = shown("monitor poll process, 10% changed", monitor_poll(cfg, env))
        if args.entities:  # while every feed still answers 304 to process.db's validators
            entity_scale(args.entities, Path(tmp), feeds, settings, env, rng)

        print("-- cycles inside one service (pass workers started once, as `monitor run`)")
        os.environ["MONITOR_DATABASE_URL"] = f"sqlite:///{tmp}/inprocess.db"
        os.environ.pop("SLACK_BOT_TOKEN", None)
        loaded = config_mod.load(cfg)
        service = build(loaded, pool=PassPool(loaded.settings.poll_processes, loaded))
        started = time.perf_counter()
        pool = service.deps.pool
        if pool is not None:
            for ready in pool.start():
                ready.result()
        startup = time.perf_counter() - started

        def cycle() -> None:
            outcomes = run_feeds(service.deps.feeds.states(service.feeds), service.deps)
            assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]

        print(f"(pass workers started in {startup:.1f} s, once per service)")
        floor_before = timed("floor: feedparser.parse(bytes)", floor_parse)
        cold = timed("cycle, cold (all new)", cycle)
        floor_after = timed("floor again, just after", floor_parse)
        floor = (floor_before + floor_after) / 2
        warm = timed("cycle, warm (all 304)", cycle)
        change_tenth(root, args.feeds, args.items + 5, rng)
        changed = timed("cycle, 10% changed", cycle)
        service.close()
        naive = timed(
            "naive peer in-process: feedparser.parse(url)",
            lambda: [feedparser.parse(u) for u in urls],
        )
        server.terminate()
    print("-- ratios")
    figures = [
        (
            "process, warm",
            f"{p_warm.total / p_naive.total:.2f}x the naive peer's process",
            "<= 0.2x",
        ),
        ("process, cold", f"{p_cold.total / p_floor:.2f}x the parse floor", "<= 2x"),
        ("process, 10% changed", f"{p_changed.total / p_naive.total:.2f}x the naive peer's", ""),
        ("in-process, warm", f"{naive / warm:.0f}x faster than the naive peer", ">= 20x"),
        ("in-process, cold", f"{cold / floor:.2f}x the parse floor", "<= 1.5x"),
        ("in-process, 10% changed", f"{naive / changed:.0f}x faster than the naive peer", ""),
    ]
    for figure, value, target in figures:
        print(f"{figure}: {value}" + (f" (target {target})" if target else ""))
        record("poll", f"{args.feeds}x{args.items} {figure}", value, target)
    digest = hashlib.sha256(b"".join(bodies)).hexdigest()[:8]
    print(f"(corpus {digest}: {sum(map(len, bodies)) / 1e6:.1f} MB)")


def entity_scale(
    n: int,
    tmp: Path,
    feeds: list[dict[str, Any]],
    settings: dict[str, Any],
    env: dict[str, str],
    rng: random.Random,
) -> None:
    """`monitor poll` with a watchlist of n entities: to "service ready", whole, peak RSS;
    then the matcher's construction alone, in a process of its own."""
    print(f"-- a watchlist of {n:,} entities (sanctions-style: names with aliases)")
    big = sanctions(n, rng)
    cfg = write_config(tmp / "big-config", feeds, [US_CHINA, *big], settings)
    size = sum(p.stat().st_size for p in (cfg / "watchlists").glob("sanctions-*.yaml"))
    aliases = sum(len(e["aliases"]) for wl in big for e in wl["entities"])
    print(f"({aliases:,} aliases, {size / 1e6:.1f} MB of YAML in {len(big)} files)")
    shutil.copy(tmp / "process.db", tmp / "polled.db")
    warm_env = {**env, "MONITOR_DATABASE_URL": f"sqlite:///{tmp}/polled.db"}
    shown("monitor poll process, warm (all 304)", monitor_poll(cfg, warm_env))
    cold_env = {**env, "MONITOR_DATABASE_URL": f"sqlite:///{tmp}/big-cold.db"}
    shown("monitor poll process, cold (all new)", monitor_poll(cfg, cold_env))
    # the same watchlists again, every item new again: the tables the first kept are read
    again_env = {**env, "MONITOR_DATABASE_URL": f"sqlite:///{tmp}/big-cold-again.db"}
    shown("  again, the matcher's tables kept", monitor_poll(cfg, again_env))
    started = time.perf_counter()
    built = subprocess.run(
        [sys.executable, "-c", BUILD, str(cfg)], env=env, capture_output=True, text=True
    )
    took = time.perf_counter() - started
    if built.returncode:
        print(f"  ! the matcher's build failed: {built.stderr[-500:]}")
        return
    load_s, loaded_mb, build_s, built_mb = map(float, built.stdout.split())
    print(
        f"{'a process: config loaded, then the matcher':<44} {took:8.2f} s  (load {load_s:.1f} s "
        f"to {loaded_mb:.0f} MB peak; build {build_s:.1f} s to {built_mb:.0f} MB peak: "
        f"{build_s / n * 1e3:.2f} ms and {(built_mb - loaded_mb) * 1024 / n:.1f} KB an entity)"
    )


# The matcher's construction alone, in a process of its own: time and peak RSS after the
# config is loaded, then after the matcher is built.
BUILD = (
    PEAK_KB
    + """
import sys, time
from pathlib import Path
from monitor import config
from monitor.service import matcher_for, meaning_for
def peak():
    return peak_kb() / 1024
started = time.perf_counter()
cfg = config.load(Path(sys.argv[1]))
watchlists = cfg.watchlists
loaded, load_peak = time.perf_counter(), peak()
matcher_for(watchlists, meaning_for(cfg))
print(loaded - started, load_peak, time.perf_counter() - loaded, peak())
"""
)


if __name__ == "__main__":
    main()
