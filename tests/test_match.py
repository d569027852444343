from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import spacy

from monitor.config import Watchlist
from monitor.dedupe import identify
from monitor.match import Matcher, scan_text, stem
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
    assert any("refers to 'Robin Li'" in note for note in verdict.notes)
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
    ["Critics said Li had failed the company.", "The market fell after Li spoke, analysts said."],
)
def test_a_person_read_by_ner_inside_a_sentence_is_not_yet_this_li(text: str) -> None:
    """NER reading PERSON on a capital inside a sentence resolves the word, not the
    bearer: a surname millions share needs evidence of this person."""
    li = person("Li Shangfu", aliases=["Li"], titles=["defence minister"], context=["PLA"])
    assert matched(text, ner_model, [watch(entities=[li])]) == []


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
    wls.append(  # the rules of issue 11: every way a word may meet its phrase
        watch(
            name="forms",
            entities=[
                person("Recep Erdogan"),
                person("Lars Løkke Rasmussen"),
                person("JD Vance"),
                person("Fumio Kishida"),
                person("Kim Jong Un"),
                person("Jens Stoltenberg"),
                {"name": "Alibaba", "aliases": ["阿里巴巴"]},
                {"name": "Viktor Orban", "aliases": ["Орбан"]},
                {"name": "Kaspersky", "aliases": ["Касперск*"]},
                person("Ali Khamenei", titles=["supreme leader"], context=["Iran"]),
            ],
            topics=[
                {"name": "hacking", "phrases": ["hack*"]},
                {"name": "embargo", "phrases": ["embargo", "went"]},
                {"name": "cyber", "phrases": ["cyberattack"]},
            ],
        )
    )
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
        "Erdoğan’s party",
        "ERDOĞAN SPEAKS",
        "Lars Lokke Rasmussen and Løkke",
        "J.D. Vance flies in",
        "Kishida Fumio visits",
        "Kim Jong-un fires",
        "On Monday, Stoltenberg spoke",
        "后两次均由阿里巴巴领投",
        "Зеленський зустрівся з Орбаном",
        "«Лаборатория Касперского» заработала",
        "Iran's supreme leader said",
        "Hackers struck; HACKING surged",
        "The goods were embargoed",
        "He went home",
        "A cyber-attack and a cyber attack",
        "Ｅｒｄｏｇａｎ in full width",
        "Erdo\u00adgan with a soft hyphen",
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


ACRONYMS = watch(
    name="acronyms",
    entities=[
        {"name": "Tovar Holding Industrial LLC", "aliases": ["THI"], "type": "ORG"},
        {"name": "World Health Organization", "aliases": ["WHO"]},
        {"name": "People's Liberation Army", "aliases": ["PLA"], "context": ["China"]},
        {"name": "National Security Agency", "aliases": ["NSA", "N.S.A."], "type": "ORG"},
        {"name": "Agency for International Development", "aliases": ["AID"]},
        {"name": "Etat Islamique", "aliases": ["ÉI"]},
        {"name": "Condoleezza Rice", "aliases": ["Rice"], "type": "PERSON"},
    ],
)


@pytest.mark.parametrize("model", ["none", "ner"])
def test_the_prefilter_passes_every_article_an_acronym_matches(model: str) -> None:
    """Short forms that count only after a capital (acronyms, capitalised aliases) are
    looked for only there: still every article the unfiltered matcher alerts on passes,
    whatever the form, case, accents, dots or place of the word."""
    ner: Callable[[], Any] = ner_model if model == "ner" else no_model
    nlp = spacy.blank("en")
    filtered = Matcher([ACRONYMS], nlp, ner)
    unfiltered = Matcher([ACRONYMS], nlp, ner, prefilter=False)
    texts = [
        ("THI SAYS PROFITS ROSE", "Shares of the group rose on Monday."),
        ("Profits rose", "THI said on Monday that profits rose."),
        ("Profits rose", "The T.H.I. board met. The T.H.I board met too."),
        ("Profits rose", "Investors in THI's bonds and THI’s loans, and THIs."),
        ("Profits rose", "A THI-backed fund and a fund, THI-led."),
        ("Profits rose", "This is what Tovar Holding Industrial LLC said. This rose."),
        ("Thi rose", "Thi and THIS and Thí and ThI, all of them."),
        ("Who warns", "The WHO said so; who knows. Who? «WHO» (WHO) W.H.O."),
        ("Virus spreads", "World Health Organization said so. Who knows."),
        ("Drills near Taiwan", "China said the PLA and the P.L.A. drilled; pla."),
        ("Leak", "The N.S.A. and the NSA’s staff; l'NSA, d’NSA; the nsa."),
        ("Aid cuts", "Congress cut AID's budget; aid workers left. AID-funded."),
        ("Aid cuts", "Agency for International Development: Aid is cut."),
        ("Guerre", "L'ÉI et l'EI, Éi et ei; ÉI-backed."),
        ("Rice prices", "Rice prices rose; Condoleezza Rice spoke. Rice said so."),
        ("Rice", "Secretary Rice met reporters; RICE, rice."),
        ("Nothing", "Nothing here but this, who, aid, pla, nsa and rice."),
    ]
    entries = [identify(item(body, title)) for title, body in texts]
    passed = {e.key for e in entries if filtered._prefilter.may_match(scan_text(e.item))}
    alerted = {e.key for e, _ in unfiltered.match(entries)}
    assert alerted <= passed
    assert {e.key for e, _ in filtered.match(entries)} == alerted
    assert len(alerted) >= 10  # the check compared real alerts


