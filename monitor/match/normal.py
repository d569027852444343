"""Text normal forms: what text an article is matched on, and what each word is compared
as.

Two layers. `clean` makes the text itself safe to tokenise and quote: Unicode
compatibility forms (NFKC: non-breaking spaces, ligatures, full-width letters), soft
hyphens and zero-width spaces dropped, Unicode hyphens as "-". `fold` is what a word is
compared as: case folded, accents and letter forms taken off Latin, Greek and Cyrillic
letters ("Erdoğan" = "Erdogan", "Løkke" = "Lokke", "Šefčovič" = "Sefcovic"), curly
apostrophes straight, the dots out of initials and abbreviations ("J.D." = "JD", "Jr." =
"Jr"). `norm` adds the lemma
of an English word from spaCy's own lookup table (spacy-lookups-data: "embargoed" =
"embargo", "sanctioned" = "sanction", "policies" = "policy"), and a plural folded off a
word the table does not know.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from functools import cache, lru_cache
from typing import Any

from spacy.language import Language
from spacy.util import compile_prefix_regex, load_language_data, registry

from monitor.models import Item

MAX_TEXT = 100_000
_SENTENCE_MARK = re.compile(r"[.!?…。！？](?=[\"'”’)\]]*\s)|[。！？]|\n")
_WORD_BEFORE = re.compile(r"[^\W\d_][\w.]*$")
_WORD_AFTER = re.compile(r"[\"'”’)\]\s]*([^\W\d_]+)")
# Abbreviations that stand before a name or a number and so never end a sentence.
_BEFORE_NAMES = frozenset(
    """mr mrs ms dr st gen sen rep gov lt col capt prof rev sgt maj adm cmdr fr hon pres
    supt insp no vs""".split()
)
# Abbreviations a sentence may end with ("in the U.S. The next day"), told apart by the
# word after them: a sentence opener below, where a name or a common noun rarely stands.
_AFTER_ONLY = frozenset("jan feb mar apr jun jul aug sep sept oct nov dec approx est".split())
_SENTENCE_OPENERS = frozenset(
    """the a an and but or so yet if when while as after before it its he his she her they
    their we our i this that these those there then in on at for from by with however
    meanwhile""".split()
)
_STEM_KEEP = frozenset(("news", "series", "species", "means", "politics", "economics", "physics"))
_DROP = dict.fromkeys(map(ord, "\u00ad\u200b\u2060\ufeff"), None)
_HYPHENS = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2212"), "-")
_CLEAN = {**_DROP, **_HYPHENS}
_APOSTROPHES = dict.fromkeys(map(ord, "\u2019\u2018\u02bc\u2032`´"), "'")
# Combining marks come off letters of these scripts only: in Devanagari, Thai or
# Japanese kana a mark is part of the letter.
_FOLDED_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC", "ARABIC")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_DOTTED = re.compile(r"^(?:[^\W\d_]+\.)+[^\W\d_]*$")


# French and Italian elide an article onto the next word: "d’Edward", "l'NSA".
_ELISION = r"(?:[Qq]u|[CcDdJjLlMmNnSsTt])['’](?=[^\W\d_])"
_TOKENIZER_CACHE = 200_000
_NORM_CACHE = 100_000


def prepare(nlp: Language) -> None:
    """Readies a pipeline's tokenizer for matching: elided articles split off, and a
    cache large enough for a big watchlist's words as well as an article's (spaCy caches
    10,000 chunks and then stops caching)."""
    tokenizer: Any = nlp.tokenizer
    current = getattr(tokenizer.prefix_search, "__self__", None)
    if isinstance(current, re.Pattern) and current.pattern.startswith("^" + _ELISION):
        return
    prefixes = [_ELISION, *(nlp.Defaults.prefixes or ())]
    tokenizer.prefix_search = compile_prefix_regex(prefixes).search
    tokenizer.max_cache_size = max(tokenizer.max_cache_size, _TOKENIZER_CACHE)


def clean(text: str) -> str:
    """The text as it is tokenised and quoted: compatibility forms composed, invisible
    characters dropped."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).translate(_CLEAN)


def scan_text(item: Item) -> str:
    """What an article is matched on: the title, a blank line and the body (with the
    linked page's article text, when it was read), cleaned and capped."""
    return clean(f"{item.title}\n\n{item.text}"[:MAX_TEXT])


