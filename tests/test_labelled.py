"""Precision and recall of the matcher on a labelled set of short news articles."""

from __future__ import annotations

from pathlib import Path

import pytest
import spacy
import yaml

from monitor.config import Watchlist
from monitor.dedupe import identify
from monitor.match import Matcher
from monitor.models import Item
from monitor.service import load_ner

DATA = Path(__file__).parent / "data"


def watchlists() -> list[Watchlist]:
    return [
        Watchlist.model_validate({"name": p.stem, **yaml.safe_load(p.read_text())})
        for p in sorted((DATA / "watchlists").glob("*.yaml"))
    ]


def articles() -> list[dict[str, object]]:
    return list(yaml.safe_load((DATA / "labelled.yaml").read_text())["articles"])


def test_the_set_is_large_and_varied() -> None:
    arts = articles()
    names = {w.name for w in watchlists()}
    assert len(arts) >= 60
    assert len({a["id"] for a in arts}) == len(arts)
    for article in arts:
        assert set(article["expect"]) <= names, article["id"]  # type: ignore[arg-type]
    positives = sum(len(a["expect"]) for a in arts)  # type: ignore[arg-type, misc]
    assert positives >= 35 and sum(not a["expect"] for a in arts) >= 20


def test_precision_and_recall() -> None:
    if load_ner() is None:
        pytest.skip("the labelled set is judged with the English model installed")
    wls = watchlists()
    matcher = Matcher(wls, spacy.blank("en"), load_ner)
    arts = articles()
    entries = [
        identify(
            Item(
                title=str(a["title"]),
                link=None,
                guid=str(a["id"]),
                summary=str(a["text"]),
                content="",
                published=None,
            )
        )
        for a in arts
    ]
    got = {entry.key: {r.watchlist for r in results} for entry, results in matcher.match(entries)}
    tp = fp = fn = 0
    errors = []
    for article, entry in zip(arts, entries, strict=True):
        expected = set(article["expect"])  # type: ignore[call-overload]
        actual = got.get(entry.key, set())
        tp += len(expected & actual)
        fp += len(actual - expected)
        fn += len(expected - actual)
        if actual != expected:
            errors.append(f"{article['id']}: expected {sorted(expected)}, got {sorted(actual)}")
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    report = f"P={precision:.3f} R={recall:.3f} (tp={tp} fp={fp} fn={fn})\n" + "\n".join(errors)
    print(report)
    assert precision >= 0.95, report
    assert recall >= 0.95, report
