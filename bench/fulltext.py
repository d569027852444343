"""Full text (issue 12): what reading the linked pages costs, and that feeds without it pay
nothing, in one run.

    python bench/fulltext.py [--feeds 20] [--items 50] [--plain-feeds 1000] [--baseline main]

- full text: FEEDS x ITEMS headline-only items, each linking to one of the 100 pages of
  ../shared/corpus/articles (real news pages, blogs, Wikipedia), every page fetched and
  extracted: new items per second, and the share of the cycle spent in extraction (CPU
  seconds summed over the pass workers, which report them in their FeedOutcomes, over
  the cycle's time x the worker processes);
  beside the same feeds with full_text off, and a warm cycle (all 304) with it on;
- not slowed: PLAIN_FEEDS x 50 generated items without full text (bench/poll.py's), a
  cold cycle and three warm ones (all 304), run on this tree and on BASELINE (a git ref,
  extracted with `git archive`), each in its own process with its own database, twice,
  in turn (the baseline first, then this tree first), so the machine's drift shows; wall
  time and CPU (of the process and its pass workers) both, since the machine is shared.

Everything is served on 127.0.0.1 by a separate process (bench/poll.py's server, with
ETags), so it shares no GIL with what is timed; all feeds and pages sit on that one
host, so the per-host limit is raised to the fetch concurrency (one server stands in for
many publishers, as in bench/poll.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import record  # noqa: E402
from bench.poll import items as generated_items  # noqa: E402
from bench.poll import start_server  # noqa: E402
from tests.conftest import US_CHINA, write_config  # noqa: E402
from tests.servers import rss  # noqa: E402

ARTICLES = ROOT.parent / "shared" / "corpus" / "articles"

# A cycle in a process of its own, on the `monitor` of whichever tree is first on
# sys.path; prints its figures as JSON. Only API that main has too.
_CYCLES = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from monitor import config as config_mod
from monitor.pipeline import run_feeds
from monitor.runtime.passes import PassPool
from monitor.service import build

os.environ["MONITOR_DATABASE_URL"] = sys.argv[3]
os.environ.pop("SLACK_BOT_TOKEN", None)
cfg = config_mod.load(Path(sys.argv[2]))
pool = PassPool(cfg.settings.poll_processes, cfg)
service = build(cfg, pool=pool)
for ready in pool.start():  # as `monitor run` does at start-up: not part of a cycle
    ready.result()
# CPU seconds of this process and its pass workers (its descendants: they need not be
# its children), from /proc (the machine is shared: wall time alone does not say what
# the cycle itself used)

def _stats():
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    out[int(entry.name)] = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                pass
    return out

def cpu(pids=None):
    stats = _stats()
    if pids is None:
        pids, grew = {os.getpid()}, True
        while grew:
            more = {p for p, f in stats.items() if int(f[1]) in pids} - pids
            pids, grew = pids | more, bool(more)
    tick = os.sysconf("SC_CLK_TCK")
    return sum((int(stats[p][11]) + int(stats[p][12])) / tick for p in pids if p in stats)

server = [int(sys.argv[5])]

figures = {"tree": __import__("monitor").__file__}
for name in sys.argv[4].split(","):
    started, used, served = time.perf_counter(), cpu(), cpu(server)
    outcomes = run_feeds(service.deps.feeds.states(service.feeds), service.deps)
    figures[name] = time.perf_counter() - started
    figures[name + "_cpu"] = cpu() - used
    figures[name + "_server_cpu"] = cpu(server) - served
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
    figures[name + "_new"] = sum(o.new_items for o in outcomes)
    pages = {}
    for o in outcomes:
        for kind, n in getattr(o, "pages", {}).items():
            pages[kind] = pages.get(kind, 0) + n
    figures[name + "_pages"] = pages
    figures[name + "_extract"] = sum(getattr(o, "extract_seconds", 0.0) for o in outcomes)
figures["processes"] = 1 + len(pool.start())
service.close()
print(json.dumps(figures))
"""


