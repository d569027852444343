"""Phrases: every term of every watchlist in one table, keyed on its words' normal forms,
so a pass costs about the same for ten terms as for ten thousand; and the finds of one
article.

The table is a dict from a phrase's NORM ids to its rules, and, for each first word, the
lengths of the phrases it starts: an article is matched by looking up, at each word, the
runs of those lengths. spaCy's PhraseMatcher finds the same spans in the same order (by
start, then by length), but its trie holds a node of its own per word of every phrase:
for 50,000 entities about 200 MB, against about 10 MB for the lengths here.

Which forms a term is written in is match/forms.py's; here is what makes them cheap: a
prefix form (`hack*`) becomes a phrase for every word of the vocabulary that begins with
it as the word is first seen, so it costs nothing per article.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any, NamedTuple

from spacy.attrs import IS_SPACE, NORM, ORTH
from spacy.language import Language
from spacy.strings import get_string_id
from spacy.tokens import Doc

from monitor.config import Watchlist
from monitor.match import forms
from monitor.match.finds import Found, Role, Rule, Scan
from monitor.match.normal import fold, inflections, norm, scan_text, sentence_end
from monitor.match.scripts import Unspaced
from monitor.models import Item

# Roles that can make a match on their own; the others only weigh or veto one.
_PRIMARY = frozenset(Role) - {Role.EXCLUDE, Role.CONTEXT, Role.NONE}
_LEAD_CHARS = 300
_LCP_KEY = 3  # a common start shorter than this is a weaker key than the words themselves
_FLUSH = 10_000  # phrases tokenised in one doc


# folded prefix -> (words before it, rule, most letters after it)
Prefixes = dict[str, list[tuple[tuple[str, ...], Rule, int | None]]]


class Tables(NamedTuple):
    """What a Phrases is built into from its watchlists, and all that a scan reads: kept
    between processes by match/stored.py, as a build for 50,000 entities takes seconds."""

    rules: dict[tuple[int, ...], tuple[Rule, ...]]
    lengths: dict[int, tuple[int, ...]]
    keys: set[str]
    prefixes: Prefixes
    unspaced: dict[str, list[Rule]]
    capital_keys: set[str]


def _completions(table: Prefixes, lengths: Sequence[int], word: str) -> Iterator[tuple[str, Rule]]:
    """The phrases of the prefix forms in `table` (of these prefix `lengths`, shortest
    first) that `word` completes, with their rules."""
    folded = fold(word)
    for length in lengths:
        if length > len(folded):
            break
        for before, rule, most in table.get(folded[:length], ()):
            if most is None or len(folded) - length <= most:
                yield " ".join([*before, word]), rule


class Phrases:
    """The rules of a set of watchlists, and where they stand in an article."""

    def __init__(
        self, watchlists: Sequence[Watchlist], nlp: Language, tables: Tables | None = None
    ) -> None:
        """Built from the watchlists, or taken from `tables` built from them before."""
        self._nlp = nlp
        self._normalised: set[int] = set()
        # each phrase's words' NORM ids -> its rules
        self._rules: dict[tuple[int, ...], tuple[Rule, ...]] = {}
        # a phrase's first NORM id -> the lengths of the phrases it starts, shortest first
        self._lengths: dict[int, tuple[int, ...]] = {}
        self._length_sets: dict[tuple[int, ...], tuple[int, ...]] = {}  # one copy of each
        self._keyed: set[tuple[tuple[int, ...], bool]] = set()  # while building: (ids, capital)
        self._word_norms: dict[str, int] = {}  # while building
        self._norm_texts: dict[int, str] = {}  # while building: what _norm_of's ids stand for
        self._unspaced = Unspaced()
        self._prefixes: Prefixes = {}  # prefix forms
        self._prefix_lengths: list[int] = []
        self.keys: set[str] = set()  # for the prefilter: one of them is in any match
        self.capital_keys: set[str] = set()  # or one of these, after a capital
        self._pending: list[tuple[str, Rule, bool]] | None = []
        if tables is None:
            forms.add_watchlists(self, watchlists)
            self._flush()
            return
        # a word the build normalised is normalised again when an article first holds it,
        # as any word: its prefix forms' phrases are in the tables already
        self._rules, self._lengths, self.keys, self._prefixes, _, self.capital_keys = tables
        self._length_sets = {lengths: lengths for lengths in self._lengths.values()}
        self._prefix_lengths = sorted({len(p) for p in self._prefixes})
        for phrase, rules in tables.unspaced.items():
            for rule in rules:
                self._unspaced.add(phrase, rule)
        self._pending = None

    def tables(self) -> Tables:
        """What this was built into (rebuilt the same from the same watchlists)."""
        unspaced, capital = self._unspaced.rules, self.capital_keys
        return Tables(self._rules, self._lengths, self.keys, self._prefixes, unspaced, capital)

    def add_unspaced(self, phrase: str, rule: Rule) -> None:
        """A term in a script written without spaces: found as a substring."""
        self._unspaced.add(phrase, rule)
        if rule.role in _PRIMARY:
            self.keys.add(fold(phrase))

    def add_prefix(self, before: str, rule: Rule, most: int | None) -> None:
        """A prefix form: its last word is a prefix; words of the vocabulary that begin
        with it become phrases as they are first seen."""
        words = forms.words_of(before) or [before]
        prefix = fold(words[-1])
        self._prefixes.setdefault(prefix, []).append((tuple(words[:-1]), rule, most))
        if rule.role in _PRIMARY:
            self.keys.add(max([prefix, *(_word_key(norm(w)) for w in words[:-1])], key=len))
        for orth in list(self._normalised):  # words already seen
            self._expand(self._nlp.vocab[orth].orth_, prefixes={prefix})

    def _expand(self, word: str, prefixes: set[str] | None = None) -> None:
        lengths = self._prefix_lengths if prefixes is None else [len(p) for p in prefixes]
        for phrase, rule in _completions(self._prefixes, lengths, word):
            self.add(phrase, rule, key=False)

    def add(self, phrase: str, rule: Rule, key: bool = True) -> None:
        if self._pending is not None:  # while building: tokenised all at once in _flush
            self._pending.append((phrase, rule, key))
            return
        pattern = self._normalise(self._nlp.make_doc(phrase))
        self._add_pattern([t.norm for t in pattern if not t.is_space], rule, key)

    def _flush(self) -> None:
        """Tokenises the watchlists' phrases: one of plain words (letters only, no
        tokenizer exception) word by word, the others in one doc, one phrase a line; one
        tokenizer call and one Doc instead of one each per phrase."""
        pending, self._pending = self._pending or [], None
        self._prefix_lengths = sorted({len(p) for p in self._prefixes})
        tokenizer: Any = self._nlp.tokenizer
        special = tokenizer.rules or {}
        rest = []
        for phrase, rule, key in pending:
            words = phrase.split(" ")
            if all(w.isalpha() and w not in special for w in words):
                self._add_pattern([self._norm_of(w) for w in words], rule, key)
            else:
                rest.append((phrase, rule, key))
        strings = self._nlp.vocab.strings
        for at in range(0, len(rest), _FLUSH):
            chunk = rest[at : at + _FLUSH]
            doc = self._normalise(tokenizer("\n".join(p for p, _, _ in chunk)))
            norms = doc.to_array(NORM).tolist()
            orths = doc.to_array(ORTH).tolist()
            spaces = {i for i, space in enumerate(doc.to_array(IS_SPACE).tolist()) if space}
            breaks = [i for i in sorted(spaces) if "\n" in strings[orths[i]]]
            starts, ends = [0] + [b + 1 for b in breaks], [*breaks, len(doc)]
            for (_, rule, key), start, end in zip(chunk, starts, ends, strict=True):
                ids = [norms[i] for i in range(start, end) if i not in spaces]
                self._add_pattern(ids, rule, key)
        self._word_norms, self._norm_texts = {}, {}
        self._keyed = set()

    def _norm_of(self, word: str) -> int:
        """A plain word's NORM id, without a vocabulary entry (a lexeme costs about 600
        bytes and 70 µs) or its norm stored (200 bytes): the word is normalised as any
        other when an article first holds it. One that completes a prefix form is
        normalised now, as an article's word would be then: the phrases it completes hold
        its lexeme anyway, and _normalise makes them, once."""
        known = self._word_norms.get(word)
        if known is None:
            text = norm(word)
            known = self._word_norms[word] = int(get_string_id(text))
            self._norm_texts[known] = text
            if self._prefix_lengths and any(
                _completions(self._prefixes, self._prefix_lengths, word)
            ):
                self._normalise(self._nlp.make_doc(word))
        return known

    def _add_pattern(self, ids: list[int], rule: Rule, key: bool) -> None:
        if not ids:
            return
        ids_of = tuple(ids)
        rules = self._rules.get(ids_of)
        if rules is None:
            self._rules[ids_of] = (rule,)
            lengths = self._lengths.get(ids[0], ())
            if len(ids) not in lengths:
                longer = tuple(sorted((*lengths, len(ids))))
                self._lengths[ids[0]] = self._length_sets.setdefault(longer, longer)
        elif rule not in rules:
            self._rules[ids_of] = (*rules, rule)
        capital = _acronym(rule, ids)
        if key and rule.role in _PRIMARY and (ids_of, capital) not in self._keyed:
            self._keyed.add((ids_of, capital))
            strings, texts = self._nlp.vocab.strings, self._norm_texts
            words = [w for w in (texts.get(i) or strings[i] for i in ids) if _is_word(w)]
            _keys_into(self.keys, self.capital_keys if capital else None, words)

    def _normalise(self, doc: Doc) -> Doc:
        """Sets each new word's NORM, once per vocabulary entry, and makes the phrases of
        the prefix forms it completes."""
        seen = self._normalised
        vocab = self._nlp.vocab
        for orth in set(doc.to_array(ORTH).tolist()) - seen:
            seen.add(orth)
            lexeme = vocab[orth]
            lexeme.norm_ = norm(lexeme.orth_)
            if self._prefix_lengths and lexeme.is_alpha:
                self._expand(lexeme.orth_)
        return doc

    def scan(self, item: Item, wanted: set[int]) -> Scan:
        """The article's text and doc, and the finds of the watchlists in `wanted`."""
        title = item.title
        text = scan_text(item)
        doc = self._normalise(self._nlp.make_doc(text))
        found: dict[int, list[Found]] = defaultdict(list)
        matches = [
            (rule, start, end)
            for start, end, rules in self._spans(doc.to_array(NORM).tolist())
            for rule in rules
            if rule.wl in wanted
        ]
        # a short form inside its own entity's full name ("Blinken" in "Antony Blinken")
        # is that name, nothing more: left out here, it costs nothing later
        names: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        for rule, start, end in matches:
            if rule.role in (Role.NAME, Role.ALT):
                names[(rule.wl, rule.index)].append((start, end))
        for rule, start, end in matches:
            if rule.role == Role.SHORT and any(
                s <= start and end <= e for s, e in names.get((rule.wl, rule.index), ())
            ):
                continue
            begin, finish = doc[start].idx, doc[end - 1].idx + len(doc[end - 1])
            found[rule.wl].append(Found(rule, start, end, begin, finish, text[begin:finish]))
        for begin, finish, rules in self._unspaced.finditer(text):
            span = doc.char_span(begin, finish, alignment_mode="expand")
            if span is None:
                continue
            for rule in rules:
                if rule.wl in wanted:
                    found[rule.wl].append(
                        Found(rule, span.start, span.end, begin, finish, text[begin:finish])
                    )
        body_start = len(title) + 2
        lead = sentence_end(text, body_start + 1)
        lead_end = min(len(text) if lead is None else lead, body_start + _LEAD_CHARS)
        return Scan(item, text, len(title), lead_end, doc, found)

    def _spans(self, norms: list[int]) -> Iterator[tuple[int, int, tuple[Rule, ...]]]:
        """Each run of words that is a phrase, with its rules: by start, then by length."""
        lengths, rules, words = self._lengths, self._rules, len(norms)
        for start, first in enumerate(norms):
            for length in lengths.get(first, ()):
                if start + length > words:
                    break
                found = rules.get(tuple(norms[start : start + length]))
                if found is not None:
                    yield start, start + length, found


