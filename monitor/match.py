"""Match stage: decides which watchlists an entry is really about.

One PhraseMatcher holds every phrase of every watchlist, keyed on a cheap normal form
of each word (lower case, plural folded), so a pass costs about the same for ten terms
as for ten thousand, and "military dialogues" meets "military dialogue".

Full names and full alternatives count wherever they stand on token boundaries. A
short form (a surname, an acronym) is weighed on evidence, because "Li" is half of
China and "Kerry" is also a county:

- decisive: the full name earlier in the article (or anywhere, for a headline hit);
- a veto: a declared `exclude` phrase around it ("Qin dynasty");
- votes: the English NER model (+1 when it labels exactly that word with the type,
  -1 for another label, -2 when it sees a longer, different name), the word's shape
  (-2 when a capitalised non-title word is glued to it: "Kerry Washington",
  "County Kerry") and context (+1 per distinct `context` word or other watchlist term
  present, at most +2). The short form counts at a total of +2 or more: two pieces of
  evidence, because a small model alone labels "Vendor Qin" a PERSON as readily as
  the minister.

The model runs only for articles where such a vote is needed, in one batch per call.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spacy.attrs import ORTH
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc

from monitor.config import Entity, Topic, Watchlist
from monitor.models import Entry, Hit, Item, MatchResult

log = logging.getLogger(__name__)

NerLoader = Callable[[], Language | None]
MAX_TEXT = 100_000
_SNIPPET = 300
_LEAD_CHARS = 300
_NEEDED = 2
_TOKENIZER_CACHE = 200_000
_REPEATS_FOR_ABOUT = 3
_SENTENCE_END = re.compile(r"[.!?…](?=[\"'”’)\]]*\s)|\n")
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)
_STEM_KEEP = frozenset(("news", "series", "species", "means", "politics", "economics", "physics"))
# Words that may stand before a name without making it another name ("Premier Li").
_EVIDENCE_ROLES = frozenset(("name", "alt", "phrase", "all", "near_a", "near_b"))
_TITLES = frozenset(
    """mr mrs ms miss dr prof sir dame lord lady president vice prime premier minister
    secretary chancellor general gen admiral adm colonel col captain capt lieutenant
    senator sen representative rep governor gov mayor ambassador envoy chairman
    chairwoman chair director commissioner judge justice king queen prince princess pope
    cardinal bishop rev father sheikh emir deputy chief spokesman spokeswoman state
    defense defence foreign treasury finance trade climate special""".split()
)


# Roles that can make a match on their own; the others only weigh or veto one.
_PRIMARY = frozenset(("name", "alt", "short", "phrase", "all", "near_a", "near_b"))
_KEY_CHARS = 40


class _Prefilter:
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


def _key(norms: Sequence[str]) -> str:
    return max((n[:-1] if n.endswith("y") and len(n) > 1 else n for n in norms), key=len)


def scan_text(item: Item) -> str:
    """What an article is matched on: the title, a blank line and the body, capped."""
    return f"{item.title}\n\n{item.body}"[:MAX_TEXT]


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


@dataclass(frozen=True)
class _Rule:
    wl: int
    kind: str  # "entity" or "topic"
    index: int  # the entity's or topic's position in its watchlist
    role: str  # name alt short exclude context | phrase all none near_a near_b
    group: int = -1  # the all_of group

    def term(self, watchlists: Sequence[Watchlist]) -> str:
        wl = watchlists[self.wl]
        return (wl.entities[self.index] if self.kind == "entity" else wl.topics[self.index]).name


@dataclass(frozen=True)
class _Found:
    rule: _Rule
    tok_start: int
    tok_end: int
    start: int
    end: int
    text: str


@dataclass
class Verdict:
    """Everything known about one watchlist for one article, matched or not."""

    watchlist: Watchlist
    text: str  # the title, a blank line and the body: what hit offsets point into
    hits: list[Hit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    strength: str = "mention"
    matched: bool = False


@dataclass
class _Scan:
    item: Item
    text: str
    title_len: int
    lead_end: int
    doc: Doc
    found: dict[int, list[_Found]]  # by watchlist
    ner: Any = None


class Matcher:
    def __init__(
        self,
        watchlists: Sequence[Watchlist],
        nlp: Language,
        ner: NerLoader,
        *,
        prefilter: bool = True,  # False: every article through spaCy (to measure the scan)
    ) -> None:
        self.watchlists = list(watchlists)
        self._nlp = nlp
        self._ner = ner
        self._normalised: set[int] = set()
        # spaCy caches 10,000 tokenised chunks and then stops caching; a large watchlist
        # alone would fill that, leaving every article word uncached.
        tokenizer: Any = nlp.tokenizer
        tokenizer.max_cache_size = max(tokenizer.max_cache_size, _TOKENIZER_CACHE)
        self._phrases = PhraseMatcher(nlp.vocab, attr="NORM")
        self._rules: dict[int, list[_Rule]] = defaultdict(list)
        self._keys: set[str] = set()
        for wi, wl in enumerate(self.watchlists):
            for ei, entity in enumerate(wl.entities):
                self._add(entity.name, _Rule(wi, "entity", ei, "name"))
                name_words = {stem(w) for w in self._words(entity.name)}
                for alias in entity.aliases:
                    words = [stem(w) for w in self._words(alias)]
                    short = len(words) == 1 or set(words) <= name_words
                    self._add(alias, _Rule(wi, "entity", ei, "short" if short else "alt"))
                for phrase in entity.exclude:
                    self._add(phrase, _Rule(wi, "entity", ei, "exclude"))
                for phrase in entity.context:
                    self._add(phrase, _Rule(wi, "entity", ei, "context"))
            for ti, topic in enumerate(wl.topics):
                self._add_topic(wi, ti, topic)
        self._prefilter = _Prefilter(self._keys if prefilter else None)

    def _words(self, phrase: str) -> list[str]:
        return [t.text for t in self._nlp.make_doc(phrase) if not t.is_punct]

    def _add_topic(self, wi: int, ti: int, topic: Topic) -> None:
        for phrase in topic.phrases:
            self._add_variants(phrase, _Rule(wi, "topic", ti, "phrase"))
        for gi, group in enumerate(topic.all_of):
            for phrase in group:
                self._add_variants(phrase, _Rule(wi, "topic", ti, "all", gi))
        for phrase in topic.none_of:
            self._add_variants(phrase, _Rule(wi, "topic", ti, "none"))
        if topic.near is not None:
            for phrase in topic.near.a:
                self._add_variants(phrase, _Rule(wi, "topic", ti, "near_a"))
            for phrase in topic.near.b:
                self._add_variants(phrase, _Rule(wi, "topic", ti, "near_b"))

    def _add_variants(self, phrase: str, rule: _Rule) -> None:
        """Topic phrases also match their hyphen and spacing variants: "mil-to-mil",
        "mil to mil"; "cyber security", "cyber-security", "cybersecurity"."""
        words = phrase.replace("-", " ").split()
        variants = {phrase}
        if "-" in phrase or len(words) == 2:
            variants |= {" ".join(words), "-".join(words), "".join(words)}
        for variant in variants:
            self._add(variant, rule)

    def _add(self, phrase: str, rule: _Rule) -> None:
        pattern = self._normalise(self._nlp.make_doc(phrase))
        key = "term:" + " ".join(t.norm_ for t in pattern)
        match_id = self._nlp.vocab.strings.add(key)
        if match_id not in self._rules:
            self._phrases.add(key, [pattern])
        if rule not in self._rules[match_id]:
            self._rules[match_id].append(rule)
        if rule.role in _PRIMARY:
            self._keys.add(_key([t.norm_ for t in pattern]))

    def _normalise(self, doc: Doc) -> Doc:
        """Sets each new word's NORM to its stem, once per vocabulary entry."""
        seen = self._normalised
        vocab = self._nlp.vocab
        for orth in set(doc.to_array(ORTH).tolist()) - seen:
            seen.add(orth)
            lexeme = vocab[orth]
            lexeme.norm_ = stem(lexeme.lower_)
        return doc

    def match(
        self, entries: Sequence[Entry], feed: str | None = None
    ) -> list[tuple[Entry, list[MatchResult]]]:
        """For each entry, the watchlists it matches (entries matching none are left out)."""
        out = []
        entries = [e for e in entries if self._prefilter.may_match(scan_text(e.item))]
        for entry, verdicts in zip(
            entries, self._judge([e.item for e in entries], feed), strict=True
        ):
            results = [_result(v) for v in verdicts if v.matched]
            if results:
                out.append((entry, results))
        return out

    def explain(self, item: Item, feed: str | None = None) -> list[Verdict]:
        return self._judge([item], feed)[0]

    def _judge(self, items: Sequence[Item], feed: str | None) -> list[list[Verdict]]:
        active = [
            wi
            for wi, wl in enumerate(self.watchlists)
            if feed is None or wl.feeds is None or feed in wl.feeds
        ]
        scans = [self._scan(item, active) for item in items]
        needy = [s for s in scans if self._needs_ner(s)]
        if needy:
            model = self._ner()
            if model is None:
                for scan in needy:
                    scan.ner = False
            else:
                for scan, ner_doc in zip(needy, model.pipe(s.text for s in needy), strict=True):
                    scan.ner = ner_doc
        return [[self._decide(scan, wi) for wi in active] for scan in scans]

    def _scan(self, item: Item, active: Iterable[int]) -> _Scan:
        title = item.title
        text = scan_text(item)
        doc = self._normalise(self._nlp.make_doc(text))
        wanted = set(active)
        found: dict[int, list[_Found]] = defaultdict(list)
        for match_id, start, end in self._phrases(doc):
            first, last = doc[start], doc[end - 1]
            begin, finish = first.idx, last.idx + len(last.text)
            for rule in self._rules[match_id]:
                if rule.wl in wanted:
                    found[rule.wl].append(
                        _Found(rule, start, end, begin, finish, text[begin:finish])
                    )
        body_start = len(title) + 2
        lead = _SENTENCE_END.search(text, body_start + 1)
        lead_end = min(lead.end() if lead else len(text), body_start + _LEAD_CHARS)
        return _Scan(item, text, len(title), lead_end, doc, found)

    def _needs_ner(self, scan: _Scan) -> bool:
        for wi, found in scan.found.items():
            entities = self.watchlists[wi].entities
            for f in found:
                if f.rule.role != "short" or not entities[f.rule.index].type:
                    continue
                mine = _same_entity(f, found)
                if not _inside(f, mine, ("name", "alt", "exclude")) and not _name_earlier(
                    f, mine, scan.title_len
                ):
                    return True
        return False

    def _decide(self, scan: _Scan, wi: int) -> Verdict:
        wl = self.watchlists[wi]
        verdict = Verdict(wl, scan.text)
        found = scan.found.get(wi, [])
        hits: list[tuple[_Found, str]] = []
        groups: dict[tuple[str, int], list[_Found]] = defaultdict(list)
        for f in found:  # only the terms that hit: cost must not grow with the watchlist
            groups[(f.rule.kind, f.rule.index)].append(f)
        for (kind, index), mine in sorted(groups.items()):
            if kind == "topic":
                hits += [(f, "phrase") for f in _topic_hits(wl.topics[index], mine, verdict.notes)]
                continue
            entity = wl.entities[index]
            for f in mine:
                if f.rule.role in ("exclude", "context"):
                    continue
                if _inside(f, mine, ("exclude",)):
                    verdict.notes.append(
                        f"{f.text!r} at {f.start} ignored: inside an excluded "
                        f"phrase of {entity.name!r}"
                    )
                    continue
                if f.rule.role in ("name", "alt"):
                    hits.append((f, "name" if f.rule.role == "name" else "alias"))
                elif not _inside(f, mine, ("name", "alt")) and self._short_form_counts(
                    scan, f, entity, found, verdict.notes
                ):
                    hits.append((f, "short form"))
        verdict.hits = sorted(
            (
                Hit(
                    term=f.rule.term(self.watchlists),
                    kind=f.rule.kind,
                    rule=rule,
                    text=f.text,
                    field="title" if f.start < scan.title_len else "body",
                    start=f.start,
                    end=f.end,
                )
                for f, rule in hits
            ),
            key=lambda h: h.start,
        )
        if not verdict.hits:
            return verdict
        verdict.strength = _strength(verdict.hits, scan.lead_end)
        kinds = {h.kind for h in verdict.hits}
        missing = [k for k in wl.require if k not in kinds]
        if missing:
            verdict.notes.append(
                f"no match: the watchlist requires an {' and a '.join(missing)} hit as well"
            )
        elif wl.min_strength == "about" and verdict.strength != "about":
            verdict.notes.append(
                "no match: only a passing mention, and the watchlist wants articles about its terms"
            )
        else:
            verdict.matched = True
        return verdict

    def _short_form_counts(
        self, scan: _Scan, f: _Found, entity: Entity, found: list[_Found], notes: list[str]
    ) -> bool:
        where = f"short form {f.text!r} at {f.start}"
        mine = _same_entity(f, found)
        if _name_earlier(f, mine, scan.title_len):
            notes.append(f"{where} accepted: the full name {entity.name!r} appears in the article")
            return True
        if not entity.type and not entity.context:
            notes.append(f"{where} accepted: {entity.name!r} declares no type or context to check")
            return True
        other = _other_name_earlier(scan, f, mine)
        if other:
            notes.append(f"{where} rejected: it refers back to {other!r}, named earlier")
            return False
        votes: list[tuple[int, str]] = []
        if entity.type:
            votes.append(_ner_vote(scan.ner, f, entity.type))
        votes.append(_shape_vote(scan, f))
        context = {x.text.lower() for x in mine if x.rule.role == "context"}
        context |= {
            x.rule.term(self.watchlists)
            for x in found
            if x.rule.role in _EVIDENCE_ROLES and x not in mine
        }
        if context:
            votes.append((min(2, len(context)), f"context: {', '.join(sorted(context))}"))
        score = sum(v for v, _ in votes)
        reasons = "; ".join(f"{why} ({v:+d})" for v, why in votes if why) or "no evidence"
        verdict = "accepted" if score >= _NEEDED else "rejected"
        notes.append(f"{where} {verdict}: {reasons}; total {score:+d}, needs {_NEEDED:+d}")
        return score >= _NEEDED


