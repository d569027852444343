"""The prefilter: tells, without spaCy, the articles that cannot match."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

_KEY_CHARS = 40


class Prefilter:
    """Tells, without spaCy, the articles that cannot match: most of a feed, usually.

    Each phrase that can make a match leaves one key: the longest of its word stems,
    less a final "y". That key is a substring of the lower-cased text of every word the
    matcher would take for that stem ("policy" and "policies" both hold "polic"), so an
    article whose lower-cased text holds no key cannot match. The keys are searched with
    one regular expression shaped as a trie, which costs about the same for ten keys as
    for ten thousand (a flat alternation of 200 keys already costs more than spaCy's
    scan). A non-ASCII key turns the filter off: lower-casing is not always letter by
    letter there."""

    def __init__(self, keys: set[str] | None) -> None:
        """`keys` None: every article is scanned."""
        self._pattern: re.Pattern[str] | None = None
        if keys is not None and all(k.isascii() and k for k in keys):
            # a key's prefix is a weaker key, still sound: it keeps the trie shallow
            self._pattern = re.compile(_trie({k[:_KEY_CHARS] for k in keys}) if keys else "(?!)")

    def may_match(self, text: str) -> bool:
        return self._pattern is None or self._pattern.search(text.lower()) is not None


def _trie(keys: Iterable[str]) -> str:
    """A regular expression matching any of the keys, branching a letter at a time."""
    root: dict[str, Any] = {}
    for key in keys:
        node = root
        for ch in key:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        if "" in node:  # a key ends here: any longer key through here holds it anyway
            return ""
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items())]
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return emit(root)


def key_of(norms: Sequence[str]) -> str:
    return max((n[:-1] if n.endswith("y") and len(n) > 1 else n for n in norms), key=len)
