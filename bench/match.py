"""Matcher throughput for watchlists of 10, 1,000 and 10,000 terms, NER off and on,
beside a naive matcher (one case-insensitive regex per term) on the same articles.

    python bench/match.py [--articles 2000]

Targets (issue 3): 10,000 terms cost at most 1.5x of 10 terms; at least 10x the naive
matcher's throughput at 1,000 terms.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spacy  # noqa: E402

from monitor.config import Watchlist  # noqa: E402
from monitor.dedupe import identify  # noqa: E402
from monitor.match import Matcher  # noqa: E402
from monitor.models import Entry, Item  # noqa: E402
from monitor.service import load_ner  # noqa: E402

COMMON = (
    "the a of to and in said on for with was that by he it as at from his her an were are "
    "which this be has have had not but after officials government minister talks week "
    "year new people city country state president told reporters meeting security trade "
    "economy military police court report market prices election party leader capital"
).split()
BASE_TERMS = [
    "Qin Gang",
    "Wang Yi",
    "Li Shangfu",
    "Antony Blinken",
    "military dialogue",
    "export controls",
    "fentanyl",
    "climate finance",
    "John Kerry",
    "Janet Yellen",
]


def word(rng: random.Random) -> str:
    return "".join(
        rng.choice("bcdfghjklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 3))
    )


def watchlist(size: int, rng: random.Random, typed: bool) -> Watchlist:
    entities: list[dict[str, Any]] = []
    topics: list[dict[str, Any]] = []
    for term in BASE_TERMS:
        if term[0].isupper():
            entities.append(
                {
                    "name": term,
                    "aliases": [term.split()[-1]] if typed else [],
                    "type": "PERSON" if typed else None,
                }
            )
        else:
            topics.append({"name": term})
    while len(entities) + len(topics) < size:
        if rng.random() < 0.5:
            first, last = word(rng).capitalize(), word(rng).capitalize()
            entities.append(
                {
                    "name": f"{first} {last}",
                    "aliases": [last] if typed else [],
                    "type": "PERSON" if typed else None,
                }
            )
        else:
            topics.append({"name": f"{word(rng)} {word(rng)} {len(topics)}"})
    return Watchlist.model_validate(
        {"name": f"w{size}", "channel": "#bench", "entities": entities, "topics": topics}
    )


def articles(n: int, rng: random.Random) -> list[Entry]:
    out = []
    for i in range(n):
        words = [rng.choice(COMMON) for _ in range(rng.randint(120, 220))]
        for _ in range(rng.randint(0, 2)):
            words.insert(rng.randrange(len(words)), rng.choice(BASE_TERMS))
        if rng.random() < 0.2:  # a bare surname: the short form needs evidence
            words.insert(rng.randrange(len(words)), rng.choice(["Blinken", "Kerry", "Qin"]))
        text = " ".join(words).capitalize() + "."
        out.append(
            identify(
                Item(
                    title=" ".join(words[:8]),
                    link=None,
                    guid=str(i),
                    summary=text,
                    content="",
                    published=None,
                )
            )
        )
    return out


def naive(terms: list[str], entries: list[Entry]) -> int:
    patterns = [re.compile(r"\b" + re.escape(t) + r"\b", re.IGNORECASE) for t in terms]
    hits = 0
    for e in entries:
        text = f"{e.item.title}\n\n{e.item.body}"
        hits += sum(1 for p in patterns if p.search(text))
    return hits


def terms_of(wl: Watchlist) -> list[str]:
    return (
        [e.name for e in wl.entities]
        + [a for e in wl.entities for a in e.aliases]
        + [p for t in wl.topics for p in t.phrases]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--articles", type=int, default=2000)
    args = ap.parse_args()
    rng = random.Random(11)
    entries = articles(args.articles, rng)
    blank = spacy.blank("en")
    tokens = sum(len(blank.make_doc(f"{e.item.title}\n\n{e.item.body}")) for e in entries)
    print(f"{len(entries)} articles, {tokens} tokens ({tokens // len(entries)} per article)")
    print(
        f"{'terms':>6} {'NER':>4} {'build s':>8} {'articles/s':>11} {'tokens/s':>10} {'alerts':>7}"
    )
    seconds: dict[tuple[int, bool], float] = {}
    for ner in (False, True):
        for size in (10, 1_000, 10_000):
            wl = watchlist(size, random.Random(size), typed=ner)
            started = time.perf_counter()
            # every article through spaCy: the scan whose cost must not grow with the terms
            matcher = Matcher(
                [wl], spacy.blank("en"), load_ner if ner else (lambda: None), prefilter=False
            )
            build = time.perf_counter() - started
            if ner:
                matcher.match(entries[:20])  # load the model outside the timing
            started = time.perf_counter()
            results = matcher.match(entries)
            took = time.perf_counter() - started
            seconds[(size, ner)] = took
            print(
                f"{size:>6} {'on' if ner else 'off':>4} {build:>8.2f} "
                f"{len(entries) / took:>11.0f} {tokens / took:>10.0f} {len(results):>7}"
            )
    for size in (10, 1_000, 10_000):
        quick = Matcher([watchlist(size, random.Random(size), typed=False)], blank, lambda: None)
        started = time.perf_counter()
        quick.match(entries)
        print(
            f"{size:>6}  off, with the prefilter (skips articles holding no term): "
            f"{len(entries) / (time.perf_counter() - started):.0f} articles/s"
        )
    print("naive: one compiled regex per term, IGNORECASE with \\b boundaries")
    naive_rate = {}
    for size in (10, 1_000, 10_000):
        terms = terms_of(watchlist(size, random.Random(size), typed=False))
        sample = entries if size <= 1_000 else entries[: max(50, len(entries) // 20)]
        started = time.perf_counter()
        naive(terms, sample)
        took = time.perf_counter() - started
        naive_rate[size] = len(sample) / took
        print(f"{size:>6}  naive  {naive_rate[size]:>11.0f} articles/s")
    ours_1k = args.articles / seconds[(1_000, False)]
    print(
        f"cost of 10,000 terms vs 10 terms, every article scanned: "
        f"{seconds[(10_000, False)] / seconds[(10, False)]:.2f}x "
        f"(NER off), {seconds[(10_000, True)] / seconds[(10, True)]:.2f}x (NER on); target <= 1.5x"
    )
    print(f"throughput vs naive at 1,000 terms: {ours_1k / naive_rate[1_000]:.1f}x; target >= 10x")
    print(
        f"throughput vs naive at 10,000 terms: "
        f"{args.articles / seconds[(10_000, False)] / naive_rate[10_000]:.1f}x"
    )


if __name__ == "__main__":
    main()
