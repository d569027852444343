"""The prior: how ambiguous a word is before any evidence, from wordfreq's frequencies
(a maintained source that ships its data), not from a hand-written list.

A surname that is rare as a word ("Stoltenberg", "Kishida") names few people and is
seldom anything else, so less evidence carries it; one that is a common word or a
common name ("Rice", "Young", "Price", "Austin", "Li") needs more. The frequency is
wordfreq's Zipf scale: log10 of occurrences per billion words, about 1 for a rare name
and 7 for "the".
"""

from __future__ import annotations

from functools import cache

from wordfreq import zipf_frequency

DISTINCTIVE = 3.0  # below: rare as a word, one piece of evidence is enough
COMMON = 5.0  # at or above: among the commonest words ("young", "price"), three are needed


@cache
def common_word(word: str, lang: str = "en") -> float:
    """The word's Zipf frequency in `lang` (0 for a word wordfreq has never seen)."""
    return float(zipf_frequency(word, lang))


def needed(word: str) -> tuple[int, float]:
    """The evidence a short form needs, by how common the word is: 1, 2 or 3; and the
    frequency it was judged on."""
    zipf = common_word(word.lower())
    return (1 if zipf < DISTINCTIVE else 2 if zipf < COMMON else 3), zipf
