"""The prefilter: tells, without spaCy, the articles that cannot match."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from monitor.match.normal import fold, fold_keeping_capitals

_KEY_CHARS = 40


class Prefilter:
    """Tells, without spaCy, the articles that cannot match: most of a feed, usually.

    Each phrase that can make a match leaves keys: strings of which one is found in the
    folded text (`normal.fold`, dots taken out) of any article the matcher would take
    for that phrase. For a word that is the longest common start of every word with the
    same lemma ("polic" for policy and policies; "went", "gone", "go"... each for go), for
    a prefix form what stands before the `*`, for a Chinese alias the alias itself. An
    article whose folded text holds no key cannot match. The keys are searched with one
    regular expression shaped as a trie, which costs about the same for ten keys as for
    ten thousand (a flat alternation of 200 keys already costs more than spaCy's
    scan).

    An acronym, which counts only where its first letter is a capital
    (`Rule.needs_capital`: "WHO", "THI", whose "who" and "this" are in every article),
    leaves `capital` keys instead: each starts the word, so it is looked for only where
    its first letter is a capital, in the text folded with its capitals kept
    (`normal.fold_keeping_capitals`)."""

    def __init__(self, keys: set[str] | None, capital: Iterable[str] = ()) -> None:
        """`keys` None: every article is scanned."""
        self._pattern: re.Pattern[str] | None = None
        self._capital: re.Pattern[str] | None = None
        if keys is not None:
            # a key's prefix is a weaker key, still sound: it keeps the trie shallow
            cut = {k.replace(".", "")[:_KEY_CHARS] for k in keys}
            if "" not in cut:
                self._pattern = re.compile(trie(cut) if cut else "(?!)")
                capitals = {k.replace(".", "")[:_KEY_CHARS] for k in capital}
                if capitals:
                    self._capital = re.compile(capital_trie(capitals), re.IGNORECASE)

    def may_match(self, text: str) -> bool:
        if self._pattern is None or self._pattern.search(searched(text)) is not None:
            return True
        return (
            self._capital is not None and self._capital.search(searched_capitals(text)) is not None
        )


def searched(text: str) -> str:
    """The text as keys are looked for in it."""
    return fold(text).replace(".", "")


def searched_capitals(text: str) -> str:
    """The text as capital keys are looked for in it."""
    return fold_keeping_capitals(text).replace(".", "")


def capital_trie(keys: Iterable[str]) -> str:
    """A regular expression, for re.IGNORECASE, matching any of the keys (each starting
    with an ASCII letter) where its first letter is a capital."""
    rests: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        rests[key[0]].add(key[1:])
    return "|".join(
        f"(?-i:{re.escape(first.upper())}){trie(rest)}" for first, rest in sorted(rests.items())
    )


def trie(keys: Iterable[str], longest: bool = False) -> str:
    """A regular expression matching any of the keys, branching a letter at a time.
    `longest`: at each place the longest key there (else the shortest is enough)."""
    root: dict[str, dict[str, object]] = {}
    for key in keys:
        node = root
        for ch in key:
            node = node.setdefault(ch, {})  # type: ignore[assignment]
        node[""] = {}

    def emit(node: dict[str, dict[str, object]]) -> str:
        if "" in node and not longest:  # a key ends here: a longer key holds it anyway
            return ""
        branches = [
            re.escape(ch) + emit(child)  # type: ignore[arg-type]
            for ch, child in sorted(node.items())
            if ch
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:
            return "(?:" + body + ")?"
        return body

    return emit(root)
