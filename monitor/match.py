"""Match stage: finds watchlist terms in entries.

One PhraseMatcher holds every term of every watchlist, so the cost of a pass barely
grows with the number of terms. Canonical names and untyped aliases count wherever
they occur on token boundaries; an alias with a `type` (a short form such as a
surname) counts only with evidence: the canonical name elsewhere in the article, or
the English NER model labelling that very alias with the type. The model is asked
only about articles that need it.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spacy.language import Language
from spacy.matcher import PhraseMatcher

from monitor.config import Entity, Watchlist
from monitor.models import Entry, Hit, Item, MatchResult

log = logging.getLogger(__name__)

NerLoader = Callable[[], Language | None]
MAX_TEXT = 100_000
_SNIPPET = 300
_SENTENCE_END = re.compile(r"[.!?…](?=[\"'”’)\]]*\s)|\n")
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)


@dataclass(frozen=True)
class _Rule:
    watchlist: int
    term: str
    kind: str
    rule: str
    entity: Entity | None = None


@dataclass
class Verdict:
    """Everything known about one watchlist for one article, matched or not."""

    watchlist: Watchlist
    hits: list[Hit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Matcher:
    def __init__(self, watchlists: Sequence[Watchlist], nlp: Language, ner: NerLoader) -> None:
        self.watchlists = list(watchlists)
        self._nlp = nlp
        self._ner = ner
        self._phrases = PhraseMatcher(nlp.vocab, attr="LOWER")
        self._rules: dict[int, list[_Rule]] = defaultdict(list)
        for wi, wl in enumerate(self.watchlists):
            for entity in wl.entities:
                self._add(entity.name, _Rule(wi, entity.name, "entity", "name", entity))
                for alias in entity.aliases:
                    self._add(alias, _Rule(wi, entity.name, "entity", "alias", entity))
            for topic in wl.topics:
                for phrase in topic.phrases:
                    self._add(phrase, _Rule(wi, topic.name, "topic", "phrase"))

    def _add(self, phrase: str, rule: _Rule) -> None:
        key = "term:" + phrase.lower()
        match_id = self._nlp.vocab.strings.add(key)
        if match_id not in self._rules:
            self._phrases.add(key, [self._nlp.make_doc(phrase)])
        if rule not in self._rules[match_id]:
            self._rules[match_id].append(rule)

    def match(self, entries: Sequence[Entry]) -> list[tuple[Entry, list[MatchResult]]]:
        """For each entry, the watchlists it matches (entries matching none are left out)."""
        out = []
        for entry in entries:
            results = [_result(v, text) for v, text in self._evaluate(entry.item) if v.hits]
            if results:
                out.append((entry, results))
        return out

    def explain(self, item: Item) -> list[Verdict]:
        return [v for v, _ in self._evaluate(item)]

    def _evaluate(self, item: Item) -> list[tuple[Verdict, str]]:
        title = item.title
        text = f"{title}\n\n{item.body}"[:MAX_TEXT]
        doc = self._nlp.make_doc(text)
        verdicts = [Verdict(wl) for wl in self.watchlists]
        candidates: list[tuple[_Rule, Hit]] = []
        for match_id, start, end in self._phrases(doc):
            first, last = doc[start], doc[end - 1]
            begin, finish = first.idx, last.idx + len(last.text)
            for rule in self._rules[match_id]:
                candidates.append(
                    (
                        rule,
                        Hit(
                            term=rule.term,
                            kind=rule.kind,
                            rule=rule.rule,
                            text=text[begin:finish],
                            field="title" if begin < len(title) else "body",
                            start=begin,
                            end=finish,
                        ),
                    )
                )
        names = {(r.watchlist, r.term) for r, _ in candidates if r.rule == "name"}
        name_spans = [
            (r.watchlist, r.term, h.start, h.end) for r, h in candidates if r.rule == "name"
        ]
        ner_doc: Any = None
        for rule, hit in candidates:
            verdict = verdicts[rule.watchlist]
            if rule.rule == "alias":
                if any(
                    w == rule.watchlist and t == rule.term and s <= hit.start and hit.end <= e
                    for w, t, s, e in name_spans
                ):
                    continue  # part of the full name, already counted
                if rule.entity is not None and rule.entity.type:
                    if (rule.watchlist, rule.term) in names:
                        verdict.notes.append(
                            f"alias {hit.text!r} at {hit.start} accepted: "
                            f"the full name {rule.term!r} appears in the article"
                        )
                    else:
                        if ner_doc is None:
                            ner_doc = self._run_ner(text)
                        ok, why = _ner_supports(ner_doc, hit, rule.entity.type)
                        verdict.notes.append(
                            f"alias {hit.text!r} at {hit.start} "
                            f"{'accepted' if ok else 'rejected'}: {why}"
                        )
                        if not ok:
                            continue
            verdict.hits.append(hit)
        for verdict in verdicts:
            verdict.hits.sort(key=lambda h: h.start)
        return [(v, text) for v in verdicts]

    def _run_ner(self, text: str) -> Any:
        model = self._ner()
        return model(text) if model is not None else False


def _ner_supports(doc: Any, hit: Hit, label: str) -> tuple[bool, str]:
    if doc is False:
        return False, "no English model installed and the full name is absent"
    for ent in doc.ents:
        if ent.start_char <= hit.start and hit.end <= ent.end_char:
            span_text = _POSSESSIVE.sub("", ent.text.strip()).lower()
            if ent.label_ != label:
                return False, f"NER labels {ent.text!r} {ent.label_}, not {label}"
            if span_text != hit.text.lower():
                return False, f"NER sees the longer name {ent.text!r}"
            return True, f"NER labels {ent.text!r} {label}"
    return False, f"NER does not see a {label} there"


def _result(verdict: Verdict, text: str) -> MatchResult:
    anchor = next((h for h in verdict.hits if h.field == "body"), verdict.hits[0])
    start, end = _sentence_around(text, anchor.start, anchor.end)
    snippet = text[start:end]
    lead = len(snippet) - len(snippet.lstrip())
    highlights = tuple(
        (h.start - start - lead, h.end - start - lead)
        for h in verdict.hits
        if start <= h.start and h.end <= end
    )
    return MatchResult(
        watchlist=verdict.watchlist.name,
        channel=verdict.watchlist.channel,
        hits=tuple(verdict.hits),
        snippet=snippet.strip(),
        highlights=highlights,
        evidence=tuple(verdict.notes),
    )


def _sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence holding [start, end), trimmed to about _SNIPPET characters."""
    begin = max(0, start - _SNIPPET)
    for m in _SENTENCE_END.finditer(text, max(0, start - _SNIPPET), start):
        begin = m.end()
    stop = _SENTENCE_END.search(text, end)
    finish = stop.end() if stop else len(text)
    if finish - begin > _SNIPPET:
        begin = max(begin, start - _SNIPPET // 2)
        finish = min(finish, max(end, begin + _SNIPPET))
    return begin, finish