def test_a_common_word_under_an_acronym_costs_no_reading() -> None:
    """An acronym written as a common word in lower case ("THI" and "this", "WHO" and
    "who") never counts, so an article holding only the word skips the scan and NER."""
    calls: list[int] = []

    def ner() -> None:
        calls.append(1)
        return None

    matcher = Matcher([ACRONYMS], spacy.blank("en"), ner)
    trap = identify(item("So this is who said it: aid for the pla, and nsa staff.", "this week"))
    assert not matcher._prefilter.may_match(scan_text(trap.item))
    assert matcher.match([trap]) == []
    assert calls == []


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


# --- issue 11: names and words as newsrooms write them ------------------------------


def person(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "PERSON", **fields}


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("Recep Erdogan", "Recep Erdoğan spoke."),
        ("Recep Erdoğan", "Recep Erdogan spoke."),
        ("Sebastián Piñera", "Sebastian Pinera spoke."),
        ("Lars Lokke Rasmussen", "Lars Løkke Rasmussen spoke."),
        ("Maros Sefcovic", "Maroš Šefčovič spoke."),
        ("Recep Erdogan", "Recep\u00a0Erdo\u00adgan spoke."),
        ("Recep Erdogan", "Ｒｅｃｅｐ Ｅｒｄｏｇａｎ spoke."),
        ("Edward Snowden", "Suite aux révélations d’Edward Snowden, la NSA a réagi."),
        ("Qin Gang", "Qin Gang’s office said nothing."),
    ],
    ids=[
        "accent-in-text",
        "accent-in-watchlist",
        "tilde",
        "stroke",
        "caron",
        "nbsp-shy",
        "nfkc",
        "elision",
        "curly-apostrophe",
    ],
)
def test_letters_never_break_a_match(name: str, text: str) -> None:
    assert matched(text, watchlists=[watch(entities=[{"name": name}])]) == [name]


@pytest.mark.parametrize(
    "text",
    ["Løkken is a town.", "Erdoğanlar is a village.", "Stag O'Lee sang."],
    ids=["longer-word", "suffix", "apostrophe-name-stays-whole"],
)
def test_folded_letters_keep_word_boundaries(text: str) -> None:
    wl = watch(entities=[{"name": "Lokke"}, {"name": "Erdogan"}, {"name": "Lee"}])
    assert matched(text, watchlists=[wl]) == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("Fumio Kishida", "Kishida Fumio flew to Washington."),
        ("Lloyd Austin", "Lloyd J. Austin arrived in Manila."),
        ("Donald Trump", "“[Donald] Trump is deranged,” he said."),
        ("Recep Tayyip Erdogan", "Turkish officials said Tayyip Erdogan would travel."),
        ("Masoud Pezeshkian", "He humiliated President Massoud Pezeshkian."),
        ("Alexandria Ocasio-Cortez", "Alexandria Ocasio Cortez spoke."),
        ("Kim Jong Un", "Kim Jong-un fired a missile."),
        ("JD Vance", "J.D. Vance flew to India."),
        ("Robert F. Kennedy Jr.", "Health Secretary Robert F. Kennedy Jr claimed it."),
    ],
    ids=[
        "family-name-first",
        "middle-initial",
        "bracketed-given-name",
        "given-name-left-out",
        "spelt-another-way",
        "hyphen-as-space",
        "korean-hyphen",
        "initials",
        "suffix-dot",
    ],
)
def test_name_forms(name: str, text: str) -> None:
    assert matched(text, watchlists=[watch(entities=[person(name)])]) == [name]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("Fumio Kishida", "Kishida Hiroshi won the prize."),
        ("Mark Kelly", "The kelly mark on the hull."),
        ("Vladimir Putin", "Ilya Putin, a plumber, was fined."),
        ("Kim Jong Un", "The UN said the talks had failed."),
        ("Maryam Nawaz", "Maryam Rajavi leads the group."),
        ("Prabowo Subianto", "Prabowo Street was closed."),
    ],
    ids=[
        "other-given-name",
        "lower-case-reversed",
        "other-given-name-far",
        "acronym-is-no-name",
        "given-name-of-another",
        "given-name-without-title",
    ],
)
def test_name_form_traps(name: str, text: str) -> None:
    assert matched(text, watchlists=[watch(entities=[person(name)])]) == []