def _same_entity(f: _Found, found: Iterable[_Found]) -> list[_Found]:
    return [o for o in found if o.rule.kind == "entity" and o.rule.index == f.rule.index]


def _inside(f: _Found, found: Iterable[_Found], roles: tuple[str, ...]) -> bool:
    """Whether another find of one of `roles` covers f ("Qin" inside "Qin dynasty")."""
    return any(
        o is not f
        and o.rule.role in roles
        and o.start <= f.start
        and f.end <= o.end
        and (o.rule.role == "exclude" or (o.start, o.end) != (f.start, f.end))
        for o in found
    )


def _name_earlier(f: _Found, mine: Iterable[_Found], title_len: int) -> bool:
    """News style names a person in full before using the surname; a headline may use
    the surname first."""
    names = [o for o in mine if o.rule.role in ("name", "alt")]
    if f.start < title_len:
        return bool(names)
    return any(o.end <= f.start for o in names)


def _other_name_earlier(scan: _Scan, f: _Found, mine: Iterable[_Found]) -> str | None:
    """News style names a person in full, then by surname: a bare short form after
    another full name with the same word ("Robin Li ... Li said") means that person."""
    for earlier in mine:
        if earlier.rule.role == "short" and earlier.end <= f.start:
            vote, _ = _shape_vote(scan, earlier)
            if vote < 0:
                return _glued_name(scan, earlier)
    return None


