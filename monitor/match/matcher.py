"""The Matcher: which watchlists each article is really about, and why."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from spacy.language import Language

from monitor.config import Watchlist
from monitor.events import gist, gist_text
from monitor.heap import collector_paused
from monitor.match.evidence import short_form_counts, verdict_without_votes
from monitor.match.finds import Found, Role, Scan
from monitor.match.lessons import Lessons
from monitor.match.names import inside
from monitor.match.normal import fold, prepare, scan_text
from monitor.match.phrases import Phrases, Tables
from monitor.match.prefilter import Prefilter
from monitor.match.senses import MeaningLoader, context, described, read, senses_of
from monitor.match.snippet import quote, strength
from monitor.match.topics import needs_a_reading, topic_hits
from monitor.meaning import DEFAULT_MODEL, Meaning, load, locate
from monitor.models import (
    Entry,
    Hit,
    HitRule,
    Item,
    MatchHold,
    MatchResult,
    Strength,
    TermKind,
)

NerLoader = Callable[[], Language | None]


def default_meaning() -> Meaning:
    """The packaged meaning model, loaded on first use."""
    return load(locate(DEFAULT_MODEL))


@dataclass
class Verdict:
    """Everything known about one watchlist for one article, matched or not."""

    watchlist: Watchlist
    text: str  # the title, a blank line and the body: what hit offsets point into
    hits: list[Hit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reasons: dict[Hit, str] = field(default_factory=dict)  # what decided a hit, if not plain
    strength: Strength = Strength.MENTION
    matched: bool = False
    contexts: dict[str, str] = field(default_factory=dict)  # term -> its first hit's context
    held: MatchHold | None = None  # matched, but the desk's feedback holds it back
    held_why: str | None = None

    def result(self) -> MatchResult:
        snippet, highlights = quote(self.text, self.hits)
        return MatchResult(
            watchlist=self.watchlist.name,
            channel=self.watchlist.channel,
            hits=tuple(self.hits),
            snippet=snippet,
            highlights=highlights,
            strength=self.strength,
            evidence=(*self.reasons.values(), *self.notes),
            contexts=tuple(self.contexts.items()),
            held=self.held,
            held_why=self.held_why,
        )


def _abouts(watchlists: Sequence[Watchlist]) -> dict[tuple[int, str], str]:
    """(watchlist, term name) -> what the term is about, for the terms described only: most
    are not, and a missing one reads as None."""
    return {
        (wi, t.name): about
        for wi, wl in enumerate(watchlists)
        for terms in (wl.entities, wl.topics)
        for t in terms
        if (about := described(t)) is not None
    }


class Matcher:
    def __init__(
        self,
        watchlists: Sequence[Watchlist],
        nlp: Language,
        ner: NerLoader,
        *,
        prefilter: bool = True,  # False: every article through spaCy (to measure the scan)
        meaning: MeaningLoader = default_meaning,
        lessons: Lessons | None = None,
        tables: Tables | None = None,  # the phrases' tables, built from these watchlists
    ) -> None:
        with collector_paused():  # a million objects for 50,000 entities: heap.py
            self._build(watchlists, nlp, prefilter, tables)
        self._ner = ner
        self._meaning = meaning
        self.lessons = lessons or Lessons()  # the desk's feedback (feedback.lessons)

    def _build(
        self, watchlists: Sequence[Watchlist], nlp: Language, prefilter: bool, tables: Tables | None
    ) -> None:
        self.watchlists = list(watchlists)
        self._senses = senses_of(self.watchlists)
        self._abouts = _abouts(self.watchlists)
        prepare(nlp)
        self._phrases = Phrases(self.watchlists, nlp, tables)
        keys = self._phrases.keys if prefilter else None
        self._prefilter = Prefilter(keys, self._phrases.capital_keys)

    def tables(self) -> Tables:
        """The phrases' tables, for a matcher of the same watchlists to start from."""
        return self._phrases.tables()

    def match(
        self, entries: Sequence[Entry], feed: str | None = None
    ) -> list[tuple[Entry, list[MatchResult]]]:
        """For each entry, the watchlists it matches (entries matching none are left out)."""
        out = []
        entries = [e for e in entries if self._prefilter.may_match(scan_text(e.item))]
        for entry, verdicts in zip(
            entries, self._judge([e.item for e in entries], feed), strict=True
        ):
            results = [v.result() for v in verdicts if v.matched]
            if results:
                out.append((entry, results))
        return _with_gists(out)

    def explain(self, item: Item, feed: str | None = None) -> list[Verdict]:
        return self._judge([item], feed)[0]

    def _judge(self, items: Sequence[Item], feed: str | None) -> list[list[Verdict]]:
        active = [
            wi
            for wi, wl in enumerate(self.watchlists)
            if feed is None or wl.feeds is None or feed in wl.feeds
        ]
        scans = [self._phrases.scan(item, set(active)) for item in items]
        needy = [s for s in scans if self._needs_ner(s)]
        if needy:
            model = self._ner()
            if model is None:
                for scan in needy:
                    scan.ner = False
            else:
                for scan, ner_doc in zip(needy, model.pipe(s.text for s in needy), strict=True):
                    scan.ner = ner_doc
        return [[self._decide(scan, wi) for wi in active] for scan in scans]

    def _needs_ner(self, scan: Scan) -> bool:
        for wi, found in scan.found.items():
            wl = self.watchlists[wi]
            for f in found:
                if f.rule.kind == TermKind.TOPIC:
                    if needs_a_reading(scan, f):
                        return True
                    continue
                if f.rule.role != Role.SHORT or not wl.entities[f.rule.index].type:
                    continue
                mine = [
                    o
                    for o in found
                    if o.rule.kind == TermKind.ENTITY and o.rule.index == f.rule.index
                ]
                if inside(f, mine, (Role.NAME, Role.ALT, Role.EXCLUDE)):
                    continue
                if verdict_without_votes(scan, f, wl.entities[f.rule.index], wl) is None:
                    return True
        return False

    def _decide(self, scan: Scan, wi: int) -> Verdict:
        wl = self.watchlists[wi]
        verdict = Verdict(wl, scan.text)
        found = scan.found.get(wi, [])
        hits: list[tuple[Found, HitRule, str]] = []  # the find, its rule, what decided it
        groups: dict[tuple[TermKind, int], list[Found]] = defaultdict(list)
        for f in found:  # only the terms that hit: cost must not grow with the watchlist
            groups[(f.rule.kind, f.rule.index)].append(f)
        for (kind, index), mine in sorted(groups.items()):
            if kind == TermKind.TOPIC:
                hits += [
                    (f, HitRule.PHRASE, _variant(f))
                    for f in topic_hits(scan, wl.topics[index], mine, verdict.notes)
                ]
                continue
            entity = wl.entities[index]
            for f in mine:
                if f.rule.role in (Role.EXCLUDE, Role.CONTEXT):
                    continue
                if inside(f, mine, (Role.EXCLUDE,)):
                    verdict.notes.append(
                        f"{f.text!r} at {f.start} ignored: inside an excluded "
                        f"phrase of {entity.name!r}"
                    )
                    continue
                if f.rule.role in (Role.NAME, Role.ALT):
                    if _name_form_holds(scan, f):
                        rule = HitRule.NAME if f.rule.role == Role.NAME else HitRule.ALIAS
                        hits.append((f, rule, _variant(f)))
                elif not inside(f, mine, (Role.NAME, Role.ALT)):
                    why = short_form_counts(scan, f, entity, self.watchlists, verdict.notes)
                    if why is not None:
                        hits.append(
                            (
                                f,
                                HitRule.TITLE if f.rule.role == Role.TITLE else HitRule.SHORT_FORM,
                                why,
                            )
                        )
        hits = self._in_sense(scan, wi, hits, verdict.notes)
        for f, rule, why in sorted(hits, key=lambda h: (h[0].start, bool(h[0].rule.form))):
            hit = Hit(
                term=f.rule.term(self.watchlists),
                kind=f.rule.kind,
                rule=f"{rule} ({f.rule.form})" if f.rule.form else rule,
                text=f.text,
                field="title" if f.start < scan.title_len else "body",
                start=f.start,
                end=f.end,
            )
            if any(
                (h.term, h.start, h.end) == (hit.term, hit.start, hit.end) for h in verdict.hits
            ):
                continue  # one span found by two forms of one term: the plainer stands
            verdict.hits.append(hit)
            if why:
                verdict.reasons[hit] = why
        if not verdict.hits:
            return verdict
        verdict.strength = strength(verdict.hits, scan.lead_end)
        kinds = {h.kind for h in verdict.hits}
        missing = [k for k in wl.require if k not in kinds]
        if missing:
            verdict.notes.append(
                f"no match: the watchlist requires an {' and a '.join(missing)} hit as well"
            )
        elif Strength(wl.min_strength) is Strength.ABOUT and verdict.strength != Strength.ABOUT:
            verdict.notes.append(
                "no match: only a passing mention, and the watchlist wants articles about its terms"
            )
        else:
            verdict.matched = True
            self._learnt(scan, wi, hits, verdict)
        return verdict

    def _learnt(
        self, scan: Scan, wi: int, hits: list[tuple[Found, HitRule, str]], verdict: Verdict
    ) -> None:
        """Each term's first hit in its context, kept with the match (what a click on it
        teaches); and the match held back when every term's hit resembles one the desk
        marked Not relevant in this watchlist (lessons.py)."""
        firsts = _first_hits(hits, self.watchlists)
        verdict.contexts = {term: context(scan, f) for term, f in firsts.items()}
        abouts = {term: self._abouts.get((wi, term)) for term in verdict.contexts}
        notes, why = self.lessons.hold(
            self._meaning, self.watchlists[wi].name, verdict.contexts, abouts
        )
        verdict.notes += notes
        if why is not None:
            verdict.held, verdict.held_why = MatchHold.SUPPRESSED, why

    def _in_sense(
        self, scan: Scan, wi: int, hits: list[tuple[Found, HitRule, str]], notes: list[str]
    ) -> list[tuple[Found, HitRule, str]]:
        """The hits read in the sense their term is about; the others set aside, with why."""
        kept: list[tuple[Found, HitRule, str]] = []
        for (kind, index), mine in _by_term(hits).items():
            senses = self._senses.get((wi, kind, index))
            if senses is None:
                kept += mine
                continue
            mine.sort(key=lambda h: h[0].start)
            for h, reading in zip(
                mine, read(self._meaning(), senses, scan, [h[0] for h in mine]), strict=True
            ):
                if reading is not None:
                    notes.append(f"sense of {h[0].text!r} at {h[0].start}: {reading}")
                if reading is None or reading.kept:
                    kept.append(h)
        return kept