def _acronym(rule: Rule, ids: Sequence[int]) -> bool:
    """Whether a phrase is one word of an acronym, which counts only after a capital
    (`Rule.needs_capital`). Acronyms only: the keys of a capitalised name (surnames by
    the thousand in a large list) would add half again to the regular expressions
    compiled at start-up."""
    return len(ids) == 1 and rule.needs_capital and rule.source.isupper()


def _keys_into(keys: set[str], capital: set[str] | None, norms: Sequence[str]) -> None:
    """Adds a phrase's keys (`norms`: its words') to `keys`, or to `capital` where given
    and they can be looked for after a capital only: the one norm starts with a letter,
    so does the fold of every word with that norm, and each key starts that fold; ASCII,
    so each folded letter's capital is one letter too."""
    found = _phrase_keys(norms)
    if (
        capital is not None
        and norms[:1]
        and norms[0][:1].isalpha()
        and all(k[:1].isalpha() and k.isascii() for k in found)
    ):
        capital |= found
    else:
        keys |= found


def _is_word(norm_text: str) -> bool:
    return norm_text.isalnum() or any(c.isalnum() for c in norm_text)


@cache
def _word_key(n: str) -> str:
    """A string every word with the norm `n` holds: the longest common start of the
    words with that lemma, and of the norm less a final "y" (the S-stemmer's plurals)."""
    forms = {n[:-1] if n.endswith("y") and len(n) > 1 else n, *inflections().get(n, ())}
    start: str = min(forms)
    end: str = max(forms)
    i = 0
    while i < min(len(start), len(end)) and start[i] == end[i]:
        i += 1
    return start[:i]


def _phrase_keys(norms: Sequence[str]) -> set[str]:
    """The keys of a phrase: the longest common start of its longest-keyed word, or,
    where that is short, every word with that word's lemma."""
    if not norms:
        return {""}
    if len(norms) == 1:
        best = norms[0]
        key = _word_key(best)
    else:
        key, best = max(((_word_key(n), n) for n in norms), key=lambda kn: len(kn[0]))
    if len(key) >= _LCP_KEY or key == best:
        return {key}
    return {best[:-1] if best.endswith("y") else best, *inflections().get(best, ())}
