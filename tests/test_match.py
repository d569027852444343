from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import spacy

from monitor.config import Watchlist
from monitor.dedupe import identify
from monitor.match import Matcher, stem
from monitor.models import Item
from monitor.service import load_ner
from tests.conftest import US_CHINA

WATCH = Watchlist.model_validate(US_CHINA)
KERRY = Watchlist.model_validate(
    {
        "name": "climate",
        "channel": "#climate",
        "entities": [
            {
                "name": "John Kerry",
                "aliases": ["Kerry"],
                "type": "PERSON",
                "context": ["climate", "envoy", "emissions"],
            }
        ],
    }
)


def no_model() -> None:
    return None


def ner_model() -> Any:
    model = load_ner()
    if model is None:
        pytest.skip("no English spaCy model installed")
    return model


def item(text: str, title: str = "") -> Item:
    return Item(title=title, link=None, guid=text[:40], summary=text, content="", published=None)


def matched(
    text: str,
    ner: Callable[[], Any] = no_model,
    watchlists: list[Watchlist] | None = None,
    title: str = "",
    feed: str | None = None,
) -> list[str]:
    matcher = Matcher(watchlists or [WATCH], spacy.blank("en"), ner)
    return [
        term
        for _, results in matcher.match([identify(item(text, title))], feed=feed)
        for r in results
        for term in r.matched
    ]


def watch(**fields: Any) -> Watchlist:
    return Watchlist.model_validate({"name": "w", "channel": "#w", **fields})


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("dialogues", "dialogue"),
        ("opioids", "opioid"),
        ("policies", "policy"),
        ("controls", "control"),
        ("news", "news"),
        ("US", "us"),
        ("glass", "glass"),
        ("virus", "virus"),
        ("Qin", "qin"),
    ],
)
def test_stem(word: str, expected: str) -> None:
    assert stem(word) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Talks with Wang Yi resumed.", ["Wang Yi"]),
        ("Grandmaster Wang Yilong won.", []),
        ("QIN GANG SACKED", ["Qin Gang"]),
        ("Qin Gang's fate is unclear.", ["Qin Gang"]),
        ("They restored military-to-military communication.", ["military dialogue"]),
        ("They restored military to military communication.", ["military dialogue"]),
        ("A Military Dialogue resumed.", ["military dialogue"]),
        ("Both sides held military dialogues.", ["military dialogue"]),
        ("Fentanyl seizures rose.", ["fentanyl"]),
        ("Tony Blinken flew in.", ["Antony Blinken"]),
        ("Li Qiang met Li Shangfu.", ["Li Shangfu"]),
        ("Premier Li spoke.", []),
        ("A paramilitary dialogue group formed.", []),
    ],
    ids=[
        "name",
        "longer-name",
        "shouting",
        "possessive",
        "hyphenated",
        "hyphen-as-space",
        "case",
        "plural",
        "topic-name",
        "full-alternative",
        "surname-of-someone-else",
        "bare-surname",
        "no-token-boundary",
    ],
)
def test_phrase_matching(text: str, expected: list[str]) -> None:
    assert matched(text) == expected


@pytest.mark.parametrize(
    ("phrase", "text"),
    [
        ("synthetic opioids", "Police found a synthetic opioid."),
        ("mil-to-mil", "They want mil to mil talks."),
        ("mil-to-mil", "They want miltomil talks."),
        ("cyber security", "A cybersecurity law passed."),
        ("cyber security", "A cyber-security law passed."),
    ],
)
def test_topic_forms(phrase: str, text: str) -> None:
    assert matched(text, watchlists=[watch(topics=[{"name": "t", "phrases": [phrase]}])]) == ["t"]


def test_short_form_after_the_full_name_counts() -> None:
    assert matched("Foreign Minister Qin Gang vanished. Qin was last seen in June.") == ["Qin Gang"]
    assert matched("Qin was not seen. Later, Qin Gang's office denied it.") == ["Qin Gang"]


def test_headline_short_form_with_the_name_in_the_body() -> None:
    assert matched(
        "Foreign Minister Qin Gang was last seen in June.", title="Qin's absence fuels speculation"
    ) == ["Qin Gang"]


def test_short_form_alone_is_not_enough_without_a_model() -> None:
    assert matched("Qin was not seen at the summit.") == []


def test_two_context_signals_carry_a_short_form_without_a_model() -> None:
    wl = watch(
        entities=[
            {
                "name": "Qin Gang",
                "aliases": ["Qin"],
                "type": "PERSON",
                "context": ["Beijing", "foreign minister"],
            }
        ]
    )
    assert matched("Beijing said Qin, the foreign minister, was ill.", watchlists=[wl]) == [
        "Qin Gang"
    ]
    # a capital inside a sentence is one piece of evidence: the word is written as a name
    assert matched("Beijing said Qin was ill.", watchlists=[wl]) == ["Qin Gang"]
    assert matched("Qin was ill, Beijing said.", watchlists=[wl]) == []


