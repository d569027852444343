"""What the other files pass around: the rules built from the watchlists, each find of
one in an article, and the scan of one article."""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from spacy.tokens import Doc

from monitor.config import Watchlist
from monitor.models import Item, TermKind


class Role(StrEnum):
    """What part of its term a rule stands for: an entity's, then a topic's."""

    NAME = "name"
    ALT = "alt"
    SHORT = "short"
    TITLE = "title"
    EXCLUDE = "exclude"
    CONTEXT = "context"
    PHRASE = "phrase"
    ALL = "all"
    NONE = "none"
    NEAR_A = "near_a"
    NEAR_B = "near_b"


@dataclass(frozen=True, slots=True)  # about 350,000 of them for 50,000 entities
class Rule:
    wl: int
    kind: TermKind
    index: int  # the entity's or topic's position in its watchlist
    role: Role
    group: int = -1  # the all_of group
    form: str = ""  # how the watchlist's words were varied to meet the text ("" as written)
    source: str = ""  # the watchlist's own words the rule was made from

    def term(self, watchlists: Sequence[Watchlist]) -> str:
        wl = watchlists[self.wl]
        return (
            wl.entities[self.index] if self.kind == TermKind.ENTITY else wl.topics[self.index]
        ).name

    @property
    def needs_capital(self) -> bool:
        """Whether a find counts only where its first letter is not lower case: a short
        form of a capitalised name or an acronym ("Rice", "WHO"), whose lower-case word
        is the common one. The evidence rejects the others; the prefilter looks for the
        keys of such a rule with that capital."""
        return self.role == Role.SHORT and self.source[:1].isupper()


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
    title_case: bool | None = None  # whether the headline capitalises every word (once known)
    _ents: list[Any] | None = None
    _starts: list[int] | None = None
    _indexes: dict[int, FindIndex] = field(default_factory=dict)

    def index(self, wl: int) -> FindIndex:
        """The finds of one watchlist, indexed once per article: the questions asked of
        each short form then cost the same however many finds the article has."""
        if wl not in self._indexes:
            self._indexes[wl] = FindIndex(self.found.get(wl, []))
        return self._indexes[wl]

    def entity_over(self, start: int, end: int) -> Any:
        """The NER model's entity overlapping [start, end), if any: found by bisection,
        so each look-up costs the same however long the article."""
        if not self.ner:
            return None
        if self._ents is None:
            self._ents = list(self.ner.ents)
            self._starts = [e.start_char for e in self._ents]
        assert self._starts is not None
        i = bisect_right(self._starts, end - 1) - 1
        if i >= 0 and self._ents[i].end_char > start:
            return self._ents[i]
        return None


# Roles whose finds, for another term of the watchlist, support a short form.
EVIDENCE_ROLES = frozenset((Role.NAME, Role.ALT, Role.PHRASE, Role.ALL, Role.NEAR_A, Role.NEAR_B))


class FindIndex:
    """One watchlist's finds in one article, by entity and by place."""

    def __init__(self, found: list[Found]) -> None:
        self.by_entity: dict[int, list[Found]] = defaultdict(list)
        self.by_span: dict[tuple[int, int], list[Found]] = defaultdict(list)
        self.names: list[Found] = []  # full names and full alternatives
        self._terms: dict[tuple[TermKind, int], None] = {}  # the terms with an evidence find
        self.memo: dict[tuple[object, ...], Any] = {}
        for f in found:
            if f.rule.kind == TermKind.ENTITY:
                self.by_entity[f.rule.index].append(f)
                self.by_span[(f.start, f.end)].append(f)
                if f.rule.role in (Role.NAME, Role.ALT):
                    self.names.append(f)
            if f.rule.role in EVIDENCE_ROLES:
                self._terms[(f.rule.kind, f.rule.index)] = None

    def other_terms(self, entity: int) -> list[tuple[TermKind, int]]:
        """The terms (kind, index) found in the article, the entity itself aside."""
        return [t for t in self._terms if t != (TermKind.ENTITY, entity)]
