"""Text normal forms: what a word is compared as, and what text an article is matched on."""

from __future__ import annotations

import re

from monitor.models import Item

MAX_TEXT = 100_000
SENTENCE_END = re.compile(r"[.!?…](?=[\"'”’)\]]*\s)|\n")
_STEM_KEEP = frozenset(("news", "series", "species", "means", "politics", "economics", "physics"))


def scan_text(item: Item) -> str:
    """What an article is matched on: the title, a blank line and the body (with the
    linked page's article text, when it was read), capped."""
    return f"{item.title}\n\n{item.text}"[:MAX_TEXT]


def stem(word: str) -> str:
    """Harman's S-stemmer on lower case: plural and singular meet, little else moves.
    The stem, less a final "y", always starts the lower-cased word: the prefilter needs it."""
    w = word.lower()
    if len(w) <= 3 or w in _STEM_KEEP:
        return w
    if w.endswith("ies") and not w.endswith(("eies", "aies")):
        return w[:-3] + "y"
    if w.endswith("es") and not w.endswith(("aes", "ees", "oes")):
        return w[:-1]
    if w.endswith("s") and not w.endswith(("us", "ss")):
        return w[:-1]
    return w