def test_untyped_uncontexted_short_form_counts_like_a_name() -> None:
    wl = watch(entities=[{"name": "Antony Blinken", "aliases": ["Blinken"]}])
    assert matched("Blinken spoke.", watchlists=[wl]) == ["Antony Blinken"]


def test_a_surname_after_another_full_name_refers_to_that_person() -> None:
    wl = watch(
        entities=[
            {
                "name": "Li Shangfu",
                "aliases": ["Li"],
                "type": "PERSON",
                "context": ["PLA", "Pentagon", "chips"],
            }
        ]
    )
    text = (
        "Baidu founder Robin Li spoke about chips. The Pentagon and the PLA watched. "
        "Li said China was catching up."
    )
    matcher = Matcher([wl], spacy.blank("en"), no_model)
    [verdict] = matcher.explain(item(text))
    assert not verdict.matched
    assert any("refers back to 'Robin Li'" in note for note in verdict.notes)
    assert matched(
        "Defence minister Li Shangfu spoke. Li said the PLA was ready.", watchlists=[wl]
    ) == ["Li Shangfu"]


def test_exclude_vetoes_the_short_form_and_the_name() -> None:
    wl = watch(entities=[{"name": "Qin Gang", "aliases": ["Qin"], "exclude": ["Qin dynasty"]}])
    assert matched("Relics of the Qin dynasty. Qin ruled harshly.", watchlists=[wl]) == ["Qin Gang"]
    assert matched("Relics of the Qin dynasty were found.", watchlists=[wl]) == []


def test_ner_and_context_accept_a_short_form() -> None:
    assert matched("Kerry said the climate talks went well.", ner_model, [KERRY]) == ["John Kerry"]


def test_ner_alone_is_one_piece_of_evidence_not_the_verdict() -> None:
    assert matched("Kerry said the talks went well.", ner_model, [KERRY]) == []


@pytest.mark.parametrize(
    "text",
    [
        "Kerry Washington starred in the film about climate.",
        "Storms hit County Kerry as climate scientists warned of more.",
        "Kerry Group cut emissions at its climate-friendly plants.",
    ],
    ids=["longer-name", "place", "company"],
)
def test_other_kerrys_do_not_alert_a_person_watch(text: str) -> None:
    assert matched(text, ner_model, [KERRY]) == []


def test_explain_gives_the_evidence() -> None:
    matcher = Matcher([KERRY], spacy.blank("en"), ner_model)
    [verdict] = matcher.explain(item("Kerry Washington starred in the film about climate."))
    assert verdict.hits == [] and not verdict.matched
    assert "NER sees the longer name 'Kerry Washington' (-2)" in verdict.notes[0]
    assert "glued to 'Washington'" in verdict.notes[0]


def test_model_is_asked_only_when_needed_and_in_one_batch() -> None:
    calls: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self.model = ner_model()

        def pipe(self, texts: Any) -> Any:
            texts = list(texts)
            calls.append(len(texts))
            return self.model.pipe(texts)

    counting = Counting()
    matcher = Matcher([KERRY], spacy.blank("en"), lambda: counting)  # type: ignore[arg-type, return-value]
    entries = [
        identify(item(t))
        for t in (
            "John Kerry arrived. Kerry spoke.",
            "Nothing to see here.",
            "Kerry spoke on climate.",
            "Later Kerry left the envoy post.",
        )
    ]
    matcher.match(entries)
    assert calls == [2]


def test_missing_model_is_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor import service

    monkeypatch.setattr(service, "_MODEL_PACKAGES", ("no_such_model_package",))
    service.load_ner.cache_clear()
    try:
        matcher = Matcher([KERRY], spacy.blank("en"), service.load_ner)
        with caplog.at_level(logging.WARNING, logger="monitor.service"):
            for text in (
                "Kerry spoke on climate.",
                "Kerry spoke on emissions.",
                "Kerry, the envoy, spoke on climate.",
            ):
                result = matcher.match([identify(item(text))])
        assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
        assert "no English spaCy model installed" in caplog.records[0].message
        assert [t for _, rs in result for r in rs for t in r.matched] == ["John Kerry"]
    finally:
        service.load_ner.cache_clear()


def test_all_of_none_of_and_near() -> None:
    wl = watch(
        topics=[
            {
                "name": "curbs",
                "all_of": [["export controls", "curbs"], ["chips"]],
                "none_of": ["potato chips"],
            },
            {"name": "methane", "near": {"a": ["methane"], "b": ["emissions"], "within": 3}},
        ]
    )
    assert matched("New export controls on chips.", watchlists=[wl]) == ["curbs"]
    assert matched("New export controls on steel.", watchlists=[wl]) == []
    assert matched("Curbs on potato chips and chips.", watchlists=[wl]) == []
    assert matched("Cutting methane emissions.", watchlists=[wl]) == ["methane"]
    assert matched("Methane is a gas; in other news, emissions rose.", watchlists=[wl]) == []


