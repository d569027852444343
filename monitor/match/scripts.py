"""Scripts: where words are not spaced (Chinese, Japanese) or take endings (Cyrillic).

An alias or phrase in Han, kana or Hangul letters is found as a substring of the text,
since those languages write no space between words ("阿里巴巴领投"); a Hangul one must
start a word (Korean spaces its words, then glues particles on: "이재명은"). All of them
are searched with one regular expression shaped as a trie, so the cost does not grow
with their number.

A Cyrillic alias of four letters or more (not an all-capital acronym) also matches its
inflected forms: the alias less a final vowel or soft sign, and up to three letters more
("Орбан": "Орбаном"; "Сноуден": "Сноудена"; "Зеленский": "Зеленского"). An alias written
with `*` takes any ending.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from monitor.match.prefilter import trie

_UNSPACED = ("CJK UNIFIED", "CJK COMPATIBILITY", "HIRAGANA", "KATAKANA", "HANGUL")
_CYRILLIC_ENDING = "аяоеёиіїйыьуюєъ"
INFLECTION_LETTERS = 3
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def script_of(ch: str) -> str:
    return unicodedata.name(ch, "").split(" ")[0]


def unspaced(phrase: str) -> bool:
    """Whether a phrase is written in a script without spaces between words."""
    if phrase.isascii():
        return False
    return any(unicodedata.name(c, "").startswith(_UNSPACED) for c in phrase if not c.isascii())


def non_latin(phrase: str) -> bool:
    """Whether a phrase's letters are in another script than Latin."""
    if phrase.isascii():
        return False
    letters = [c for c in phrase if c.isalpha()]
    return bool(letters) and all(not c.isascii() and script_of(c) != "LATIN" for c in letters)


def inflected_stem(folded: str) -> str | None:
    """The stem a Cyrillic word's inflected forms start with, or None when the word does
    not inflect that way (another script, an acronym, a word too short)."""
    if len(folded) < 4 or not all(script_of(c) == "CYRILLIC" for c in folded if c.isalpha()):
        return None
    stem = folded
    while len(stem) > 3 and stem[-1] in _CYRILLIC_ENDING and len(folded) - len(stem) < 2:
        stem = stem[:-1]
    return stem


class Unspaced:
    """Phrases in unspaced scripts, and where they stand in a text."""

    def __init__(self) -> None:
        self._rules: dict[str, list[Any]] = {}
        self._pattern: re.Pattern[str] | None = None

    def add(self, phrase: str, rule: Any) -> None:
        rules = self._rules.setdefault(phrase, [])
        if rule not in rules:
            rules.append(rule)
        self._pattern = None

    def __bool__(self) -> bool:
        return bool(self._rules)

    @property
    def rules(self) -> dict[str, list[Any]]:
        return self._rules

    def finditer(self, text: str) -> Iterator[tuple[int, int, list[Any]]]:
        if not self._rules or text.isascii():
            return
        if self._pattern is None:
            self._pattern = re.compile(trie(self._rules, longest=True))
        for m in self._pattern.finditer(text):
            phrase = m.group()
            if _HANGUL.match(phrase) and m.start() > 0 and _HANGUL.match(text[m.start() - 1]):
                continue
            yield m.start(), m.end(), self._rules[phrase]
