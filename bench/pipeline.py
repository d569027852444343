"""Times one `monitor poll` end to end over generated feeds served on 127.0.0.1, in one
process with its feed server and fake Slack (bench/poll.py runs the server apart).

Prints the cold cycle (every item new), the warm cycle (every feed answers 304),
and delivery to a fake Slack through slack-sdk, so regressions in any stage show.

    python bench/pipeline.py [--feeds 200] [--items 50]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import record  # noqa: E402
from monitor import config as config_mod  # noqa: E402
from monitor import cycle  # noqa: E402
from monitor.pipeline import run_feeds  # noqa: E402
from monitor.runtime.passes import PassPool  # noqa: E402
from monitor.service import build  # noqa: E402
from tests.conftest import US_CHINA, write_config  # noqa: E402
from tests.servers import FakeSlack, FeedServer, Route, rss  # noqa: E402

WORDS = (
    "the minister said talks would resume after a long pause in relations between both "
    "capitals officials trade security summit economy climate envoy visit"
).split()
TERMS = ["Qin Gang", "Wang Yi", "military dialogue", "fentanyl", "Tony Blinken"]


def article(rng: random.Random, feed: int, i: int) -> dict[str, object]:
    words = [rng.choice(WORDS) for _ in range(120)]
    if rng.random() < 0.05:
        words.insert(rng.randrange(len(words)), rng.choice(TERMS))
    return {
        "title": " ".join(words[:8]).capitalize(),
        "guid": f"{feed}-{i}",
        "link": f"https://news{feed}.example/{i}?utm_source=rss",
        "description": " ".join(words),
        "published": datetime.now(UTC) - timedelta(minutes=i),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=200)
    ap.add_argument("--items", type=int, default=50)
    args = ap.parse_args()
    rng = random.Random(7)
    feed_server, slack = FeedServer().start(), FakeSlack().start()
    with tempfile.TemporaryDirectory() as tmp:
        feeds = []
        for f in range(args.feeds):
            path = f"/feed{f}.xml"
            body = rss([article(rng, f, i) for i in range(args.items)])
            feed_server.routes[path] = Route(body, etag=f'"{f}"')
            feeds.append({"name": f"feed{f}", "url": feed_server.url(path)})
        # every alert on its own (no flood message) and unpaced: the figure is the cost of
        # our sends through slack-sdk, not Slack's one message a second a channel
        no_flood = {
            "delivery": {
                "flood_threshold": args.feeds * args.items,
                "channel_interval": "1ms",
                "max_per_second": 1e6,
            }
        }
        cfg_dir = write_config(Path(tmp) / "config", feeds, [US_CHINA], no_flood)
        os.environ.update(
            SLACK_BOT_TOKEN="xoxb-bench",
            SLACK_API_URL=slack.api_url,
            MONITOR_DATABASE_URL=f"sqlite:///{tmp}/bench.db",
        )
        cfg = config_mod.load(cfg_dir)
        service = build(cfg, pool=PassPool(cfg.settings.poll_processes, cfg))
        for ready in service.deps.pool.start():  # type: ignore[union-attr]
            # started before the timing, as a service that has run one big cycle
            ready.result()
        items = args.feeds * args.items

        started = time.perf_counter()
        cold = run_feeds(service.feeds, service.deps)
        cold_s = time.perf_counter() - started
        started = time.perf_counter()
        report = cycle.deliver(service, service.deliverer())
        deliver_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = run_feeds(service.deps.feeds.states(service.feeds), service.deps)
        warm_s = time.perf_counter() - started
        service.close()
    feed_server.stop()
    slack.stop()

    queued = sum(o.queued for o in cold)
    assert all(o.ok for o in cold + warm) and all(o.status == 304 for o in warm)
    print(f"feeds={args.feeds} items/feed={args.items} cores={os.cpu_count()}")
    print(
        f"cold cycle   {cold_s:7.2f} s  {args.feeds / cold_s:8.1f} feeds/s  "
        f"{items / cold_s:8.0f} items/s  ({queued} alerts queued)"
    )
    print(f"warm cycle   {warm_s:7.2f} s  {args.feeds / warm_s:8.1f} feeds/s  (all 304)")
    print(
        f"delivery     {deliver_s:7.2f} s  {report.sent / deliver_s:8.1f} alerts/s  "
        f"({report.sent} sent via slack-sdk to a local fake)"
    )
    print(f"warm/cold speed-up {cold_s / warm_s:.1f}x")
    record(
        "pipeline",
        f"{args.feeds}x{args.items} warm cycle vs cold",
        f"{cold_s / warm_s:.1f}x faster",
    )


if __name__ == "__main__":
    main()
