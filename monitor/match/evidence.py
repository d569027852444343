"""Evidence and votes: whether a short form (a surname, an acronym, a title on its own)
means the watched entity, weighed the way a reader weighs it.

First the surface: a name is written with a capital ("rice prices" is no Rice); an
all-capital word is an acronym, not a name written "Un"; a first name counts only
after a title ("President Prabowo"); a word inside another watched person's full name
is theirs. Decisive: the entity's own given name before the surname ("Lloyd J. Austin");
against: another given name before the surname or another surname after the given name
("Ziaur Rahman", "Donald Tusk"), which is another person even once the entity is named;
for: the full name earlier in the article (or anywhere, for a headline hit); against:
another person named in the article with that word ("Robin Li ... Li said"). Then
votes, weighed by the table `Vote` (shown at the end), which the code reads too. The
votes needed come from the prior (prior.py): 1 for a rare word, 2 for a common one, 3
for the commonest; 1 for a short form of several words, `TITLE_ALONE_NEEDS` for a title
alone. A short form two watched people share counts only on evidence of one's own: a
declared title, or a context word the other does not declare.

The votes (a title, its declared form or its head word, counts once; so does the name
vote: all its kinds read the same capital letter):
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from spacy.tokens import Doc

from monitor.config import Entity, Watchlist
from monitor.match.finds import Found, Role, Scan
from monitor.match.names import (
    TITLES,
    NameParts,
    another_persons_name,
    joined_names,
    name_earlier,
    name_parts,
    not_a_name,
    other_name,
    own_name_before,
    past_holder,
    proper_noun,
    shape_vote,
    title_before,
    title_case,
)
from monitor.match.normal import fold, norm, sentence_end
from monitor.match.prior import COMMON, DISTINCTIVE, needed
from monitor.models import TermKind

TITLE_ALONE_NEEDS = 1
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)
_IMPLICIT = frozenset(("last name", "first name"))
_PLACES = frozenset(("GPE", "LOC", "FAC"))


class Vote(Enum):
    """The evidence a short form can earn, and its weight: the one table of them."""

    DECLARED_TITLE = 2, 'the entity\'s declared title right before: "Defense Secretary Austin"'
    OWN_TITLE = 2, 'the head word of a declared title: "Secretary Austin"'
    TITLE = 1, 'a courtesy or office title right before: "Mr", "President"'
    HEADLINE = 1, "in the headline, where news names the well known by surname"
    NAMESAKES_APART = 1, 'two or more excluded namesakes, none in the article: "Eric Trump"'
    COMPOUND = 1, 'in a hyphenated compound: "pro-Trump", "Merkel-era"'
    POSSESSIVE = 1, 'a possessive: "Trump\'s"'
    NAME = 1, "the NER model sees a name of its type there (else: a capital inside a sentence)"
    OTHER_TYPE = -1, "the NER model labels it a place for a person, or the like"
    LONGER_NAME = -2, "the NER model sees a longer, different name"
    GLUED = -2, "a capitalised non-title word glued to it: part of another name"
    CONTEXT = 1, "per distinct `context` word or other watchlist term present"
    CONTEXT_MOST = 2, "the most context gives"

    def __init__(self, weight: int, says: str) -> None:
        self.weight = weight
        self.says = says


__doc__ = (__doc__ or "") + "".join(f"\n    {v.weight:+d}  {v.says}" for v in Vote) + "\n"


@dataclass(frozen=True)
class Verdict:
    counts: bool
    note: str | None  # None: not worth a line in `monitor explain`


def verdict_without_votes(scan: Scan, f: Found, entity: Entity, wl: Watchlist) -> Verdict | None:
    """The decision on a short form that needs no votes, or None when it needs them."""
    where = f"{_what(f)} {f.text!r} at {f.start}"
    rule = f.rule
    if rule.role == Role.SHORT:
        surface = _surface(scan, f, entity)
        if surface is not None:
            return Verdict(False, surface and f"{where} rejected: {surface}")
    index = scan.index(rule.wl)
    mine = index.by_entity[rule.index]
    parts = _surname_of(entity, f)
    written = parts and own_name_before(scan.doc, f.tok_start, parts.given)
    if written:
        return Verdict(True, f"{where} accepted: the name written {written!r}")
    whole = name_parts(entity.name) if rule.role == Role.SHORT and entity.type == "PERSON" else None
    someone = whole and another_persons_name(scan, f, whole, own_words(entity))
    if someone:
        return Verdict(False, f"{where} rejected: part of another person's name {someone!r}")
    if rule.role == Role.SHORT and name_earlier(f, mine, scan.title_len):
        return Verdict(True, f"{where} accepted: the full name {entity.name!r} appears")
    owner = _inside_other_name(f, index.names)
    if owner is not None:
        return Verdict(False, None)
    if rule.role == Role.TITLE:
        if len(rule.source.split()) < 2:
            return Verdict(False, None)  # "senator" alone could be any senator
        if past_holder(scan.doc, f.tok_start):
            return Verdict(False, f"{where} rejected: a former holder")
        after = f.tok_end < len(scan.doc) and scan.doc[f.tok_end]
        if after and after.is_alpha and after.text[0].isupper() and not title_case(scan, f):
            return Verdict(False, None)  # the title of the name that follows
    elif not entity.type and not entity.context and rule.form not in _IMPLICIT:
        return Verdict(True, f"{where} accepted: {entity.name!r} declares no type or context")
    key = ("other name", rule.index, fold(f.text))
    if key not in index.memo:  # the same for every find of the word
        index.memo[key] = other_name(scan, f, mine, own_words(entity))
    other = index.memo[key]
    if other is not None and other[0] is not f:  # f itself in the other name: votes say so
        return Verdict(False, f"{where} rejected: it refers to {other[1]!r}, named in the article")
    sharer = _shared_with(f, index.by_span[(f.start, f.end)])
    if sharer is not None and any(
        o.rule.role in (Role.NAME, Role.ALT) and o.end <= f.start
        for o in index.by_entity[sharer.rule.index]
    ):
        other = wl.entities[sharer.rule.index].name
        return Verdict(False, f"{where} rejected: {other!r}, named earlier")
    return None


def short_form_counts(
    scan: Scan,
    f: Found,
    entity: Entity,
    watchlists: Sequence[Watchlist],
    notes: list[str],
) -> str | None:
    """Why the short form `f` means `entity`, or None when it does not (and why not goes
    to `notes`)."""
    wl = watchlists[f.rule.wl]
    decided = verdict_without_votes(scan, f, entity, wl)
    if decided is not None:
        if decided.counts:
            return decided.note or "accepted"
        if decided.note:
            notes.append(decided.note)
        return None
    where = f"{_what(f)} {f.text!r} at {f.start}"
    index = scan.index(f.rule.wl)
    mine = index.by_entity[f.rule.index]
    key = ("named by NER", f.rule.index, fold(f.text))
    if key not in index.memo:  # the same for every find of the word
        index.memo[key] = _named_by_ner(scan, f, mine, own_words(entity))
    named = index.memo[key]
    if named is not None and named[0] is not f:  # f itself in the longer name: its vote says so
        notes.append(f"{where} rejected: it refers to {named[1]!r}, named in the article")
        return None
    votes: list[tuple[int, str]] = []
    own = 0  # votes only this entity could have earned
    if f.rule.role == Role.TITLE:
        need, prior = TITLE_ALONE_NEEDS, f"a title alone needs {TITLE_ALONE_NEEDS:+d}"
    else:
        need, zipf = needed(f.text)
        if len(f.text.split()) > 1:  # words together name one thing ("Revolutionary Guards")
            need = 1
        prior = f"prior: {f.text!r} is {_commonness(zipf)} (Zipf {zipf:.1f}), needs {need:+d}"
        own += _name_votes(scan, f, entity, mine, votes)
    key = ("context", f.rule.index, "")
    if key not in index.memo:
        index.memo[key] = [x for x in mine if x.rule.role == Role.CONTEXT]
    context = {
        x.text.lower()
        for x in index.memo[key]
        if not (f.start <= x.start and x.end <= f.end)
        and (f.rule.role != Role.TITLE or _same_sentence(scan, f, x))
    }
    sharer = _shared_with(f, index.by_span[(f.start, f.end)])
    if sharer is not None:
        theirs = {fold(c) for c in wl.entities[sharer.rule.index].context}
        own += sum(1 for c in context if fold(c) not in theirs)
    if f.rule.role != Role.TITLE:  # an office alone is supported by its own context only
        context |= {
            (wl.entities[i] if kind == TermKind.ENTITY else wl.topics[i]).name
            for kind, i in index.other_terms(f.rule.index)
        }
    if context:
        weight = min(Vote.CONTEXT_MOST.weight, Vote.CONTEXT.weight * len(context))
        votes.append((weight, f"context: {', '.join(sorted(context))}"))
    score = sum(v for v, _ in votes)
    counts = score >= need
    reasons = "; ".join(f"{why} ({v:+d})" for v, why in votes if why) or "no evidence"
    if counts and sharer is not None and not own:
        counts = False
        reasons += f"; shared with {sharer.rule.term(watchlists)!r} and nothing of its own"
    note = f"{where} {'accepted' if counts else 'rejected'}: {reasons}; total {score:+d}; {prior}"
    if not counts:
        notes.append(note)
        return None
    return note


def _name_votes(
    scan: Scan, f: Found, entity: Entity, mine: Sequence[Found], votes: list[tuple[int, str]]
) -> int:
    """The votes of the words around a short form, added to `votes`; how many of them
    only this entity could have earned (its declared title)."""
    doc = scan.doc
    declared = [o for o in mine if o.rule.role == Role.TITLE and o.tok_end == f.tok_start]
    title = title_before(doc, f.tok_start)
    heads = {_head(t) for t in entity.titles}
    own = 0
    if declared:
        votes.append((Vote.DECLARED_TITLE.weight, f"declared title {declared[0].text!r}"))
        own = 1
    elif title and fold(title).rstrip(".") in heads and not _other_office(doc, f.tok_start, entity):
        votes.append((Vote.OWN_TITLE.weight, f"title {title!r}, as in its declared titles"))
        own = 1
    elif title:
        votes.append((Vote.TITLE.weight, f"title {title!r}"))
    if f.start < scan.title_len:
        votes.append((Vote.HEADLINE.weight, Vote.HEADLINE.says))
    namesakes = _namesakes(entity, f.text)
    if len(namesakes) > 1 and not any(
        o.rule.role == Role.EXCLUDE and o.rule.source in namesakes for o in mine
    ):
        why = f"its namesakes are declared apart ({', '.join(namesakes)})"
        votes.append((Vote.NAMESAKES_APART.weight, why))
        own = 1
    compound = _compound(scan, f)
    if compound:
        votes.append((Vote.COMPOUND.weight, f"in the compound {compound!r}"))
    if f.tok_end < len(doc) and fold(doc[f.tok_end].text) == "'s":
        possessive = doc[f.tok_start : f.tok_end + 1].text
        votes.append((Vote.POSSESSIVE.weight, f"possessive {possessive!r}"))
    named = name_vote(scan, f, entity.type, own_words(entity) - {norm(f.text)})
    if declared or title:  # a title already says a person is meant, and capitalises
        named = named if named[0] == Vote.LONGER_NAME.weight else (0, "")
    votes.append(named)
    glued, why = shape_vote(scan, f, own_words(entity))
    votes.append((Vote.GLUED.weight if glued else 0, why))
    return own


def _namesakes(entity: Entity, word: str) -> list[str]:
    """The names with that surname the entity excludes ("Melania Trump" for Donald
    Trump). A watchlist that lists two or more has told who else the surname could be,
    which is what the word's commonness as a name stands for; one excluded name only
    fences that one off ("Li Qiang" says nothing of the other Lis)."""
    name = norm(word)
    return [x for x in entity.exclude if len(x.split()) > 1 and name in map(norm, x.split())]


def own_words(entity: Entity) -> frozenset[str]:
    """The norms of an entity's own words: its names, context and titles."""
    phrases = [entity.name, *entity.aliases, *entity.context, *entity.titles]
    return frozenset(norm(w) for p in phrases for w in p.replace("-", " ").split())


