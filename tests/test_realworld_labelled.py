"""Precision and recall of the matcher on hand-labelled items from real feeds.

The judgements (tests/data/realworld/labelled.yaml) reference items in the shared corpus of
real feed documents; the watchlists are in tests/data/realworld/watchlists/. Each judgement is
one (item, watchlist) pair decided by hand; a trap (expect: false) that matches is a false
positive, a positive that does not is a false negative.
"""

from __future__ import annotations

import gzip
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import spacy
import yaml

from monitor.config import Watchlist
from monitor.dedupe import identify
from monitor.match import Matcher
from monitor.models import Fetched, Item
from monitor.parse import parse
from monitor.service import load_ner
from tests.conftest import SHARED

DATA = Path(__file__).parent / "data" / "realworld"
CORPUS = SHARED / "corpus" / "realworld"
# The figures reached so far: a change may raise them, never lower them. Issue 20's senses
# (the watchlists' about/not_about, written before any result was seen) took precision
# from 0.956 to 0.977 and cost recall 0.983 -> 0.973: the meaning model sets aside five
# true hits of sanctions, tariffs and Trump whose sentences it reads as another sense.
FLOOR = (0.975, 0.97)
CLASSES = ("plain", "letters", "name-forms", "short-forms", "topics", "scripts", "trap")

pytestmark = [pytest.mark.corpus, pytest.mark.slow]  # the whole labelled set, every watchlist

if not CORPUS.is_dir():
    pytest.skip(f"no shared corpus at {CORPUS}", allow_module_level=True)


def watchlists() -> list[Watchlist]:
    return [
        Watchlist.model_validate({"name": p.stem, **yaml.safe_load(p.read_text())})
        for p in sorted((DATA / "watchlists").glob("*.yaml"))
    ]


def judgements() -> list[dict[str, Any]]:
    return list(yaml.safe_load((DATA / "labelled.yaml").read_text(encoding="utf-8"))["judgements"])


@cache
def feed_items(name: str) -> tuple[Item, ...]:
    path = CORPUS / name
    body = path.read_bytes()
    if path.suffix == ".gz":
        body = gzip.decompress(body)
    return tuple(parse(Fetched(str(path), 200, body, {})).items)


def find(judgement: dict[str, Any]) -> Item | None:
    """The judged item: the first in its file whose guid, else link, else title is `item`."""
    for item in feed_items(judgement["file"]):
        if (item.guid or item.link or item.title) == judgement["item"]:
            return item
    return None


def test_the_set_is_large_and_varied() -> None:
    js = judgements()
    names = {w.name for w in watchlists()}
    assert 5 <= len(names) <= 8
    assert len(js) >= 450
    keys = [(j["file"], j["item"], j["watchlist"]) for j in js]
    assert len(set(keys)) == len(keys), "one judgement per (item, watchlist)"
    classes = Counter(j["class"] for j in js)
    assert set(classes) == set(CLASSES), classes
    assert classes["trap"] >= 80
    assert all((j["class"] == "trap") == (not j["expect"]) for j in js)
    for cls in ("letters", "short-forms", "topics"):
        assert classes[cls] >= 20, (cls, classes[cls])
    assert classes["name-forms"] >= 15 and classes["scripts"] >= 15, classes
    assert len({j["file"] for j in js}) >= 12
    for j in js:
        assert j["watchlist"] in names, j
        assert j["terms"] and j["why"].strip(), j
    missing = [f"{j['file']}: {j['item']}" for j in js if find(j) is None]
    assert not missing, "judged items not found in the corpus:\n" + "\n".join(missing)


def _ratio(a: int, b: int) -> float:
    return a / b if b else 1.0


@cache
def measured() -> tuple[float, float, str]:
    """Precision and recall over the whole set, and the report of them per class with
    every miss and false alarm."""
    js = judgements()
    matcher = Matcher(watchlists(), spacy.blank("en"), load_ner)
    entries = {}
    for j in js:
        item = find(j)
        assert item is not None, j
        entry = identify(item)
        entries.setdefault((j["file"], entry.key), entry)
    got: dict[tuple[str, str], set[str]] = defaultdict(set)
    by_file: dict[str, list[Any]] = defaultdict(list)
    for (name, _), entry in entries.items():
        by_file[name].append(entry)
    for name, file_entries in by_file.items():
        for entry, results in matcher.match(file_entries):
            got[(name, entry.key)] |= {r.watchlist for r in results}

    counts: dict[str, Counter[str]] = defaultdict(Counter)
    errors = []
    for j in js:
        matched = j["watchlist"] in got[(j["file"], identify(find(j)).key)]  # type: ignore[arg-type]
        outcome = {
            (True, True): "tp",
            (True, False): "fn",
            (False, True): "fp",
            (False, False): "tn",
        }[(j["expect"], matched)]
        for bucket in ("all", j["class"]):
            counts[bucket][outcome] += 1
        if outcome in ("fn", "fp"):
            miss = "missed" if outcome == "fn" else "false alarm"
            errors.append(
                f"{miss:11} {j['class']:11} {j['watchlist']:19} {'; '.join(j['terms'])}: "
                f"{j['title'][:60]!r} ({j['file']}) -- {j['why']}"
            )
    lines = []
    for bucket in ("all", *CLASSES):
        c = counts[bucket]
        p, r = _ratio(c["tp"], c["tp"] + c["fp"]), _ratio(c["tp"], c["tp"] + c["fn"])
        lines.append(
            f"{bucket:12} P={p:.3f} R={r:.3f} (tp={c['tp']} fp={c['fp']} fn={c['fn']} tn={c['tn']})"
        )
    c = counts["all"]
    precision = _ratio(c["tp"], c["tp"] + c["fp"])
    recall = _ratio(c["tp"], c["tp"] + c["fn"])
    return precision, recall, "\n".join(lines) + "\n" + "\n".join(sorted(errors))


def test_no_regression_from_the_figures_reached() -> None:
    precision, recall, report = measured()
    print(report)
    assert precision >= FLOOR[0] and recall >= FLOOR[1], report


@pytest.mark.xfail(
    strict=True,
    reason="issues 11 and 20: P 0.977 and R 0.973 against 0.99 and 0.98 (docs/matching.md); when both"
    " are met this passes, and strict xfail makes that fail until FLOOR and this mark are"
    " updated",
)
def test_precision_and_recall_meet_the_targets() -> None:
    precision, recall, report = measured()
    assert precision >= 0.99 and recall >= 0.98, report