AUSTIN = person("Lloyd Austin", titles=["defense secretary"], context=["Pentagon"])


@pytest.mark.parametrize(
    ("entity", "text"),
    [
        (person("Rishi Sunak"), "Mr Sunak told MPs."),
        (person("Jens Stoltenberg"), "On Monday, Stoltenberg said the alliance was ready."),
        (AUSTIN, "Secretary Austin said the drills would go on."),
        (AUSTIN, "The Defense Secretary Austin said so."),
        (person("Prabowo Subianto"), "How will President Prabowo deal with dissent?"),
        (person("Olaf Scholz"), "The Scholz-Macron talks ended."),
        (person("Rishi Sunak"), "Anti-Sunak rebels gathered."),
        (person("Angela Merkel"), "A return to Merkel-era policy."),
        (
            person("Ali Khamenei", titles=["supreme leader"], context=["Iran"]),
            "Iran's supreme leader spoke.",
        ),
    ],
    ids=[
        "courtesy-title",
        "distinctive-surname",
        "head-of-declared-title",
        "declared-title",
        "title-and-given-name",
        "compound",
        "anti-compound",
        "era-compound",
        "declared-title-alone",
    ],
)
def test_short_forms_on_news_style_evidence(entity: dict[str, Any], text: str) -> None:
    assert matched(text, watchlists=[watch(entities=[entity])]) == [entity["name"]]


@pytest.mark.parametrize(
    ("entity", "text"),
    [
        (AUSTIN, "Floods hit Austin Powers fans."),
        (AUSTIN, "Austin, Texas, braced for storms."),
        (person("Condoleezza Rice"), "Global rice prices rose again."),
        (person("Condoleezza Rice"), "Rice prices rose again."),
        (person("Andrew Young"), "Neil Young played in Toronto."),
        (
            person("Andrew Young"),
            "Sarah Young, a nurse, was there. Later Ms Young said it was hard.",
        ),
        (person("Andrew Young"), "Ms Young said it was hard."),
        (person("Li Shangfu", aliases=["Li"], titles=["defence minister"]), "Premier Li spoke."),
        (person("Jim Jordan"), "Labour's Neil Duncan-Jordan said it."),
        (
            person("Li Shangfu", aliases=["Li"], titles=["defence minister"]),
            "Prime Minister Li spoke on Monday.",
        ),
        (
            person("Ali Khamenei", titles=["supreme leader"], context=["Iran"]),
            "Iran's former supreme leader spoke.",
        ),
        (
            person("Ali Khamenei", titles=["supreme leader"], context=["Iran"]),
            "The supreme leader of the club spoke.",
        ),
        (person("Mark Kelly", titles=["senator"]), "The senator said no."),
        (person("Jonas Gahr Store"), "The store opened."),
        (person("Kim Jong Un"), "Un chien conduit une voiture."),
        (
            person("Pam Bondi", titles=["attorney general"], context=["Justice Department"]),
            "The state's attorney general sued. The Justice Department was not involved.",
        ),
    ],
    ids=[
        "name-glued",
        "place",
        "lower-case-word",
        "sentence-initial-word",
        "another-young",
        "another-young-named-first",
        "very-common-surname-alone",
        "generic-title-common-surname",
        "double-barrelled",
        "another-office-with-the-declared-head",
        "former-holder",
        "title-without-own-context",
        "one-word-title-alone",
        "common-word",
        "two-letters-stand-not-alone",
        "title-alone-context-elsewhere",
    ],
)
def test_short_form_traps_stay_shut(entity: dict[str, Any], text: str) -> None:
    assert matched(text, watchlists=[watch(entities=[entity])]) == []