def _other_office(doc: Doc, i: int, entity: Entity) -> bool:
    """Whether the title before token i is qualified into an office not declared ("Prime
    Minister Li" for a declared "defence minister")."""
    if i < 2:
        return False
    qualifier = fold(doc[i - 2].text)
    declared = {w for t in entity.titles for w in fold(t).split()}
    return qualifier in TITLES and qualifier not in declared


def _head(title: str) -> str:
    """The word a title is named by: "secretary" of "defense secretary" and of
    "secretary of state"."""
    words = fold(title).split()
    if " of " in f" {' '.join(words)} ":
        return words[0]
    return words[-1]


def _same_sentence(scan: Scan, a: Found, b: Found) -> bool:
    """An office alone names its holder only with its own context at hand: in the same
    sentence ("Iran's supreme leader", not a "supreme leader" of a story that mentions
    Iran later); a headline's anywhere in the article, which it sums up."""
    if a.start < scan.title_len:
        return True
    start, end = sorted((a.start, b.start))
    return sentence_end(scan.text, start, end) is None


def _surname_of(entity: Entity, f: Found) -> NameParts | None:
    """The parts of a person's name when the short form is its family name, whether the
    rules made it from the name ("last name") or the watchlist declared it as an alias:
    "Antony J. Blinken" is written the same way either way."""
    if f.rule.role != Role.SHORT or entity.type != "PERSON":
        return None
    parts = name_parts(entity.name)
    return parts if parts is not None and norm(f.text) == norm(parts.family) else None


