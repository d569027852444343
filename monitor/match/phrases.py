"""Phrases: every term of every watchlist in one PhraseMatcher, keyed on each word's
normal form, so a pass costs about the same for ten terms as for ten thousand; and the
finds of one article."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spacy.attrs import ORTH
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc

from monitor.config import Topic, Watchlist
from monitor.match.normal import SENTENCE_END, scan_text, stem
from monitor.match.prefilter import key_of
from monitor.models import Item

# Roles that can make a match on their own; the others only weigh or veto one.
_PRIMARY = frozenset(("name", "alt", "short", "phrase", "all", "near_a", "near_b"))
_LEAD_CHARS = 300


@dataclass(frozen=True)
class Rule:
    wl: int
    kind: str  # "entity" or "topic"
    index: int  # the entity's or topic's position in its watchlist
    role: str  # name alt short exclude context | phrase all none near_a near_b
    group: int = -1  # the all_of group

    def term(self, watchlists: Sequence[Watchlist]) -> str:
        wl = watchlists[self.wl]
        return (wl.entities[self.index] if self.kind == "entity" else wl.topics[self.index]).name


@dataclass(frozen=True)
class Found:
    rule: Rule
    tok_start: int
    tok_end: int
    start: int
    end: int
    text: str


@dataclass
class Scan:
    item: Item
    text: str
    title_len: int
    lead_end: int
    doc: Doc
    found: dict[int, list[Found]]  # by watchlist
    ner: Any = None


class Phrases:
    """The rules of a set of watchlists, and where they stand in an article."""

    def __init__(self, watchlists: Sequence[Watchlist], nlp: Language) -> None:
        self._nlp = nlp
        self._normalised: set[int] = set()
        self._matcher = PhraseMatcher(nlp.vocab, attr="NORM")
        self._rules: dict[int, list[Rule]] = defaultdict(list)
        self.keys: set[str] = set()  # one per primary phrase, for the prefilter
        for wi, wl in enumerate(watchlists):
            for ei, entity in enumerate(wl.entities):
                self._add(entity.name, Rule(wi, "entity", ei, "name"))
                name_words = {stem(w) for w in self._words(entity.name)}
                for alias in entity.aliases:
                    words = [stem(w) for w in self._words(alias)]
                    short = len(words) == 1 or set(words) <= name_words
                    self._add(alias, Rule(wi, "entity", ei, "short" if short else "alt"))
                for phrase in entity.exclude:
                    self._add(phrase, Rule(wi, "entity", ei, "exclude"))
                for phrase in entity.context:
                    self._add(phrase, Rule(wi, "entity", ei, "context"))
            for ti, topic in enumerate(wl.topics):
                self._add_topic(wi, ti, topic)

    def _words(self, phrase: str) -> list[str]:
        return [t.text for t in self._nlp.make_doc(phrase) if not t.is_punct]

    def _add_topic(self, wi: int, ti: int, topic: Topic) -> None:
        for phrase in topic.phrases:
            self._add_variants(phrase, Rule(wi, "topic", ti, "phrase"))
        for gi, group in enumerate(topic.all_of):
            for phrase in group:
                self._add_variants(phrase, Rule(wi, "topic", ti, "all", gi))
        for phrase in topic.none_of:
            self._add_variants(phrase, Rule(wi, "topic", ti, "none"))
        if topic.near is not None:
            for phrase in topic.near.a:
                self._add_variants(phrase, Rule(wi, "topic", ti, "near_a"))
            for phrase in topic.near.b:
                self._add_variants(phrase, Rule(wi, "topic", ti, "near_b"))

    def _add_variants(self, phrase: str, rule: Rule) -> None:
        """Topic phrases also match their hyphen and spacing variants: "mil-to-mil",
        "mil to mil"; "cyber security", "cyber-security", "cybersecurity"."""
        words = phrase.replace("-", " ").split()
        variants = {phrase}
        if "-" in phrase or len(words) == 2:
            variants |= {" ".join(words), "-".join(words), "".join(words)}
        for variant in variants:
            self._add(variant, rule)

    def _add(self, phrase: str, rule: Rule) -> None:
        pattern = self._normalise(self._nlp.make_doc(phrase))
        name = "term:" + " ".join(t.norm_ for t in pattern)
        match_id = self._nlp.vocab.strings.add(name)
        if match_id not in self._rules:
            self._matcher.add(name, [pattern])
        if rule not in self._rules[match_id]:
            self._rules[match_id].append(rule)
        if rule.role in _PRIMARY:
            self.keys.add(key_of([t.norm_ for t in pattern]))

    def _normalise(self, doc: Doc) -> Doc:
        """Sets each new word's NORM to its stem, once per vocabulary entry."""
        seen = self._normalised
        vocab = self._nlp.vocab
        for orth in set(doc.to_array(ORTH).tolist()) - seen:
            seen.add(orth)
            lexeme = vocab[orth]
            lexeme.norm_ = stem(lexeme.lower_)
        return doc

    def scan(self, item: Item, wanted: set[int]) -> Scan:
        """The article's text and doc, and the finds of the watchlists in `wanted`."""
        title = item.title
        text = scan_text(item)
        doc = self._normalise(self._nlp.make_doc(text))
        found: dict[int, list[Found]] = defaultdict(list)
        for match_id, start, end in self._matcher(doc):
            first, last = doc[start], doc[end - 1]
            begin, finish = first.idx, last.idx + len(last.text)
            for rule in self._rules[match_id]:
                if rule.wl in wanted:
                    found[rule.wl].append(
                        Found(rule, start, end, begin, finish, text[begin:finish])
                    )
        body_start = len(title) + 2
        lead = SENTENCE_END.search(text, body_start + 1)
        lead_end = min(lead.end() if lead else len(text), body_start + _LEAD_CHARS)
        return Scan(item, text, len(title), lead_end, doc, found)