def test_the_prior_is_wordfreq_and_shows_in_the_evidence() -> None:
    matcher = Matcher([watch(entities=[person("Jens Stoltenberg")])], spacy.blank("en"), no_model)
    [verdict] = matcher.explain(item("On Monday, Stoltenberg said the alliance was ready."))
    assert verdict.matched and not verdict.notes
    [note] = verdict.reasons.values()
    assert "last name 'Stoltenberg'" in note and "written as a name (+1)" in note
    assert "'Stoltenberg' is rare (Zipf 2.2), needs +1" in note


def test_two_watched_people_with_one_surname_are_told_apart() -> None:
    wl = watch(
        entities=[
            person("Andrew Young", titles=["ambassador"], context=["United Nations", "Atlanta"]),
            person("Ashley Young", context=["Everton", "football"]),
        ]
    )
    assert matched("Ambassador Young spoke in Atlanta.", watchlists=[wl]) == ["Andrew Young"]
    assert matched(
        "On Saturday Young scored for Everton in the football league.", watchlists=[wl]
    ) == ["Ashley Young"]
    assert matched("Ashley Young scored. Young left early.", watchlists=[wl]) == ["Ashley Young"]
    assert matched("Reporters said Young was tired.", watchlists=[wl]) == []


def test_an_excluded_name_claims_no_bare_surname() -> None:
    wl = watch(
        entities=[person("Donald Trump", titles=["US president"], exclude=["Melania Trump"])]
    )
    assert matched("Melania Trump visited a school.", watchlists=[wl]) == []
    assert matched(
        "Melania Trump visited a school. Later President Trump spoke.", watchlists=[wl]
    ) == ["Donald Trump"]


TRUMPS = ["Eric Trump", "Melania Trump", "Trump Tower"]


@pytest.mark.parametrize(
    ("exclude", "text", "expected"),
    [
        (TRUMPS, "Officials said Trump would travel to Paris.", ["Donald Trump"]),
        ([], "Officials said Trump would travel to Paris.", []),
        (["Melania Trump"], "Officials said Trump would travel to Paris.", []),
        (TRUMPS, "Melania Trump spoke. Officials said Trump would travel.", []),
        (TRUMPS, "Trump suits beat every other suit in the game.", []),
        (TRUMPS, "Officials said he held a trump card.", []),
    ],
    ids=[
        "namesakes-listed",
        "none-listed",
        "one-listed",
        "a-namesake-in-the-article",
        "no-name-reading",
        "lower-case",
    ],
)
def test_namesakes_listed_in_exclude_settle_who_else_a_surname_could_be(
    exclude: list[str], text: str, expected: list[str]
) -> None:
    wl = watch(entities=[person("Donald Trump", exclude=exclude)])
    assert matched(text, ner_model, [wl]) == expected


@pytest.mark.xfail(
    strict=True,
    reason="known hole of the namesake vote (issue 11): a capitalised common sense of the"
    " surname, read by NER as an ORG, gets it too; found on a corpus page about tarot",
)
def test_namesakes_do_not_make_a_capitalised_common_word_a_name() -> None:
    wl = watch(entities=[person("Donald Trump", exclude=TRUMPS)])
    text = "The deck has 56 suit cards plus 21 Trump cards known as the Major Arcana."
    assert matched(text, ner_model, [wl]) == []


def test_one_excluded_namesake_says_nothing_of_the_other_lis() -> None:
    li = person("Li Shangfu", aliases=["Li"], exclude=["Li Qiang"])
    assert (
        matched("Critics said Li had failed the company.", ner_model, [watch(entities=[li])]) == []
    )


def test_an_entity_name_in_a_title_case_headline_counts_and_lower_case_does_not() -> None:
    wl = watch(entities=[person("Rishi Sunak")])
    assert matched("He spoke.", title="Sunak Says He Will Stay", watchlists=[wl]) == ["Rishi Sunak"]
    assert matched("The sunak fruit is sweet.", watchlists=[wl]) == []


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Why Rice, Not Beijing, Decides it", ["Condoleezza Rice"]),
        ("Why the Rice Talks Failed", []),
        ("War and Peace in the Age of Rice", []),
        ("Rice prices rise as harvest fails", []),
    ],
    ids=["sentence-case", "title-case", "title-case-minor-words", "headline-initial"],
)
def test_a_capital_inside_a_sentence_case_headline_marks_a_name(
    title: str, expected: list[str]
) -> None:
    """Title Case leaves only minor words in lower case; any other word in lower case
    ("it") makes the headline sentence case, where a capital inside it marks a name."""
    wl = watch(entities=[person("Condoleezza Rice")])
    assert matched("The story.", title=title, watchlists=[wl]) == expected


