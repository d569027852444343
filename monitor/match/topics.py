"""Topics: any phrase, every all_of group, near pairs, none_of vetoes."""

from __future__ import annotations

from collections import defaultdict

from monitor.config import Topic
from monitor.match.finds import Found, Role, Scan
from monitor.match.names import proper_noun, shape_vote


def topic_hits(scan: Scan, topic: Topic, found: list[Found], notes: list[str]) -> list[Found]:
    by_role: dict[Role, list[Found]] = defaultdict(list)
    for f in found:
        if f.rule.role != Role.NONE and _in_a_name(scan, f):
            notes.append(f"topic {topic.name!r}: {f.text!r} at {f.start} is part of a name")
            continue
        by_role[f.rule.role].append(f)
    if not found:
        return []
    if by_role[Role.NONE]:
        notes.append(f"topic {topic.name!r} vetoed by {by_role[Role.NONE][0].text!r}")
        return []
    if topic.phrases and not by_role[Role.PHRASE]:
        return []
    groups = {f.rule.group for f in by_role[Role.ALL]}
    if any(gi not in groups for gi in range(len(topic.all_of))):
        return []
    hits = by_role[Role.PHRASE] + by_role[Role.ALL]
    if topic.near is not None:
        pairs = [
            (a, b)
            for a in by_role[Role.NEAR_A]
            for b in by_role[Role.NEAR_B]
            if max(a.tok_start - b.tok_end, b.tok_start - a.tok_end, 0) <= topic.near.within
        ]
        if not pairs:
            return []
        hits += [x for pair in pairs[:1] for x in pair]
    return hits


def needs_a_reading(scan: Scan, f: Found) -> bool:
    """Whether only the NER model can tell if a topic's find stands in a name: a word
    written as a name inside a sentence that the shape alone does not settle (a
    lower-case phrase glued to a capital is settled: part of a name)."""
    return _unsettled(f, _glued(scan, f))


def _unsettled(f: Found, glued: bool | None) -> bool:
    """A capitalised phrase glued to a capital, or a lower-case one not glued: the shape
    says neither name nor word."""
    return glued is not None and glued == f.rule.source[:1].isupper()


def _glued(scan: Scan, f: Found) -> bool | None:
    """For one word written as a name inside a sentence, whether a capitalised word is
    glued to it; None for any other find."""
    if f.tok_end - f.tok_start != 1 or not proper_noun(scan, f):
        return None
    return shape_vote(scan, f)[0] < 0


def _in_a_name(scan: Scan, f: Found) -> bool:
    """A phrase the watchlist writes in lower case, glued to a capital, is part of a name
    ("Tonya Hacker", "Jonathan Hackett"); so is one written as a name inside a sentence
    where the NER model reads a longer person's name ("Stephen Hackett's" at a line's
    start); one it writes capitalised ("Kashmir") is part of a name only glued to a
    capital and read so ("Kashmir Hill"). A capitalised phrase of several words is a
    title ("The Equifax Data Breach"), not a name."""
    glued = _glued(scan, f)
    if glued and f.rule.source[:1].islower():
        return True
    if not _unsettled(f, glued):
        return False
    ent = scan.entity_over(f.start, f.end)
    return (
        ent is not None
        and ent.label_ == "PERSON"
        and ent.start_char <= f.start
        and f.end <= ent.end_char
        and (ent.start_char, ent.end_char) != (f.start, f.end)
    )
