"""What an alert quotes of an article, and how strongly the article is about its terms."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from monitor.match.normal import sentence_end, sentence_ends
from monitor.models import Hit, Strength

_SNIPPET = 300
_REPEATS_FOR_ABOUT = 3


def strength(hits: Sequence[Hit], lead_end: int) -> Strength:
    """About when a term is in the headline or the lead, or repeated; else a mention."""
    if any(h.field == "title" or h.start < lead_end for h in hits):
        return Strength.ABOUT
    counts: dict[str, int] = defaultdict(int)
    for h in hits:
        counts[h.term] += 1
    return Strength.ABOUT if max(counts.values()) >= _REPEATS_FOR_ABOUT else Strength.MENTION


def quote(text: str, hits: Sequence[Hit]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The sentence around the first body hit (else the first hit), and where the hits
    stand in it."""
    anchor = next((h for h in hits if h.field == "body"), hits[0])
    start, end = _sentence_around(text, anchor.start, anchor.end)
    snippet = text[start:end]
    lead = len(snippet) - len(snippet.lstrip())
    highlights = tuple(
        (h.start - start - lead, h.end - start - lead)
        for h in hits
        if start <= h.start and h.end <= end
    )
    return snippet.strip(), highlights


def _sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence holding [start, end), trimmed to about _SNIPPET characters."""
    begin = max(0, start - _SNIPPET)
    for at in sentence_ends(text, max(0, start - _SNIPPET), start):
        begin = at
    stop = sentence_end(text, end)
    finish = len(text) if stop is None else stop
    if finish - begin > _SNIPPET:
        begin = max(begin, start - _SNIPPET // 2)
        finish = min(finish, max(end, begin + _SNIPPET))
    return begin, finish