@pytest.mark.parametrize(
    ("phrase", "text"),
    [
        ("embargo", "The shipment was embargoed."),
        ("sanction", "Three firms were sanctioned."),
        ("sanction", "They are sanctioning banks."),
        ("cyberattack", "A cyber-attack hit the port."),
        ("cyberattack", "A cyber attack hit the port."),
        ("antitrust", "An anti-trust suit was filed."),
        ("ceasefire", "Hopes for a cease-fire grew."),
        ("hack*", "Hackers stole the data."),
        ("hack*", "Russian hacking was alleged."),
        ("hack*", "British-Airways-Hack: more customers hit."),
        ("data breach", "Data breaches rose."),
    ],
    ids=[
        "lemma-embargoed",
        "lemma-sanctioned",
        "lemma-sanctioning",
        "compound-hyphen",
        "compound-space",
        "anti-hyphen",
        "cease-fire",
        "prefix-agent",
        "prefix-verb",
        "prefix-in-compound",
        "plural",
    ],
)
def test_topics_in_every_form(phrase: str, text: str) -> None:
    assert matched(text, watchlists=[watch(topics=[{"name": "t", "phrases": [phrase]}])]) == ["t"]


@pytest.mark.parametrize(
    ("phrase", "text"),
    [
        ("hack*", "They slept in a shack."),
        ("hack*", "Paranormal investigators Tonya Hacker and Tammy Wilson spoke."),
        ("hack*", "The strikes are coming, said Jonathan Hackett, a veteran."),
        ("tariff", "The tar iff was sticky."),
        ("hack*", "The Hacker News thread grew."),
    ],
    ids=["inside-a-word", "surname", "surname-prefix", "no-false-split", "none-of"],
)
def test_topic_form_traps(phrase: str, text: str) -> None:
    topic = {"name": "t", "phrases": [phrase], "none_of": ["Hacker News"]}
    assert matched(text, watchlists=[watch(topics=[topic])]) == []


def test_a_capitalised_topic_inside_a_persons_name_is_no_hit() -> None:
    wl = watch(topics=[{"name": "Jordan", "phrases": ["Jordan"]}])
    assert matched("Floods hit Jordan on Monday.", ner_model, [wl]) == ["Jordan"]
    assert matched("The late great Michael Jordan scored again.", ner_model, [wl]) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Notes.\nStephen Hackett's fundraiser raised money.", []),
        ("Notes.\nHackers stole the data, officials said.", ["hacking"]),
        ("Officials said Hacking, not theft, was the cause.", ["hacking"]),
    ],
    ids=["a-persons-name-at-a-line-start", "the-word-at-a-line-start", "no-name-read-there"],
)
def test_a_lower_case_topic_read_as_part_of_a_persons_name_is_no_hit(
    text: str, expected: list[str]
) -> None:
    """Shape cannot tell a given name at a line's start from any first word, so the
    NER model reads it; only a person's name takes the find."""
    wl = watch(topics=[{"name": "hacking", "phrases": ["hack*"]}])
    assert matched(text, ner_model, [wl]) == expected


@pytest.mark.parametrize(
    "phrase",
    ["ha*", "h*ck", "hack *", "*", "two* words"],
    ids=["short", "inside", "spaced", "bare", "not-last"],
)
def test_a_bad_prefix_form_is_a_clear_error(phrase: str) -> None:
    with pytest.raises(ValueError, match="prefix form|may only end"):
        watch(topics=[{"name": "t", "phrases": [phrase]}])


def test_titles_and_context_take_no_prefix_form() -> None:
    with pytest.raises(ValueError, match="prefix forms"):
        watch(entities=[{"name": "X Y", "titles": ["minister*"]}])


@pytest.mark.parametrize(
    ("alias", "text"),
    [
        ("阿里巴巴", "后两次均由阿里巴巴领投"),
        ("野田佳彦", "「野田佳彦首相は財務省公認候補"),
        ("이재명", "이재명은 서울에서 말했다"),
        ("Орбан", "Зеленський може зустрітися з Орбаном"),
        ("Сноуден", "шутят об убийстве Сноудена"),
        ("Зеленский", "Встреча Зеленского и Путина"),
        ("Касперск*", "«Лаборатория Касперского» заработала"),
        ("طالبان", "افغان طالبان تک محدود"),
        ("Τσίπρας", "Ο Τσίπρας είπε ότι"),
    ],
    ids=[
        "chinese",
        "japanese",
        "korean-particle",
        "cyrillic-instrumental",
        "cyrillic-genitive",
        "cyrillic-adjectival",
        "cyrillic-prefix",
        "urdu",
        "greek",
    ],
)
def test_aliases_in_other_scripts(alias: str, text: str) -> None:
    wl = watch(entities=[{"name": "Watched Person", "aliases": [alias], "type": "PERSON"}])
    assert matched(text, watchlists=[wl]) == ["Watched Person"]


