"""Senses: whether a hit uses its term in the sense the desk meant.

A term may say, in the desk's words, what it is `about` and what it is `not_about`. A hit
of such a term is read in its context (the headline and the hit's sentence) by the
meaning model, and set aside when that context is nearer to one of the senses it is not
about than to the one it is. For a person, the abouts of other watched people who share
a word of the name ("Anthony Albanese", "Francesca Albanese") are further senses a bare
surname may have, so a mention is credited to the one it names.

A term with nothing to weigh its `about` against is not judged: a similarity to one
description alone does not separate senses reliably (tried: it varies more between
sentences of one sense than between senses).

Each term is read on its own: another watched term of the watchlist in the same article
does not vouch for a hit set aside (tried, docs/meaning.md: it won back no true hit on the
labelled news and kept the country Jordan beside Trump). Nor did a wider context, every
hit read, a vote of the hits, each clause of a description apart, or scores relative to
a baseline of other descriptions separate the senses better than the margin does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from monitor.config import Entity, Topic, Watchlist
from monitor.match.finds import Found, Role, Scan
from monitor.match.normal import sentence_end, sentence_ends
from monitor.match.prior import common_word
from monitor.meaning import Meaning
from monitor.models import TermKind

MeaningLoader = Callable[[], Meaning]

# How much nearer to a sense it is not about a context must be to be set aside. Above
# zero: when the two are level, the hit stands (a missed story costs more than a
# false alarm the desk can wave away).
MARGIN = 0.02
# The hits of one term read in one article; the rest follow them (any kept keeps them):
# a name repeated twenty times costs no more than six sentences.
_READ = 6
# The watched word itself is masked, in the context and in the descriptions: its letters
# are the same in every sense, and left in they outweigh the words around it that tell
# the senses apart ("Trump's tariffs" read nearer to "a trump card" than to the president).
MASK = "[MASK]"
# The model reads English: a context is read only when enough of its words are among
# English's commonest (the, of, and, is, will ...), which other languages' text is not.
_FUNCTION_ZIPF = 6.0
_ENGLISH_SHARE = 0.12
_NAMESAKE_ROLES = frozenset(
    (Role.SHORT, Role.TITLE)
)  # forms a namesake can share: a full name cannot


@dataclass(frozen=True)
class Senses:
    """What one term means, and the senses its words may have instead."""

    about: str
    not_about: tuple[str, ...]
    namesakes: tuple[tuple[str, str], ...] = ()  # (another watched person, their about)

    def contrasts(self, role: Role) -> list[tuple[str, str]]:
        own = [("not about", text) for text in self.not_about]
        if role in _NAMESAKE_ROLES:
            own += [(name, about) for name, about in self.namesakes]
        return own


@dataclass(frozen=True)
class Reading:
    """How one hit's context read: its similarity to the term's about, to the nearest
    other sense, and the decision."""

    about: float
    other: str  # the nearest other sense, as its label says
    other_text: str
    other_score: float
    kept: bool

    def __str__(self) -> str:
        verdict = "kept" if self.kept else "set aside"
        return (
            f"{verdict}: about {self.about:.2f}, nearest other sense "
            f"{self.other_score:.2f} ({self.other}: {self.other_text!r})"
        )


def senses_of(watchlists: Sequence[Watchlist]) -> dict[tuple[int, TermKind, int], Senses]:
    """(watchlist, kind, index) -> the senses of each term that has something to weigh."""
    people: list[tuple[set[str], Entity]] = [
        (_name_words(e.name), e) for wl in watchlists for e in wl.entities if e.about
    ]
    out: dict[tuple[int, TermKind, int], Senses] = {}
    for wi, wl in enumerate(watchlists):
        terms: list[tuple[TermKind, int, Entity | Topic]] = [
            *((TermKind.ENTITY, i, e) for i, e in enumerate(wl.entities)),
            *((TermKind.TOPIC, i, t) for i, t in enumerate(wl.topics)),
        ]
        for kind, index, term in terms:
            namesakes: tuple[tuple[str, str], ...] = ()
            if isinstance(term, Entity):
                words = _name_words(term.name)
                namesakes = tuple(
                    (other.name, other.about)
                    for other_words, other in people
                    if other.about and other.name != term.name and words & other_words
                )
            if term.not_about or (namesakes and term.about):
                words = _words_of(term)
                out[(wi, kind, index)] = Senses(
                    _masked(term.about or term.name, words),
                    tuple(_masked(t, words) for t in term.not_about),
                    tuple((n, _masked(a, words)) for n, a in namesakes),
                )
    return out


def described(term: Entity | Topic) -> str | None:
    """The term's `about` as a hit's context is compared with it (masked), if it has one."""
    return _masked(term.about, _words_of(term)) if term.about else None


def _words_of(term: Entity | Topic) -> set[str]:
    """The words a hit of the term may be written with: its name's, its aliases' and its
    phrases' (a prefix form by its stem)."""
    forms = [term.name, *(term.aliases if isinstance(term, Entity) else term.phrases)]
    return {w.rstrip("*").casefold() for f in forms for w in re.split(r"[\s-]+", f) if w}