def _variant(f: Found) -> str:
    """How the text met the watchlist's words, where not as written."""
    if f.rule.form:
        return f"{f.text!r} for {f.rule.source!r}: {f.rule.form}"
    if fold(f.text) != fold(f.rule.source):
        return f"{f.text!r} for {f.rule.source!r}: the same words, folded and by lemma"
    return ""


def _name_form_holds(scan: Scan, f: Found) -> bool:
    """A name family name first counts only as a name is written: capitalised ("Kelly
    mark" is no Mark Kelly)."""
    if f.rule.form != "family name first":
        return True
    return all(w[:1].isupper() for w in f.text.split())


def _first_hits(
    hits: list[tuple[Found, HitRule, str]], watchlists: Sequence[Watchlist]
) -> dict[str, Found]:
    """Each term's first hit in the text."""
    firsts: dict[str, Found] = {}
    for f, _, _ in sorted(hits, key=lambda h: h[0].start):
        firsts.setdefault(f.rule.term(watchlists), f)
    return firsts


def _by_term(
    hits: list[tuple[Found, HitRule, str]],
) -> dict[tuple[TermKind, int], list[tuple[Found, HitRule, str]]]:
    """The hits of each term (its kind and place in the watchlist)."""
    by_term: dict[tuple[TermKind, int], list[tuple[Found, HitRule, str]]] = defaultdict(list)
    for h in hits:
        by_term[(h[0].rule.kind, h[0].rule.index)].append(h)
    return by_term


def _with_gists(
    out: list[tuple[Entry, list[MatchResult]]],
) -> list[tuple[Entry, list[MatchResult]]]:
    """Each posted result with its article's gist: its text, names and time, not its
    vector, which the store has read only where another story could join it (most
    alerting articles have none). A match held back by the desk's feedback gets no gist:
    it is no story another article could join (store.py keeps none)."""
    gists = {
        e.key: gist(e.item, gist_text(e.item)) for e, rs in out if any(r.held is None for r in rs)
    }
    return [
        (
            entry,
            [
                r
                if r.held is not None
                else replace(r, gist=replace(gists[entry.key], terms=frozenset(r.matched)))
                for r in results
            ],
        )
        for entry, results in out
    ]
