"""Lessons: what the desk's Not relevant clicks teach the matcher.

A click says one hit was wrong for its watchlist. What made it wrong is its context: the
headline and the hit's sentence, with the watched word masked (senses.context), kept with
the click. A later hit of the same term in the same watchlist is read the same way and
compared, by the meaning model, with every such example and with its counterweights: the
term's own `about`, if it has one, and the contexts of the term's alerts in that
watchlist the desk let stand (the newest `STANDING` of them). It is suppressed when the
nearest example is at least `FLOOR` alike AND nearer than every counterweight by more
than `MARGIN`: a nearest-neighbour rule between what the desk rejected and what it kept,
so one false alarm cannot silence a term whose other hits read otherwise.

Only the watchlist and term a click was on learn from it: the same sentence under
another watchlist or another term is that desk's business, not this one's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from monitor.match.senses import english
from monitor.meaning import Meaning

if TYPE_CHECKING:
    from numpy.typing import NDArray

# How alike (cosine, on the meaning model) a hit's context must be to a rejected one to
# be suppressed at all: about where two sentences share a subject, not merely a word.
FLOOR = 0.50
# How much nearer to a rejected example than to anything kept: the margin senses uses,
# for the same reason (level means it stands: a missed story costs more than a false alarm).
MARGIN = 0.02
# The term's alerts the desk let stand, newest first, read as counterweights.
STANDING = 200


@dataclass(frozen=True)
class Example:
    """One hit the desk marked Not relevant: its context, and who said so when."""

    feedback_id: int
    context: str
    user: str
    at: datetime


@dataclass(frozen=True)
class Lesson:
    """What one (watchlist, term) has learnt: the examples it must not alert on, and
    the contexts of its alerts the desk kept."""

    examples: tuple[Example, ...]
    standing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resemblance:
    """How a hit's context compared with a term's lesson, and the decision."""

    example: Example
    similarity: float
    counter: float  # the nearest counterweight's similarity
    counter_what: str  # which: "its about", "an alert kept", or "nothing kept yet"
    suppressed: bool

    def __str__(self) -> str:
        verdict = "suppressed" if self.suppressed else "kept"
        e = self.example
        return (
            f"{verdict}: resembles feedback #{e.feedback_id} (Not relevant, by {e.user}, "
            f"{e.at:%Y-%m-%d %H:%M} UTC) at {self.similarity:.2f}; nearest kept: "
            f"{self.counter:.2f} ({self.counter_what})"
        )


@dataclass
class Lessons:
    """Every lesson in force, by (watchlist, term), as read from the store at one
    version (`stamp`): the matcher is taught again when the store's version differs."""

    by_term: Mapping[tuple[str, str], Lesson] = field(default_factory=dict)
    stamp: tuple[int, int, int] = (0, 0, 0)
    _vectors: dict[tuple[str, str], tuple[NDArray[np.float32], NDArray[np.float32]]] = field(
        default_factory=dict, repr=False
    )

    def hold(
        self,
        meaning: Callable[[], Meaning],
        watchlist: str,
        contexts: Mapping[str, str],
        abouts: Mapping[str, str | None],
    ) -> tuple[list[str], str | None]:
        """The readings of a match's terms (term -> its first hit's context), and why it
        is suppressed: only when every term's hit resembles a rejected one (None if not:
        a term that hit in a sense the desk kept carries the match)."""
        if not any(w == watchlist for w, _ in self.by_term):
            return [], None
        readings = [
            (term, self.judge(meaning(), watchlist, term, abouts.get(term), text))
            for term, text in contexts.items()
        ]
        notes = [f"feedback on {term!r}: {r}" for term, r in readings if r is not None]
        if readings and all(r is not None and r.suppressed for _, r in readings):
            return notes, "; ".join(f"{term!r} {r}" for term, r in readings)
        return notes, None

    def judge(
        self, meaning: Meaning, watchlist: str, term: str, about: str | None, context: str
    ) -> Resemblance | None:
        """How `context` (a hit of `term`, masked as senses.context masks it) compares
        with the lesson of its watchlist and term; None when there is none, or the
        context does not read as English (the model reads English)."""
        lesson = self.by_term.get((watchlist, term))
        if lesson is None or not lesson.examples or not english(context):
            return None
        rejected, kept = self._vectors_of(meaning, watchlist, term, lesson)
        v = meaning.vectors([context])[0]
        scores = rejected @ v
        nearest = int(np.argmax(scores))
        similarity = float(scores[nearest])
        counter, what = -1.0, "nothing kept yet"
        if len(kept):
            kept_scores = kept @ v
            counter, what = float(kept_scores.max()), "an alert kept"
        if about is not None:
            about_score = float(meaning.vectors([about])[0] @ v)
            if about_score >= counter:
                counter, what = about_score, "its about"
        suppressed = similarity >= FLOOR and similarity > counter + MARGIN
        return Resemblance(lesson.examples[nearest], similarity, counter, what, suppressed)

    def _vectors_of(
        self, meaning: Meaning, watchlist: str, term: str, lesson: Lesson
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The lesson's vectors, read once per version: the standing alerts can be many."""
        key = (watchlist, term)
        if key not in self._vectors:
            rejected = meaning.vectors([e.context for e in lesson.examples])
            kept = (
                meaning.vectors(list(lesson.standing))
                if lesson.standing
                else np.zeros((0, rejected.shape[1]), dtype=np.float32)
            )
            self._vectors[key] = (rejected, kept)
        return self._vectors[key]