def _what(f: Found) -> str:
    if f.rule.role == Role.TITLE:
        return "title"
    return f.rule.form if f.rule.form in _IMPLICIT else "short form"


def _commonness(zipf: float) -> str:
    return "rare" if zipf < DISTINCTIVE else "very common" if zipf >= COMMON else "common"


def _surface(scan: Scan, f: Found, entity: Entity) -> str | None:
    """Why the words as written cannot be this name ("" for a reason not worth a note),
    or None."""
    source, text = f.rule.source, f.text
    if not f.rule.needs_capital or not text[:1].isalpha():
        return None
    shouted = scan.text[: scan.title_len].isupper() and f.start < scan.title_len
    if text[:1].islower():
        return "" if f.rule.form in _IMPLICIT else "written in lower case"
    if text.isupper() and len(text) > 1 and not source.isupper() and not shouted:
        return f"{text!r} is an acronym, not the name"
    if f.rule.form == "first name" and title_before(scan.doc, f.tok_start) is None:
        declared = any(
            o.rule.role == Role.TITLE and o.tok_end == f.tok_start
            for o in scan.index(f.rule.wl).by_entity[f.rule.index]
        )
        if not declared:
            return ""
    return None


def _compound(scan: Scan, f: Found) -> str | None:
    """The hyphenated compound the short form stands in ("pro-Trump", "Trump-era")."""
    doc = scan.doc
    i, j = f.tok_start, f.tok_end
    if i >= 2 and doc[i - 1].text == "-" and doc[i - 2].is_alpha:
        return doc[i - 2 : j].text
    if j + 1 < len(doc) and doc[j].text == "-" and doc[j + 1].is_alpha:
        return doc[i : j + 2].text
    return None