@pytest.mark.parametrize(
    ("alias", "text"),
    [
        ("阿里巴巴", "互联网巨头如阿里腾讯"),
        ("이재명", "김이재명은 말했다"),
        ("Орбан", "Орбанович пришёл"),
        ("АНБ", "АНБУ сообщил"),
        ("طالبان", "الطالبانية"),
        ("Τσίπρας", "Τσιπρασμός"),
    ],
    ids=[
        "chinese-shorter",
        "korean-inside-word",
        "cyrillic-too-long-ending",
        "cyrillic-acronym-takes-no-ending",
        "arabic-inside-word",
        "greek-inside-word",
    ],
)
def test_script_alias_traps(alias: str, text: str) -> None:
    wl = watch(entities=[{"name": "Watched Person", "aliases": [alias], "type": "PERSON"}])
    assert matched(text, watchlists=[wl]) == []


OTHER_LANGUAGES = """heise-2018-rss090.rdf golem-de-2017-iso8859-1.xml wdr-duesseldorf-2015.atom
    allgemeine-zeitung-polizei-2015-iso8859-1.xml lemonde-une-2018.xml rue89-une-2013.xml
    numerama-2013.xml aktuality-sk-2021.xml bbc-urdu-2014.atom bbc-urdu-2018.xml
    voa-urdu-2014.xml geekpark-cn-2020.xml kc0011-cn-2020-gb2312.xml cbnews-jp-2011.xml
    fc2-blog-2011-gzip-body.rdf.gz xakep-ru-2013-cp1251.xml suspilne-news-ua-2023.xml
    hamakor-planet-he-2014.atom blogmania-tr-2011-cr-lineends.atom jn-pt-2018-iso8859-1.xml
    repubblica-home-2011.xml fz-se-2017.xml""".split()


@pytest.mark.corpus
def test_feeds_in_other_languages_are_matched_without_errors() -> None:
    """The real-world corpus feeds in German, French, Slovak, Urdu, Chinese, Japanese,
    Russian, Ukrainian, Hebrew, Turkish, Portuguese, Italian and Swedish, through the
    real-world desks' watchlists."""
    from tests.conftest import SHARED
    from tests.test_realworld_labelled import CORPUS, feed_items
    from tests.test_realworld_labelled import watchlists as desks

    if not CORPUS.is_dir():
        pytest.skip(f"no shared corpus at {SHARED}")
    matcher = Matcher(desks(), spacy.blank("en"), no_model)
    seen = matched_items = 0
    for name in OTHER_LANGUAGES:
        entries = [identify(i) for i in feed_items(name)]
        seen += len(entries)
        matched_items += len(matcher.match(entries))
    assert seen > 500 and matched_items > 30


def test_words_of_the_name_together_name_one_thing() -> None:
    """A short form of several words ("Revolutionary Guards") is specific, whatever the
    frequency of each word: one vote carries it."""
    irgc = {
        "name": "Islamic Revolutionary Guard Corps",
        "aliases": ["Revolutionary Guards"],
        "type": "ORG",
    }
    assert matched(
        "Power lies with the Revolutionary Guards now.", watchlists=[watch(entities=[irgc])]
    ) == [irgc["name"]]
    assert (
        matched("Revolutionary guards of the old order.", watchlists=[watch(entities=[irgc])]) == []
    )


# --- issue 20: credit the right person ------------------------------------------------

BLINKEN = person("Antony Blinken", aliases=["Blinken"], context=["State Department"])


@pytest.mark.parametrize(
    ("entity", "title", "text"),
    [
        (BLINKEN, "Antony J. Blinken meets Gulf ministers", "The talks ran late."),
        (BLINKEN, "Talks ran late", "On Monday Antony J. Blinken met Gulf ministers."),
        (person("Lloyd Austin"), "Lloyd J. Austin meets Gulf ministers", "The talks ran late."),
    ],
    ids=["alias-surname-headline", "alias-surname-body", "derived-surname"],
)
def test_a_middle_initial_counts_whether_or_not_the_surname_is_an_alias(
    entity: dict[str, Any], title: str, text: str
) -> None:
    assert matched(text, title=title, watchlists=[watch(entities=[entity])]) == [entity["name"]]