def _glued_name(scan: _Scan, f: _Found) -> str:
    doc = scan.doc
    start, end = f.tok_start, f.tok_end
    if start > 0 and doc[start - 1].is_title:
        start -= 1
    if end < len(doc) and doc[end].is_title:
        end += 1
    return doc[start:end].text


def _ner_vote(ner_doc: Any, f: _Found, label: str) -> tuple[int, str]:
    if ner_doc is False or ner_doc is None:
        return 0, "no English model to check the type"
    for ent in ner_doc.ents:
        if ent.start_char < f.end and f.start < ent.end_char:
            words = [w for w in ent.text.split() if w.lower().rstrip(".") not in _TITLES]
            core = _POSSESSIVE.sub("", " ".join(words)).lower()
            if core != f.text.lower():
                return -2, f"NER sees the longer name {ent.text!r}"
            if ent.label_ != label:
                return -1, f"NER labels {ent.text!r} {ent.label_}, not {label}"
            return 1, f"NER labels {ent.text!r} {label}"
    return 0, f"NER finds no entity at {f.text!r}"


def _shape_vote(scan: _Scan, f: _Found) -> tuple[int, str]:
    """A capitalised non-title word glued to the short form makes it part of another name.
    Title Case headlines capitalise every word, so they tell nothing."""
    doc = scan.doc
    if f.start < scan.title_len:
        words = [t for t in doc if t.idx < scan.title_len and t.is_alpha]
        if words and sum(t.is_title for t in words) / len(words) > 0.6:
            return 0, ""
    after = doc[f.tok_end] if f.tok_end < len(doc) else None
    before = doc[f.tok_start - 1] if f.tok_start > 0 else None
    for neighbour in (after, before):
        if (
            neighbour is not None
            and neighbour.is_title
            and neighbour.is_alpha
            and neighbour.lower_ not in _TITLES
            and not (neighbour is before and _sentence_initial(doc, f.tok_start - 1))
        ):
            return -2, f"glued to {neighbour.text!r}, so part of another name"
    return 0, ""


