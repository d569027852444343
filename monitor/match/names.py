"""Person names in news style: a full name first, then the surname; a capitalised word
glued to a surname makes another name of it; another person's full name claims a bare
surname that follows it."""

from __future__ import annotations

from collections.abc import Iterable

from spacy.tokens import Doc

from monitor.match.phrases import Found, Scan

# Words that may stand before a name without making it another name ("Premier Li").
TITLES = frozenset(
    """mr mrs ms miss dr prof sir dame lord lady president vice prime premier minister
    secretary chancellor general gen admiral adm colonel col captain capt lieutenant
    senator sen representative rep governor gov mayor ambassador envoy chairman
    chairwoman chair director commissioner judge justice king queen prince princess pope
    cardinal bishop rev father sheikh emir deputy chief spokesman spokeswoman state
    defense defence foreign treasury finance trade climate special""".split()
)


def same_entity(f: Found, found: Iterable[Found]) -> list[Found]:
    return [o for o in found if o.rule.kind == "entity" and o.rule.index == f.rule.index]


def inside(f: Found, found: Iterable[Found], roles: tuple[str, ...]) -> bool:
    """Whether another find of one of `roles` covers f ("Qin" inside "Qin dynasty")."""
    return any(
        o is not f
        and o.rule.role in roles
        and o.start <= f.start
        and f.end <= o.end
        and (o.rule.role == "exclude" or (o.start, o.end) != (f.start, f.end))
        for o in found
    )


def name_earlier(f: Found, mine: Iterable[Found], title_len: int) -> bool:
    """News style names a person in full before using the surname; a headline may use
    the surname first."""
    names = [o for o in mine if o.rule.role in ("name", "alt")]
    if f.start < title_len:
        return bool(names)
    return any(o.end <= f.start for o in names)


def other_name_earlier(scan: Scan, f: Found, mine: Iterable[Found]) -> str | None:
    """A bare short form after another full name with the same word ("Robin Li ... Li
    said") means that person."""
    for earlier in mine:
        if earlier.rule.role == "short" and earlier.end <= f.start:
            vote, _ = shape_vote(scan, earlier)
            if vote < 0:
                return _glued_name(scan, earlier)
    return None


def _glued_name(scan: Scan, f: Found) -> str:
    doc = scan.doc
    start, end = f.tok_start, f.tok_end
    if start > 0 and doc[start - 1].is_title:
        start -= 1
    if end < len(doc) and doc[end].is_title:
        end += 1
    return doc[start:end].text


def shape_vote(scan: Scan, f: Found) -> tuple[int, str]:
    """A capitalised non-title word glued to the short form makes it part of another name.
    Title Case headlines capitalise every word, so they tell nothing."""
    doc = scan.doc
    if f.start < scan.title_len:
        words = [t for t in doc if t.idx < scan.title_len and t.is_alpha]
        if words and sum(t.is_title for t in words) / len(words) > 0.6:
            return 0, ""
    after = doc[f.tok_end] if f.tok_end < len(doc) else None
    before = doc[f.tok_start - 1] if f.tok_start > 0 else None
    for neighbour in (after, before):
        if (
            neighbour is not None
            and neighbour.is_title
            and neighbour.is_alpha
            and neighbour.lower_ not in TITLES
            and not (neighbour is before and _sentence_initial(doc, f.tok_start - 1))
        ):
            return -2, f"glued to {neighbour.text!r}, so part of another name"
    return 0, ""


def _sentence_initial(doc: Doc, i: int) -> bool:
    """Capitals at the start of a sentence or a line say nothing about names."""
    if i == 0:
        return True
    prev = doc[i - 1]
    return prev.text in (".", "!", "?", '"', "“", ":") or (prev.is_space and "\n" in prev.text)