def cycles(tree: Path, cfg: Path, db: Path, names: str, server: int) -> dict[str, Any]:
    """The named cycles, one after another, in a process of their own on `tree`."""
    done = subprocess.run(
        [sys.executable, "-c", _CYCLES, str(tree), str(cfg), f"sqlite:///{db}", names, str(server)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"cycle on {tree} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def baseline_tree(ref: str, into: Path) -> Path | None:
    """`ref` of this repository, extracted (git archive): the code to compare with."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=False
    )
    if archive.returncode != 0:
        print(f"no baseline: git archive {ref}: {archive.stderr.decode().strip()}")
        return None
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=20)
    ap.add_argument("--items", type=int, default=50)
    ap.add_argument("--plain-feeds", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--baseline", default="main")
    args = ap.parse_args()
    if not ARTICLES.is_dir():
        raise SystemExit(f"no article corpus at {ARTICLES}")
    pages = sorted(p for p in ARTICLES.iterdir() if (p / "source.html").is_file())
    http = {"http": {"concurrency": args.concurrency, "per_host": args.concurrency}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        www = tmp / "www"
        (www / "pages").mkdir(parents=True)
        server, port = start_server(www)
        base = f"http://127.0.0.1:{port}"
        total = args.feeds * args.items
        for n in range(total):
            source = (pages[n % len(pages)] / "source.html").read_bytes()
            (www / "pages" / f"{n}.html").write_bytes(source)
        feeds = []
        for f in range(args.feeds):
            entries = [
                {"title": f"Story {n}", "guid": str(n), "link": f"{base}/pages/{n}.html"}
                for n in range(f * args.items, (f + 1) * args.items)
            ]
            (www / f"ft{f}.xml").write_bytes(rss(entries))
            feeds.append({"name": f"ft{f}", "url": f"{base}/ft{f}.xml"})
        on = write_config(tmp / "on", feeds, [US_CHINA], {**http, "full_text": True})
        off = write_config(tmp / "off", feeds, [US_CHINA], http)
        size = sum(p.stat().st_size for p in (www / "pages").iterdir())
        print(
            f"{args.feeds} feeds x {args.items} headline-only items linking to {total} pages "
            f"({size / 1e6:.0f} MB, the {len(pages)} corpus pages in turn), "
            f"{os.cpu_count()} cores, fetch concurrency {args.concurrency}"
        )
        for run in (1, 2):
            ft = cycles(ROOT, on, tmp / f"on{run}.db", "cold,warm", server.pid or 0)
            plain = cycles(ROOT, off, tmp / f"off{run}.db", "cold", server.pid or 0)
            print(
                f"run {run}: full_text true, cold: {ft['cold']:.2f} s, "
                f"{ft['cold_new'] / ft['cold']:.0f} new items/s, pages {ft['cold_pages']}; "
                f"CPU {ft['cold_cpu']:.1f} s ({ft['cold_cpu'] / ft['cold']:.2f} cores), "
                f"of it extraction {ft['cold_extract']:.1f} s "
                f"({ft['cold_extract'] / ft['cold_cpu']:.0%}, "
                f"{ft['cold_extract'] * 1000 / max(1, total):.1f} ms a page); "
                f"the page server's CPU {ft['cold_server_cpu']:.1f} s; "
                f"warm (all 304): {ft['warm']:.2f} s"
            )
            print(
                f"       full_text false, cold: {plain['cold']:.2f} s, "
                f"{plain['cold_new'] / plain['cold']:.0f} new items/s, "
                f"CPU {plain['cold_cpu']:.1f} s (full text costs "
                f"{ft['cold'] / plain['cold']:.0f}x the time, "
                f"{ft['cold_cpu'] / plain['cold_cpu']:.0f}x the CPU)"
            )
            record(
                "fulltext",
                f"run {run}: full_text true, share of CPU in extraction",
                f"{ft['cold_extract'] / ft['cold_cpu']:.0%}",
            )
            record(
                "fulltext",
                f"run {run}: full_text true vs false, time of a cold cycle",
                f"{ft['cold'] / plain['cold']:.0f}x",
            )

        rng = random.Random(5)
        plain_feeds = []
        for f in range(args.plain_feeds):
            (www / f"plain{f}.xml").write_bytes(rss(generated_items(rng, f, 0, 50)))
            plain_feeds.append({"name": f"plain{f}", "url": f"{base}/plain{f}.xml"})
        cfg = write_config(tmp / "plain", plain_feeds, [US_CHINA], http)
        tree = baseline_tree(args.baseline, tmp / "baseline") if args.plain_feeds else None
        if tree is not None:
            print(
                f"\n{args.plain_feeds} feeds x 50 generated items, full_text off: "
                f"this tree against {args.baseline}"
            )
            figures: dict[str, list[dict[str, Any]]] = {"this": [], args.baseline: []}
            order = [(args.baseline, tree), ("this", ROOT)]
            for run in (1, 2):
                for label, root in order if run == 1 else order[::-1]:  # either goes first
                    db = tmp / f"{label}-{run}.db"
                    got = cycles(root, cfg, db, "cold,warm1,warm2,warm3", server.pid or 0)
                    assert got["tree"].startswith(str(root)), got["tree"]
                    for what in ("", "_cpu"):  # the warm cycle is short: the median of three
                        got["warm" + what] = statistics.median(
                            got[f"warm{i}{what}"] for i in (1, 2, 3)
                        )
                    figures[label].append(got)
                    print(
                        f"run {run} {label:>6}: cold {got['cold']:.2f} s "
                        f"(CPU {got['cold_cpu']:.1f} s), warm {got['warm']:.2f} s "
                        f"(CPU {got['warm_cpu']:.2f} s)"
                    )
            for kind in ("cold", "warm", "cold_cpu", "warm_cpu"):
                ratios = [
                    this[kind] / then[kind]
                    for this, then in zip(figures["this"], figures[args.baseline], strict=True)
                ]
                what = "CPU" if kind.endswith("_cpu") else "time"
                shown = ", ".join(f"{r:.2f}x" for r in ratios)
                print(
                    f"{kind.split('_')[0]}: this tree takes {shown} the {what} of {args.baseline}"
                )
                record(
                    "fulltext",
                    f"feeds without full text, {kind}: this tree vs {args.baseline}",
                    shown,
                    "~1x",
                )
        server.terminate()


if __name__ == "__main__":
    main()
