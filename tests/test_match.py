from __future__ import annotations

from collections.abc import Callable

import pytest
import spacy

from monitor.config import Watchlist
from monitor.dedupe import identify
from monitor.match import Matcher
from monitor.models import Item
from monitor.service import load_ner
from tests.conftest import US_CHINA

WATCH = Watchlist.model_validate(US_CHINA)
KERRY = Watchlist.model_validate(
    {
        "name": "climate",
        "channel": "#climate",
        "entities": [{"name": "John Kerry", "aliases": ["Kerry"], "type": "PERSON"}],
    }
)


def no_model() -> None:
    return None


def ner_model() -> object:
    model = load_ner()
    if model is None:
        pytest.skip("no English spaCy model installed")
    return model


def matched(
    text: str,
    ner: Callable[[], object] = no_model,
    watchlists: list[Watchlist] | None = None,
    title: str = "",
) -> list[str]:
    matcher = Matcher(watchlists or [WATCH], spacy.blank("en"), ner)  # type: ignore[arg-type]
    entry = identify(
        Item(title=title, link=None, guid="g", summary=text, content="", published=None)
    )
    return [term for _, results in matcher.match([entry]) for r in results for term in r.matched]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Talks with Wang Yi resumed.", ["Wang Yi"]),
        ("Grandmaster Wang Yilong won.", []),
        ("QIN GANG SACKED", ["Qin Gang"]),
        ("Qin Gang's fate is unclear.", ["Qin Gang"]),
        ("They restored military-to-military communication.", ["military dialogue"]),
        ("A Military Dialogue resumed.", ["military dialogue"]),
        ("Fentanyl seizures rose.", ["fentanyl"]),
        ("Tony Blinken flew in.", ["Antony Blinken"]),
        ("Li Qiang met Li Shangfu.", ["Li Shangfu"]),
        ("Premier Li spoke.", []),
        ("militarydialogue is not a phrase", []),
    ],
    ids=[
        "name",
        "longer-name",
        "shouting",
        "possessive",
        "hyphenated",
        "case",
        "topic-name",
        "untyped-alias",
        "surname-of-someone-else",
        "bare-surname",
        "no-token-boundary",
    ],
)
def test_phrase_matching(text: str, expected: list[str]) -> None:
    assert matched(text) == expected


def test_typed_alias_needs_the_full_name_without_a_model() -> None:
    assert matched("Qin was not seen at the summit.") == []
    assert matched("Foreign Minister Qin Gang vanished. Qin was last seen in June.") == ["Qin Gang"]


def test_alias_hits_show_in_snippet_and_evidence() -> None:
    matcher = Matcher([WATCH], spacy.blank("en"), no_model)
    item = Item(
        title="Where is Qin?",
        link=None,
        guid="g",
        published=None,
        content="",
        summary="Nothing new. Questions grew over Foreign Minister Qin Gang. Qin's "
        "absence continues. Unrelated sentence.",
    )
    [(_, [result])] = matcher.match([identify(item)])
    assert [h.rule for h in result.hits] == ["alias", "name", "alias"]
    assert result.snippet == "Questions grew over Foreign Minister Qin Gang."
    assert [result.snippet[s:e] for s, e in result.highlights] == ["Qin Gang"]
    assert any("full name 'Qin Gang' appears" in note for note in result.evidence)


def test_ner_accepts_an_alias_it_labels_with_the_type() -> None:
    assert matched("Kerry said the talks went well.", ner_model, [KERRY]) == ["John Kerry"]


def test_ner_rejects_a_longer_name_and_a_place() -> None:
    assert matched("Kerry Washington starred in the film.", ner_model, [KERRY]) == []
    matcher = Matcher([KERRY], spacy.blank("en"), ner_model)  # type: ignore[arg-type]
    verdict = matcher.explain(
        Item(
            title="",
            link=None,
            guid=None,
            published=None,
            content="",
            summary="Kerry Washington starred in the film.",
        )
    )[0]
    assert verdict.hits == []
    assert "longer name 'Kerry Washington'" in verdict.notes[0]


def test_model_runs_only_when_a_typed_alias_needs_it() -> None:
    calls = []

    def counting() -> None:
        calls.append(1)

    matched("Wang Yi and Qin Gang met. Qin smiled.", counting)
    matched("Nothing to see here.", counting)
    assert calls == []
    matched("Qin smiled.", counting)
    assert calls == [1]


def test_title_hits_are_marked() -> None:
    matcher = Matcher([WATCH], spacy.blank("en"), no_model)
    item = Item(
        title="Wang Yi in Jakarta",
        link=None,
        guid="g",
        published=None,
        content="",
        summary="The minister arrived.",
    )
    [(_, [result])] = matcher.match([identify(item)])
    assert [h.field for h in result.hits] == ["title"]
    assert result.snippet == "Wang Yi in Jakarta"