def test_watchlist_feeds_min_strength_and_require() -> None:
    wl = watch(entities=[{"name": "Wang Yi"}], topics=[{"name": "fentanyl"}], feeds=["asia"])
    assert matched("Wang Yi spoke.", watchlists=[wl], feed="asia") == ["Wang Yi"]
    assert matched("Wang Yi spoke.", watchlists=[wl], feed="sport") == []
    both = watch(
        entities=[{"name": "Wang Yi"}], topics=[{"name": "fentanyl"}], require=["entity", "topic"]
    )
    assert matched("Wang Yi spoke.", watchlists=[both]) == []
    assert matched("Wang Yi spoke about fentanyl.", watchlists=[both]) == ["Wang Yi", "fentanyl"]
    about = watch(entities=[{"name": "Wang Yi"}], min_strength="about")
    lead = "Officials met on Monday in Jakarta for the summit."
    filler = " Delegates discussed trade, shipping and the weather at length."
    assert matched(lead + filler + " Wang Yi attended briefly.", watchlists=[about]) == []
    assert matched(lead + filler, title="Wang Yi in Jakarta", watchlists=[about]) == ["Wang Yi"]


@pytest.mark.parametrize(
    ("title", "text", "strength"),
    [
        ("Wang Yi in Jakarta", "The minister arrived.", "about"),
        ("Summit opens", "Wang Yi arrived first. Others followed later.", "about"),
        (
            "Summit opens",
            "Leaders arrived. Wang Yi came late. Wang Yi spoke. Wang Yi left.",
            "about",
        ),
        ("Summit opens", "Leaders arrived on Monday. Among them, briefly, was Wang Yi.", "mention"),
    ],
    ids=["title", "lead", "repeated", "passing"],
)
def test_strength(title: str, text: str, strength: str) -> None:
    matcher = Matcher([WATCH], spacy.blank("en"), no_model)
    [(_, [result])] = matcher.match([identify(item(text, title))])
    assert result.strength == strength


def test_snippet_highlights_the_hits() -> None:
    matcher = Matcher([WATCH], spacy.blank("en"), no_model)
    text = (
        "Nothing new. Questions grew over Foreign Minister Qin Gang. Qin's absence "
        "continues. Unrelated sentence."
    )
    [(_, [result])] = matcher.match([identify(item(text, "Where is Qin?"))])
    assert [h.rule for h in result.hits] == ["short form", "name", "short form"]
    assert result.snippet == "Questions grew over Foreign Minister Qin Gang."
    assert [result.snippet[s:e] for s, e in result.highlights] == ["Qin Gang"]
    assert any("full name 'Qin Gang' appears" in note for note in result.evidence)


def test_the_prefilter_never_drops_an_article_the_matcher_would_take() -> None:
    """Articles the cheap filter passes over must be exactly those no watchlist matches:
    match() (filtered) against explain() (always scanned) over the labelled set and over
    inflected, hyphenated, glued and cased forms of every term."""
    from tests.test_labelled import articles, watchlists

    wls = [
        *watchlists(),
        watch(
            entities=[{"name": "Li Shangfu", "aliases": ["Li"]}, {"name": "U.S. Navy"}],
            topics=[
                {"name": "policy", "phrases": ["energy policy", "mil-to-mil", "day", "subsidy"]},
                {"name": "cyber", "phrases": ["cyber security"]},
            ],
        ),
    ]
    many = [f"{w}{n} summit" for n, w in enumerate(("boro", "bora", "bori", "kefa") * 100)]
    wls.append(watch(name="many", topics=[{"name": "many", "phrases": many}]))
    matcher = Matcher(wls, spacy.blank("en"), lambda: None)
    texts = [f"{a['title']}\n\n{a['text']}" for a in articles()] + [
        "The bora17 summits opened",
        "Kefa399 Summit, late",
        "bora17summit and boro4 summit",
        "Bor a17 summit",
        "Energy policies of the year",
        "New farm subsidies announced",
        "ENERGY POLICY shift",
        "New mil-to-mil and mil to mil talks",
        "Cybersecurity, cyber-security and cyber securities",
        "It took 10days, say officials",
        "The U.S. Navy's ships; US navies",
        "Li's remarks",
        "Lily and Lima, nothing else",
        "Nothing to see here at all",
    ]
    entries = [
        identify(item(text.split("\n\n", 1)[-1], text.split("\n\n", 1)[0])) for text in texts
    ]
    filtered = {
        e.key: sorted(r.watchlist for r in results) for e, results in matcher.match(entries)
    }
    for e in entries:
        scanned = sorted(v.watchlist.name for v in matcher.explain(e.item) if v.matched)
        assert filtered.get(e.key, []) == scanned, e.item.title
    assert len(filtered) >= 20  # the check compared real matches, not only empty lists


def test_a_stem_less_a_final_y_starts_its_word() -> None:
    """The prefilter's soundness rests on this: a phrase key is found in any word the
    matcher takes for it."""
    from tests.test_labelled import articles

    words = {w for a in articles() for w in f"{a['title']} {a['text']}".split()}
    words |= {"policies", "Policy", "days", "boxes", "buses", "species", "Yes", "ys", "flies"}
    for word in words:
        key = stem(word)
        key = key[:-1] if key.endswith("y") and len(key) > 1 else key
        assert word.lower().startswith(key), word
