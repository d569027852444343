"""Events: whether two alerting articles report one happening, however each outlet
worded it, so that the later goes into the first one's Slack thread.

Links and near-identical text (dedupe.py) already join copies of one article. Outlets
that write up one event in their own words share neither; they share its meaning, its
names and its time. An article's gist is what a reader takes in first (the headline and
the lead), as the meaning model reads it, with the proper names of those lines and the
watched terms it matched. Two gists are one event when they came within `WINDOW` of each
other, share a watched term and at least one other proper name (a happening has a place,
an actor or a body besides the one watched), and score at least the bar for their
distance in time: their cosine similarity, plus `PER_NAME` for each such name. Within a
day the bar is `SAME_DAY`; up to two days apart, `NEXT_DAY`, since the later of two alike
stories on one subject is more often a new development. An outlet's own stories are never
joined to each other (store.py): its next story on an event is one it chose to publish.
The model reads a gist only once the conditions that need no model (`may_join`) hold
for it and some recent story of another outlet: most alerting articles have none, and
their gists are never read (about 25 ms each on a loaded CPU).

The figures were chosen on tests/data/realworld/events.yaml (237 alerting articles, 166
events, hand-assigned): the lowest bars that merged no two events there.

A story hidden in another's thread is a missed alert, so the rule errs toward posting
on its own: two events must never merge, and a few extra top-level messages are the cost.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitor.models import Gist, Item, as_utc

if TYPE_CHECKING:
    from monitor.match.senses import MeaningLoader

# Gist texts in, their vectors out (`reader`): what the store is given to read a gist
# only once another story could join it.
Reader = Callable[[Sequence[str]], list[tuple[float, ...]]]

WINDOW = timedelta(hours=48)
DAY = timedelta(hours=24)
SAME_DAY = 0.80
NEXT_DAY = 0.90
PER_NAME = 0.03
_LEAD = 300  # characters of the body read after the headline
_NAME = re.compile(r"\b[A-Z][\w'’-]*[A-Za-z]")  # on folded text (`_fold`): ASCII letters
_COMMON_ZIPF = 5.0  # a capitalised word this common is a sentence's first word, not a name
_FIRST_ZIPF = 3.0  # a sentence's first word counts as a name only when rare as a word
_SENTENCE_END = re.compile(r"[.!?](?=[\"'”’)\]]*\s)")


def gist_text(item: Item) -> str:
    """The headline and the start of the lead: what the meaning model reads of it."""
    body = item.body.strip()
    end = _SENTENCE_END.search(body, 0, _LEAD)
    lead = body[: end.end() if end and end.end() > 60 else _LEAD]
    return f"{item.title.strip()}. {lead.strip()}"


def _fold(text: str) -> str:
    """Without accents: outlets spell one name "Jerí" and "Jeri", "Orbán" and "Orban"."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def names_in(text: str) -> frozenset[str]:
    """The proper names of a text, folded (case and accents): capitalised words that are
    not common words. A sentence's first word is capitalised whatever it is, so there it
    must be rare."""
    from wordfreq import zipf_frequency  # only where an article alerts: a quiet poll never

    text = _fold(text)
    names = set()
    for m in _NAME.finditer(text):
        word = m.group().casefold().removesuffix("'s").removesuffix("’s")
        before = text[: m.start()].rstrip(" \"'“‘(")
        first = not before or before[-1] in ".!?:\n"
        if zipf_frequency(word, "en") < (_FIRST_ZIPF if first else _COMMON_ZIPF):
            names.add(word)
    return frozenset(names)


def gist(item: Item, text: str) -> Gist:
    """The gist of an alerting article whose gist text (`gist_text`) is `text`, its vector
    not read yet (`Reader`); its terms are set per watchlist (`dataclasses.replace`)."""
    return Gist(text, names_in(text), frozenset(), item.published)


def reader(meaning: MeaningLoader) -> Reader:
    """Gist texts to their vectors as gists keep them, by the model `meaning` loads."""

    def read(texts: Sequence[str]) -> list[tuple[float, ...]]:
        return [tuple(round(float(x), 4) for x in v) for v in meaning().vectors(texts)]

    return read


def stored_gist(stored: dict[str, Any], terms: Iterable[str], at: datetime | None) -> Gist:
    """A gist as a match row keeps it (Gist.stored)."""
    vector = tuple(stored["v"]) if "v" in stored else None
    return Gist(stored.get("t", ""), frozenset(stored["n"]), frozenset(terms), at, vector)


@dataclass(frozen=True)
class Joined:
    """Why a new article joined an earlier story: the figures behind the decision."""

    story_key: str
    similarity: float
    names: tuple[str, ...]
    hours: float

    def __str__(self) -> str:
        shared = f", names shared: {', '.join(self.names)}" if self.names else ""
        return (
            f"same event as {self.story_key}: similarity {self.similarity:.2f}"
            f"{shared}, {self.hours:.0f} h apart"
        )


def _apart(new: Gist, old: Gist) -> timedelta:
    if new.at is not None and old.at is not None:
        return abs(as_utc(new.at) - as_utc(old.at))
    return timedelta(0)


def watched_words(g: Gist) -> frozenset[str]:
    """The words of `g`'s watched terms, folded as its names are (`names_in`): a watched
    name is no other name two gists share, however an outlet spells it ("José Jerí")."""
    return frozenset(w for t in g.terms for w in _fold(t).casefold().split())


def _shared_names(new: Gist, old: Gist) -> list[str]:
    """The proper names both gists have, other than words of `new`'s watched terms."""
    return sorted((new.names & old.names) - watched_words(new))


def may_join(new: Gist, old: Gist) -> bool:
    """Whether `new` could report the event of `old` whatever their vectors say: the
    conditions of `same_event` that need no meaning model, so cheap to try first."""
    return (
        _apart(new, old) <= WINDOW
        and not new.terms.isdisjoint(old.terms)
        and bool(_shared_names(new, old))
    )


def same_event(new: Gist, old: Gist, old_key: str) -> Joined | None:
    """The reason `new` reports the event of `old`, or None when that is not clear. Both
    vectors must have been read where `may_join` holds."""
    if not may_join(new, old):
        return None
    if new.vector is None or old.vector is None:
        raise ValueError(f"same_event: the gists' vectors are not read (story {old_key})")
    if len(new.vector) != len(old.vector):
        return None  # (vectors of two lengths: two meaning models', not comparable)
    apart = _apart(new, old)
    similarity = sum(a * b for a, b in zip(new.vector, old.vector, strict=True))
    shared = _shared_names(new, old)
    bar = SAME_DAY if apart <= DAY else NEXT_DAY
    if similarity + PER_NAME * len(shared) >= bar:
        return Joined(old_key, similarity, tuple(shared), apart.total_seconds() / 3600)
    return None


def earliest_event(new: Gist, stories: Iterable[tuple[str, Gist]]) -> Joined | None:
    """Of the recent stories (key, gist of one of its articles), the one `new` is most
    like, if it reports that story's event."""
    best: Joined | None = None
    for key, old in stories:
        joined = same_event(new, old, key)
        if joined is not None and (best is None or joined.similarity > best.similarity):
            best = joined
    return best