def _sentence_initial(doc: Doc, i: int) -> bool:
    """Capitals at the start of a sentence or a line say nothing about names."""
    if i == 0:
        return True
    prev = doc[i - 1]
    return prev.text in (".", "!", "?", '"', "“", ":") or (prev.is_space and "\n" in prev.text)


def _topic_hits(topic: Topic, found: list[_Found], notes: list[str]) -> list[_Found]:
    by_role: dict[str, list[_Found]] = defaultdict(list)
    for f in found:
        by_role[f.rule.role].append(f)
    if not found:
        return []
    if by_role["none"]:
        notes.append(f"topic {topic.name!r} vetoed by {by_role['none'][0].text!r}")
        return []
    if topic.phrases and not by_role["phrase"]:
        return []
    groups = {f.rule.group for f in by_role["all"]}
    if any(gi not in groups for gi in range(len(topic.all_of))):
        return []
    hits = by_role["phrase"] + by_role["all"]
    if topic.near is not None:
        pairs = [
            (a, b)
            for a in by_role["near_a"]
            for b in by_role["near_b"]
            if max(a.tok_start - b.tok_end, b.tok_start - a.tok_end, 0) <= topic.near.within
        ]
        if not pairs:
            return []
        hits += [x for pair in pairs[:1] for x in pair]
    return hits