def test_another_given_name_with_an_initial_is_another_person() -> None:
    assert (
        matched("Alan J. Blinken, a dentist, said so.", watchlists=[watch(entities=[BLINKEN])])
        == []
    )


TRUMP = person(
    "Donald Trump",
    titles=["US president"],
    context=["White House", "Washington"],
    exclude=["Eric Trump", "Melania Trump"],
)


@pytest.mark.parametrize(
    ("entity", "title", "text"),
    [
        (
            TRUMP,
            "Trump threatens tariffs on Denmark",
            "The White House said so.\nRead More: Starmer Breaks With Trump Over Greenland\n",
        ),
        (
            TRUMP,
            "Aid cuts loom",
            "Officials said the Trump Administration would cut aid to Washington's allies.",
        ),
        (person("Jens Stoltenberg"), "Aid cuts loom", "Critics of the Stoltenberg Government met."),
    ],
    ids=["link-text", "administration", "government"],
)
def test_title_case_and_offices_make_no_other_name(
    entity: dict[str, Any], title: str, text: str
) -> None:
    """A run of Title Case words is no evidence that a capitalised neighbour forms
    another person's name, and an office named after its holder is no given name."""
    assert matched(text, ner_model, [watch(entities=[entity])], title=title) == [entity["name"]]


@pytest.mark.parametrize(
    "text",
    [
        "Photo by Anna Stoltenberg and Tom Smith\nOn Monday, Stoltenberg said it was ready.",
        "Critics of Anna Stoltenberg met. On Monday, Stoltenberg said it was ready.",
        "The Stoltenberg Foundation met. On Monday, Stoltenberg said it was ready.",
    ],
    ids=["a-line-of-names", "sentence-case", "not-an-office"],
)
def test_a_capitalised_neighbour_outside_title_case_still_claims_the_surname(text: str) -> None:
    """Capitalised words with no minor word among them are a line of names, not a
    headline; and a body that is no office makes another name."""
    assert matched(text, watchlists=[watch(entities=[person("Jens Stoltenberg")])]) == []


MODI = person(
    "Narendra Modi", titles=["Indian prime minister"], context=["India", "BJP", "New Delhi"]
)
XI = person("Xi Jinping", titles=["Chinese president"], context=["China", "Beijing"])


@pytest.mark.parametrize(
    ("entities", "title", "expected"),
    [
        ([MODI], "PM Modi-Xi Jinping informal summit in Wuhan", ["Narendra Modi"]),
        ([MODI, XI], "Xi Jinping-Modi summit ends in Wuhan", ["Xi Jinping", "Narendra Modi"]),
        ([MODI, XI], "Labour's Neil Duncan-Modi said it", []),
        ([MODI, XI], "Labour's Neil Modi-Duncan said it", []),
    ],
    ids=["first-of-two-names", "second-of-two-names", "double-barrelled", "double-barrelled-first"],
)
@pytest.mark.parametrize("ner", [no_model, ner_model], ids=["shape", "ner"])
def test_a_hyphen_joining_two_names_hides_neither(
    entities: list[dict[str, Any]], title: str, expected: list[str], ner: Callable[[], Any]
) -> None:
    """A capital after a hyphenated pair belongs to its second half ("Xi Jinping"); one
    before it makes a double-barrelled surname of the pair unless a known full name ends
    at the hyphen. Modi's desk does not watch Xi."""
    wl = watch(entities=entities)
    assert matched("Leaders met on Saturday.", ner, [wl], title=title) == expected


@pytest.mark.parametrize(
    ("text", "snippet"),
    [
        (
            "Talks first. Officials said the U.S. and Iran will meet in Geneva. Other news.",
            "Officials said the U.S. and Iran will meet in Geneva.",
        ),
        (
            "Talks first. Iran will meet in Geneva as the U.S. and Israel watch. Other news.",
            "Iran will meet in Geneva as the U.S. and Israel watch.",
        ),
        (
            "Talks first. Dr. Ali Vaez said on Jan. 5 that Iran would come. Other news.",
            "Dr. Ali Vaez said on Jan. 5 that Iran would come.",
        ),
        (
            "Talks first. He flew home to the U.S. The Iran talks resumed. Other news.",
            "The Iran talks resumed.",
        ),
        (
            "Talks first. Aid went to Iran. Mr Vaez said so. Other news.",
            "Aid went to Iran.",
        ),
    ],
    ids=["initials-before", "initials-after", "titles-and-months", "opener-ends", "plain-end"],
)
def test_a_snippet_is_not_cut_at_an_abbreviation(text: str, snippet: str) -> None:
    """A full stop after initials or a month ends a sentence only before a sentence
    opener ("The", "It"); after a title (Mr., Dr., Gen.) never."""
    wl = watch(topics=[{"name": "Iran", "phrases": ["Iran"]}])
    [(_, [result])] = Matcher([wl], spacy.blank("en"), no_model).match([identify(item(text))])
    assert result.snippet == snippet


