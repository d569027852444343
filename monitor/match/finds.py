"""What the other files pass around: the rules built from the watchlists, each find of
one in an article, and the scan of one article."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spacy.tokens import Doc

from monitor.config import Watchlist
from monitor.models import Item


@dataclass(frozen=True)
class Rule:
    wl: int
    kind: str  # "entity" or "topic"
    index: int  # the entity's or topic's position in its watchlist
    role: str  # name alt short title exclude context | phrase all none near_a near_b
    group: int = -1  # the all_of group
    form: str = ""  # how the watchlist's words were varied to meet the text ("" as written)
    source: str = ""  # the watchlist's own words the rule was made from

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
    title_case: bool | None = None  # whether the headline capitalises every word (once known)