def _strength(hits: Sequence[Hit], lead_end: int) -> str:
    """ "about" when a term is in the headline or the lead, or repeated; else "mention"."""
    if any(h.field == "title" or h.start < lead_end for h in hits):
        return "about"
    counts: dict[str, int] = defaultdict(int)
    for h in hits:
        counts[h.term] += 1
    return "about" if max(counts.values()) >= _REPEATS_FOR_ABOUT else "mention"


def _result(verdict: Verdict) -> MatchResult:
    text = verdict.text
    anchor = next((h for h in verdict.hits if h.field == "body"), verdict.hits[0])
    start, end = _sentence_around(text, anchor.start, anchor.end)
    snippet = text[start:end]
    lead = len(snippet) - len(snippet.lstrip())
    highlights = tuple(
        (h.start - start - lead, h.end - start - lead)
        for h in verdict.hits
        if start <= h.start and h.end <= end
    )
    return MatchResult(
        watchlist=verdict.watchlist.name,
        channel=verdict.watchlist.channel,
        hits=tuple(verdict.hits),
        snippet=snippet.strip(),
        highlights=highlights,
        strength=verdict.strength,
        evidence=tuple(verdict.notes),
    )


def _sentence_around(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence holding [start, end), trimmed to about _SNIPPET characters."""
    begin = max(0, start - _SNIPPET)
    for m in _SENTENCE_END.finditer(text, max(0, start - _SNIPPET), start):
        begin = m.end()
    stop = _SENTENCE_END.search(text, end)
    finish = stop.end() if stop else len(text)
    if finish - begin > _SNIPPET:
        begin = max(begin, start - _SNIPPET // 2)
        finish = min(finish, max(end, begin + _SNIPPET))
    return begin, finish