RAHMAN = person("Tarique Rahman", context=["Bangladesh", "BNP", "Dhaka"])


def hit_texts(text: str, entity: dict[str, Any]) -> list[str]:
    matcher = Matcher([watch(entities=[entity])], spacy.blank("en"), no_model)
    return [h.text for _, results in matcher.match([identify(item(text))]) for h in results[0].hits]


@pytest.mark.parametrize(
    ("entity", "text", "hits"),
    [
        (
            RAHMAN,
            "Tarique Rahman returned to Dhaka. His father Ziaur Rahman founded the BNP, "
            "and Shafiqur Rahman leads Jamaat. Mustafizur Rahman took three wickets.",
            ["Tarique Rahman"],
        ),
        (
            person("Donald Trump", titles=["US president"]),
            "Donald Trump spoke. Prime Minister Donald Tusk replied.",
            ["Donald Trump"],
        ),
        (
            RAHMAN,
            "Tarique Rahman returned to Dhaka. Rahman said he would run.",
            ["Tarique Rahman", "Rahman"],
        ),
        (
            person("Donald Trump", titles=["US president"]),
            "Donald Trump spoke. Prime Minister Donald Tusk met President Trump.",
            ["Donald Trump", "Trump"],
        ),
        (RAHMAN, "Tarique Rahman returned. Mr Rahman said so.", ["Tarique Rahman", "Rahman"]),
        (
            RAHMAN,
            "Tarique Rahman returned. Yesterday Rahman said so.",
            ["Tarique Rahman", "Rahman"],
        ),
        (
            RAHMAN,
            "Tarique Rahman returned. Then BNP Rahman and Dhaka Rahman",
            ["Tarique Rahman", "Rahman", "Rahman"],
        ),
    ],
    ids=[
        "other-given-names",
        "other-surname",
        "bare-surname-counts",
        "president-counts",
        "courtesy-title-counts",
        "sentence-opener-counts",
        "own-words-count",
    ],
)
def test_each_mention_is_credited_to_its_own_person(
    entity: dict[str, Any], text: str, hits: list[str]
) -> None:
    """Another given name before the surname, or another surname after the given name,
    is another person, even once the entity is named in full."""
    assert hit_texts(text, entity) == hits


def test_the_phrase_table_finds_the_spans_spacys_phrasematcher_finds() -> None:
    """phrases.py looks phrases up in a table instead of spaCy's PhraseMatcher (a tenth of
    its memory): the same spans, in the same order, including a phrase that starts a
    longer one at the very end of the text, and phrases inside and across others."""
    from spacy.attrs import NORM
    from spacy.matcher import PhraseMatcher

    watch = Watchlist.model_validate(
        {
            "name": "w",
            "channel": "#w",
            "entities": [
                {"name": "Wang Yi", "aliases": ["Wang Yi Min", "Yi"], "type": "PERSON"},
                {"name": "Li Qiang", "aliases": ["Li"]},
            ],
            "topics": [{"name": "export", "phrases": ["export controls", "export", "hack*"]}],
        }
    )
    nlp = spacy.blank("en")
    phrases = Matcher([watch], nlp, no_model)._phrases
    texts = [
        "Talks with Wang Yi",
        "Wang Yi Min met Li Qiang, then Wang",
        "export controls on exports; export",
        "Hackers hacked the export controls of Wang Yi Min.",
        "Yi",
        "",
    ]
    docs = [phrases._normalise(nlp.make_doc(text)) for text in texts]  # hack* completed
    spacy_matcher = PhraseMatcher(nlp.vocab, attr="NORM")
    spacy_matcher.add("k", [list(ids) for ids in phrases._rules])
    for text, doc in zip(texts, docs, strict=True):
        ours = [(s, e) for s, e, _ in phrases._spans(doc.to_array(NORM).tolist())]
        assert ours == [(s, e) for _, s, e in spacy_matcher(doc)], text
    assert matched("Talks with Wang Yi", watchlists=[watch]) == ["Wang Yi"]