@cache
def _letter(ch: str) -> str:
    """One character, case folded and without the marks on a Latin, Greek, Cyrillic or
    Arabic letter. Letters that do not decompose ("ø", "ł", "ı", "æ") take the base
    letters their Unicode name gives ("LATIN SMALL LETTER O WITH STROKE")."""
    out: list[str] = []
    for c in unicodedata.normalize("NFKD", ch.casefold()):
        if unicodedata.combining(c):
            base = unicodedata.name(out[-1], "") if out else ""
            if base.startswith(_FOLDED_SCRIPTS):
                continue
        out.append(c)
    folded = unicodedata.normalize("NFC", "".join(out))
    name = unicodedata.name(folded, "") if len(folded) == 1 else ""
    if name.startswith("LATIN SMALL ") and not folded.isascii():
        base = name.split(" WITH ")[0].split()[-1]
        if base.isascii() and base.isalpha() and len(base) <= 2:
            folded = base.lower()
    return folded.translate(_APOSTROPHES)


def fold(text: str) -> str:
    """What text is compared as: case folded, accents and letter forms off, straight
    apostrophes. Letter by letter, so a word's fold is found in the fold of any text
    that holds the word."""
    if text.isascii():
        return text.lower().replace("`", "'")
    return _NON_ASCII.sub(_fold_run, text).lower().replace("`", "'")


def _fold_run(m: re.Match[str]) -> str:
    return "".join(map(_letter, m.group()))


def fold_keeping_capitals(text: str) -> str:
    """`fold` with the capitals kept: a character that is not lower case folds to capitals
    ("Ébola": "Ebola", "ÉBOLA": "EBOLA"). Where `fold` gives a letter, this gives that
    letter or its capital: the text where the prefilter looks for the keys that count
    only after a capital."""
    if text.isascii():
        return text.replace("`", "'")
    return _NON_ASCII.sub(_capitals_run, text).replace("`", "'")


def _capitals_run(m: re.Match[str]) -> str:
    return "".join(map(_capital_letter, m.group()))


@cache
def _capital_letter(ch: str) -> str:
    return _letter(ch) if ch.islower() else _letter(ch).upper()


@cache
def _lemmas() -> dict[str, str]:
    """spaCy's English lemma lookup table, as spacy-lookups-data ships it."""
    path = registry.lookups.get("en")["lemma_lookup"]
    table: dict[str, str] = dict(load_language_data(path))
    return {k: v for k, v in table.items() if k.isascii() and k.isalpha()}


@cache
def inflections() -> dict[str, frozenset[str]]:
    """For each lemma of the table, the words that have it ("go": went, gone, goes)."""
    out: dict[str, set[str]] = {}
    for word, lemma in _lemmas().items():
        out.setdefault(lemma, set()).add(word)
    return {lemma: frozenset(words) for lemma, words in out.items()}


def stem(word: str) -> str:
    """Harman's S-stemmer on lower case: plural and singular meet, little else moves.
    The stem, less a final "y", always starts the lower-cased word."""
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


def sentence_ends(text: str, start: int = 0, stop: int | None = None) -> Iterator[int]:
    """The offsets just past each sentence end in text[start:stop]: a full stop, a
    question or exclamation mark before a space, or a line break. A full stop after an
    abbreviation ends no sentence ("the U.S. and Iran", "Mr. Trump", "Jan. 5"): one
    before a name (Mr., Dr., Gen.) never does; one after initials (U.S., U.K., J.) or a
    month does only when a sentence opener ("The", "It", "But") follows. The
    compromise: "in the U.S. Congress" stays one sentence, and so, wrongly, does a
    sentence ending "in the U.S." followed by one starting with a name."""
    end = len(text) if stop is None else stop
    for m in _SENTENCE_MARK.finditer(text, start, end):
        if m.group() != "." or not _abbreviation(text, m.start()):
            yield m.end()


def sentence_end(text: str, start: int, stop: int | None = None) -> int | None:
    """The offset just past the first sentence end in text[start:stop], if any."""
    return next(sentence_ends(text, start, stop), None)


def _abbreviation(text: str, dot: int) -> bool:
    """Whether the full stop at `dot` closes an abbreviation within a sentence."""
    before = _WORD_BEFORE.search(text, max(0, dot - 12), dot)
    if before is None:
        return False
    word = before.group().lower()
    if word in _BEFORE_NAMES:
        return True
    initials = len(word.replace(".", "")) <= 3 and all(len(p) == 1 for p in word.split("."))
    if not (initials and before.group()[:1].isupper()) and word not in _AFTER_ONLY:
        return False
    after = _WORD_AFTER.match(text, dot + 1)
    return (
        after is None or after.group(1).lower() not in _SENTENCE_OPENERS or after.group(1).islower()
    )


@lru_cache(maxsize=_NORM_CACHE)
def norm(word: str) -> str:
    """What a word is compared as: folded, its English lemma where spaCy's lookup table
    knows one, else its plural folded; initials and abbreviations without their dots."""
    w = fold(word)
    if "." in w and _DOTTED.match(w):
        return w.replace(".", "")
    if not w.isascii() or not w.isalpha():
        return w
    return _lemmas().get(w) or stem(w)
