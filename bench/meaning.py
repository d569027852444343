"""The cost of the meaning model (issue 20): matcher throughput at 1,000 terms with 0, 10
and 100 of them declaring senses (about/not_about), against the same watchlist read as it
was before the model (no senses, no gists); the cost of event grouping per alerting
article; and the model's load time and resident memory, in a process of its own.

    python bench/meaning.py [--articles 1000]

Figures are the best of three passes in CPU time of this process, the model's cache of
vectors emptied before each pass so every context and gist is read again. Target: with
every term declaring senses, at most 2x the cost per article of the matcher before.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import spacy  # noqa: E402

from bench.figures import record  # noqa: E402
from bench.match import articles, watchlist  # noqa: E402
from monitor.config import Watchlist  # noqa: E402
from monitor.events import earliest_event, gist, gist_text, reader  # noqa: E402
from monitor.match import Matcher  # noqa: E402
from monitor.match.matcher import default_meaning  # noqa: E402
from monitor.meaning import Meaning  # noqa: E402
from monitor.models import Entry  # noqa: E402

SENSES = {
    "about": "the diplomat and minister who leads the country's foreign policy",
    "not_about": ["an athlete or an entertainer with the same name", "a place or a company"],
}


def with_senses(wl: Watchlist, count: int) -> Watchlist:
    """The watchlist with its first `count` terms declaring senses."""
    data: dict[str, Any] = wl.model_dump(exclude_defaults=True)
    terms = [*data.get("entities", []), *data.get("topics", [])]
    for term in terms[:count]:
        term.update(SENSES)
    return Watchlist.model_validate(data)


class Before:
    """The meaning model as the matcher before issue 20 had it: none (nothing is read)."""

    def vectors(self, texts: list[str]) -> Any:
        return np.zeros((len(texts), 384), dtype=np.float32)


def best(matcher: Matcher, entries: list[Entry]) -> tuple[float, int]:
    times, alerts = [], 0
    for _ in range(3):
        default_meaning()._cache.clear()
        started = time.process_time()
        alerts = len(matcher.match(entries))
        times.append(time.process_time() - started)
    return min(times), alerts


def load_figures() -> tuple[float, float]:
    """Seconds to import and load the model, and the resident memory it adds (MB)."""
    code = (
        "import re, time\n"
        "status = lambda: open('/proc/self/status').read()\n"
        "def rss(): return int(re.search(r'VmRSS:\\s+(\\d+)', status())[1])\n"
        "import monitor.match.matcher as m\n"
        "before = rss(); t = time.perf_counter(); m.default_meaning()\n"
        "print(time.perf_counter() - t, (rss() - before) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, mb = out.stdout.split()
    return float(seconds), float(mb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--articles", type=int, default=1000)
    args = ap.parse_args()
    rng = random.Random(7)
    entries = articles(args.articles, rng)
    base = watchlist(1000, random.Random(11), typed=True, new_rules=False)
    nlp = spacy.blank("en")
    before = Matcher([base], nlp, lambda: None, meaning=lambda: Before())  # type: ignore[arg-type, return-value]
    base_s, alerts = best(before, entries)
    print(f"{args.articles} articles, 1,000 terms, {alerts} alerting")
    print(f"{'terms with senses':>18} {'articles/s':>11} {'cost vs before':>15}")
    print(f"{'before (no model)':>18} {args.articles / base_s:>11.0f} {1.0:>14.2f}x")
    ratio = 1.0
    for count in (0, 10, 100, 1000):
        m = Matcher([with_senses(base, count)], nlp, lambda: None)
        seconds, _ = best(m, entries)
        ratio = seconds / base_s
        print(f"{count:>18} {args.articles / seconds:>11.0f} {ratio:>14.2f}x")
    record("meaning", "cost per article, every term with senses", f"{ratio:.2f}x", "2x")

    model: Meaning = default_meaning()
    alerting = [e for e, _ in before.match(entries)][:200]
    model._cache.clear()
    started = time.process_time()
    texts = [gist_text(e.item) for e in alerting]
    vectors = reader(lambda: model)(texts)
    gists = [
        replace(gist(e.item, t), terms=frozenset({"Qin Gang"}), vector=v)
        for e, t, v in zip(alerting, texts, vectors, strict=True)
    ]
    read_s = (time.process_time() - started) / len(alerting)
    stories = [(str(i), g) for i, g in enumerate(gists)]
    started = time.process_time()
    for g in gists:
        earliest_event(g, stories)
    compare_s = (time.process_time() - started) / len(gists)
    print(
        f"event grouping per alerting article: {read_s * 1000:.1f} ms to read its gist, "
        f"{compare_s * 1000:.1f} ms to compare it with {len(stories)} recent stories"
    )
    seconds, mb = load_figures()
    print(f"meaning model: loaded in {seconds:.2f} s, {mb:.0f} MB resident, once per process tree")
    record("meaning", "model load", f"{seconds:.2f} s, {mb:.0f} MB")


if __name__ == "__main__":
    main()