def _inside_other_name(f: Found, found: Sequence[Found]) -> Found | None:
    """The other entity's full name this find stands inside ("Sharif" in "Nawaz
    Sharif"), if any."""
    for o in found:
        if (
            o.rule.kind == TermKind.ENTITY
            and o.rule.index != f.rule.index
            and o.rule.role in (Role.NAME, Role.ALT)
            and o.start <= f.start
            and f.end <= o.end
        ):
            return o
    return None


def _shared_with(f: Found, here: Sequence[Found]) -> Found | None:
    """Another entity of the watchlist with the same short form at the same place (`here`:
    the entity finds at f's place)."""
    for o in here:
        if (
            o.rule.kind == TermKind.ENTITY
            and o.rule.index != f.rule.index
            and o.rule.role == Role.SHORT
            and (o.start, o.end) == (f.start, f.end)
        ):
            return o
    return None


def name_vote(
    scan: Scan, f: Found, label: str | None, own: frozenset[str] = frozenset()
) -> tuple[int, str]:
    """Whether the word is used as a name, and of what: the NER model's label (`Vote.NAME`
    for the type or for a label that says little of a lone name, `OTHER_TYPE` for one
    against it, `LONGER_NAME` for a longer, different name), else a capital inside a
    sentence (`NAME`). One vote: all of them read the same capital letter."""
    ner = scan.ner if label else None
    if ner is False or ner is None or label is None:
        if proper_noun(scan, f):
            return Vote.NAME.weight, "written as a name"
        if f.text.isupper() and f.text == f.rule.source and len(f.text) > 1:
            return Vote.NAME.weight, "in capitals, as declared"
        return 0, "no English model to check the type" if label else ""
    seen = _ner_entity(scan, f, own)
    if seen is None:
        return _as_written(scan, f, "NER finds no entity there")
    text, found_label, longer = seen
    if longer:
        return Vote.LONGER_NAME.weight, f"NER sees the longer name {text!r}"
    if found_label == label:
        return Vote.NAME.weight, f"NER labels {text!r} {label}"
    if _contradicts(found_label, label):
        return Vote.OTHER_TYPE.weight, f"NER labels {text!r} {found_label}, not {label}"
    little = f"its {found_label} says little of a lone name"
    return Vote.NAME.weight, f"NER sees a name in {text!r} ({little})"


