"""Evidence and votes: whether a short form (a surname, an acronym) means the watched
entity, weighed the way a reader weighs it.

Decisive: the full name earlier in the article (or anywhere, for a headline hit). Votes:
the English NER model (+1 when it labels exactly that word with the type, -1 for another
label, -2 when it sees a longer, different name), the word's shape (-2 when a capitalised
non-title word is glued to it) and context (+1 per distinct `context` word or other
watchlist term present, at most +2). The short form counts at a total of +2 or more: two
pieces of evidence, because a small model alone labels "Vendor Qin" a PERSON as readily
as the minister.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from monitor.config import Entity, Watchlist
from monitor.match.names import (
    TITLES,
    name_earlier,
    other_name_earlier,
    same_entity,
    shape_vote,
)
from monitor.match.phrases import Found, Scan

NEEDED = 2
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)
# Roles whose finds, for another term of the watchlist, support a short form.
_EVIDENCE_ROLES = frozenset(("name", "alt", "phrase", "all", "near_a", "near_b"))


def short_form_counts(
    scan: Scan,
    f: Found,
    entity: Entity,
    found: list[Found],
    watchlists: Sequence[Watchlist],
    notes: list[str],
) -> bool:
    """Whether the short form `f` means `entity`; the reasons go to `notes`."""
    where = f"short form {f.text!r} at {f.start}"
    mine = same_entity(f, found)
    if name_earlier(f, mine, scan.title_len):
        notes.append(f"{where} accepted: the full name {entity.name!r} appears in the article")
        return True
    if not entity.type and not entity.context:
        notes.append(f"{where} accepted: {entity.name!r} declares no type or context to check")
        return True
    other = other_name_earlier(scan, f, mine)
    if other:
        notes.append(f"{where} rejected: it refers back to {other!r}, named earlier")
        return False
    votes: list[tuple[int, str]] = []
    if entity.type:
        votes.append(ner_vote(scan.ner, f, entity.type))
    votes.append(shape_vote(scan, f))
    context = {x.text.lower() for x in mine if x.rule.role == "context"}
    context |= {
        x.rule.term(watchlists) for x in found if x.rule.role in _EVIDENCE_ROLES and x not in mine
    }
    if context:
        votes.append((min(2, len(context)), f"context: {', '.join(sorted(context))}"))
    score = sum(v for v, _ in votes)
    reasons = "; ".join(f"{why} ({v:+d})" for v, why in votes if why) or "no evidence"
    verdict = "accepted" if score >= NEEDED else "rejected"
    notes.append(f"{where} {verdict}: {reasons}; total {score:+d}, needs {NEEDED:+d}")
    return score >= NEEDED


def ner_vote(ner_doc: Any, f: Found, label: str) -> tuple[int, str]:
    if ner_doc is False or ner_doc is None:
        return 0, "no English model to check the type"
    for ent in ner_doc.ents:
        if ent.start_char < f.end and f.start < ent.end_char:
            words = [w for w in ent.text.split() if w.lower().rstrip(".") not in TITLES]
            core = _POSSESSIVE.sub("", " ".join(words)).lower()
            if core != f.text.lower():
                return -2, f"NER sees the longer name {ent.text!r}"
            if ent.label_ != label:
                return -1, f"NER labels {ent.text!r} {ent.label_}, not {label}"
            return 1, f"NER labels {ent.text!r} {label}"
    return 0, f"NER finds no entity at {f.text!r}"