def _masked(text: str, words: set[str]) -> str:
    """A description as the model compares it with a context: the term's own words masked,
    and the mask before it (a definition of the masked word), so that every text compared
    holds the mask alike and none is nearer to a context for holding it."""
    return f"{MASK}: " + re.sub(
        r"[\w'’-]+",
        lambda m: MASK if any(m.group().casefold().startswith(w) for w in words) else m.group(),
        text,
    )


def _name_words(name: str) -> set[str]:
    """The capitalised words of a name (particles like "bin" and "da" say nothing)."""
    return {w.casefold() for w in name.replace("-", " ").split() if w[:1].isupper() and len(w) > 1}


def context(scan: Scan, f: Found) -> str:
    """What a hit is read in: the headline, and the sentence around the hit (for a hit in
    the headline, the lead's first sentence)."""
    text = scan.text[: f.start] + MASK + scan.text[f.end :]
    title_len = (
        scan.title_len + len(MASK) - (f.end - f.start)
        if f.start < scan.title_len
        else scan.title_len
    )
    title = text[:title_len].strip()
    if f.start < scan.title_len:
        lead_end = scan.lead_end + len(MASK) - (f.end - f.start)
        return f"{title}. {text[title_len:lead_end].strip()}"
    at = f.start
    begin = title_len
    for offset in sentence_ends(text, max(title_len, at - 400), at):
        begin = offset
    end = sentence_end(text, at + len(MASK)) or len(text)
    return f"{title}. {text[begin:end].strip()}"


def english(text: str) -> bool:
    """Whether the text reads as English, by its share of English's commonest words."""
    words = re.findall(r"[^\W\d_]+", text.casefold())
    if len(words) < 4:
        return True
    common = sum(1 for w in words if common_word(w) >= _FUNCTION_ZIPF)
    return common / len(words) >= _ENGLISH_SHARE


def read(
    meaning: Meaning, senses: Senses, scan: Scan, finds: Sequence[Found]
) -> list[Reading | None]:
    """A reading for each of `finds` (the hits of one term, in text order); None where a
    hit stands without one (nothing to weigh it against). Hits past the first few follow
    them: they stand if any of those stood."""
    first = list(finds[:_READ])
    contexts = [context(scan, f) for f in first]
    labels = [[("about", senses.about), *senses.contrasts(f.rule.role)] for f in first]
    texts = sorted({t for row in labels for _, t in row} | set(contexts))
    vectors = meaning.vectors(texts)
    where = {t: i for i, t in enumerate(texts)}
    out: list[Reading | None] = []
    for ctx, row in zip(contexts, labels, strict=True):
        if len(row) == 1 or not english(ctx):
            out.append(None)  # a full name with namesakes only; or a language unread
            continue
        v = vectors[where[ctx]]
        scores = [float(np.dot(v, vectors[where[t]])) for _, t in row]
        best = max(range(1, len(row)), key=lambda i: scores[i])
        kept = scores[best] <= scores[0] + MARGIN
        out.append(Reading(scores[0], row[best][0], row[best][1], scores[best], kept))
    set_aside = [r for r in out if r is not None and not r.kept]
    follow = set_aside[0] if len(set_aside) == len(out) else None
    return out + [follow] * (len(finds) - len(first))