def _ner_entity(
    scan: Scan, f: Found, own: frozenset[str] = frozenset()
) -> tuple[str, str, bool] | None:
    """The NER entity over a find, on the find's line: its text, its label, and whether
    it is a longer, different name (a name joined by a hyphen, titles, offices and the
    entity's own words such as "Trump Administration", a capitalised "The", a
    possessive, digits and capitals in Title Case aside)."""
    ent = scan.entity_over(f.start, f.end)
    if ent is None:
        return None
    start = max(ent.start_char, scan.text.rfind("\n", 0, f.start) + 1)
    end = min(ent.end_char, scan.text.find("\n", f.end) % (len(scan.text) + 1))
    doc = scan.doc
    if f.tok_end < len(doc) and doc[f.tok_end].text == "-":
        end = min(end, f.end)  # "Modi-Xi Jinping": what follows the hyphen is Xi's
    if f.tok_start > 0 and doc[f.tok_start - 1].text == "-" and joined_names(scan, f.tok_start - 1):
        start = max(start, f.start)
    word = fold(f.text)
    seen = scan.text[start:end]
    kept = [w for w in seen.split() if not not_a_name(w, own)]
    core = fold(" ".join(kept))
    if core.startswith(word + "'s"):  # "Trump's Council of Economic Advisers"
        core = word
    core = _POSSESSIVE.sub("", core)
    longer = (
        core != word
        and not _hyphen_part(core, word)
        and not title_case(scan, f)
        and _more_name(seen, f.text, own)
    )
    return seen, ent.label_, longer


def _as_written(scan: Scan, f: Found, why: str) -> tuple[int, str]:
    """Where NER does not decide: a capital inside a sentence says a name is meant."""
    if proper_noun(scan, f):
        return Vote.NAME.weight, f"written as a name ({why})"
    return 0, why


def _named_by_ner(
    scan: Scan, f: Found, mine: Sequence[Found], own: frozenset[str]
) -> tuple[Found, str] | None:
    """Another person with the word in their name, as NER reads the article ("Neil
    Duncan-Jordan ... Duncan-Jordan said"): a bare short form means that person. The
    first find of the word in such a name, and the name."""
    if not scan.ner or f.rule.role != Role.SHORT:
        return None
    word = fold(f.text)
    for o in mine:
        if o.rule.role == Role.SHORT and fold(o.text) == word:
            seen = _ner_entity(scan, o, own)
            if seen is not None and seen[2] and seen[1] == "PERSON":
                return o, seen[0]
    return None


def _more_name(seen: str, word: str, own: frozenset[str]) -> bool:
    """Whether an entity span holds a capitalised word besides `word` that may make a
    name (not a title, office, minor word or one of the entity's own), so another name."""
    return any(
        w[:1].isupper() and w.isalpha() and fold(w) != fold(word) and not not_a_name(w, own)
        for w in seen.split()
    )


def _contradicts(seen: str, wanted: str) -> bool:
    """Whether an NER label speaks against the type: a place for a person ("Austin,
    Texas"), a person for anything else. The small model often labels a lone surname an
    organisation ("Trump", "Ishiba"), so that says little either way."""
    if wanted == "PERSON":
        return seen in _PLACES
    return seen == "PERSON" or (seen in _PLACES) != (wanted in _PLACES)


def _hyphen_part(core: str, word: str) -> bool:
    """NER keeps a hyphenated compound whole ("Trump-Modi"): the word is one of its parts."""
    return "-" in core and " " not in core and word in core.split("-")
