"""Forms: the ways a newsroom writes each term of a watchlist, each made a phrase with
its rule for match.Phrases to find.

Besides the words as written, a rule is made for each form a newsroom writes them in:
a name's hyphens as spaces ("Ocasio Cortez"), a Korean given name hyphenated ("Kim
Jong-un"), a two-word person's name family name first ("Takaichi Sanae"); a topic
phrase's hyphen, space and closed forms ("cyber-attack", "cyber attack", "cyberattack",
and a closed compound split where both halves are common English words); a prefix form
(`hack*`), which Phrases completes from the vocabulary as words are first seen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from monitor.config import Entity, Topic, Watchlist
from monitor.match.finds import Role, Rule
from monitor.match.names import name_parts
from monitor.match.normal import fold, norm
from monitor.match.prior import common_word
from monitor.match.scripts import INFLECTION_LETTERS, inflected_stem, non_latin
from monitor.match.scripts import unspaced as is_unspaced
from monitor.models import TermKind

_SPLIT = re.compile(r"[\s\-‐–]+")
_NAME_ALONE = 3  # letters a name needs to stand on its own
_SYLLABLE = 4  # letters: a Korean given name's syllables ("Jong Un", "Jae myung") are short
_COMPOUND_ZIPF = 3.5  # both halves of a closed compound at least this common in English


class Sink(Protocol):
    """Where the forms go (match.Phrases)."""

    def add(self, phrase: str, rule: Rule, key: bool = True) -> None: ...

    def add_prefix(self, before: str, rule: Rule, most: int | None) -> None: ...

    def add_unspaced(self, phrase: str, rule: Rule) -> None: ...


def add_watchlists(sink: Sink, watchlists: Sequence[Watchlist]) -> None:
    """Every form of every term of the watchlists, in their order."""
    for wi, wl in enumerate(watchlists):
        for ei, entity in enumerate(wl.entities):
            _entity(sink, wi, ei, entity)
        for ti, topic in enumerate(wl.topics):
            _topic(sink, wi, ti, topic)


def words_of(phrase: str) -> list[str]:
    """A phrase's words, as far as telling short forms from full names goes."""
    return [w for w in _SPLIT.split(phrase) if w.strip(".,;:'’()")]


def _entity(sink: Sink, wi: int, ei: int, entity: Entity) -> None:
    def rule(role: Role, form: str = "", source: str = "") -> Rule:
        return Rule(wi, TermKind.ENTITY, ei, role, form=form, source=source or entity.name)

    person = entity.type == "PERSON"
    _name(sink, entity.name, rule(Role.NAME), person)
    parts = name_parts(entity.name) if person else None
    name_norms = {norm(w) for w in words_of(entity.name)}
    declared = {norm(a) for a in entity.aliases}
    for alias in entity.aliases:
        words = [norm(w) for w in words_of(alias.rstrip("*"))]
        if non_latin(alias) and not non_latin(entity.name):
            # how that press writes the name: counts like the name
            _script(sink, alias, rule(Role.ALT, "another script", alias))
        elif len(words) == 1 or set(words) <= name_norms:
            _phrase(sink, alias, rule(Role.SHORT, source=alias))
        else:
            _name(sink, alias, rule(Role.ALT, source=alias), person)
    if parts is not None and parts.given:
        # two letters are too few for a name on its own ("Un" of Kim Jong Un, "Yi")
        for word, form in [(parts.family, "last name")] + [(g, "first name") for g in parts.given]:
            if len(word) >= _NAME_ALONE and norm(word) not in declared:
                sink.add(word, rule(Role.SHORT, form, word))
                declared.add(norm(word))
    for title in entity.titles:
        _phrase(sink, title, rule(Role.TITLE, "declared title", title))
    for phrase in entity.exclude:
        _phrase(sink, phrase, rule(Role.EXCLUDE, source=phrase))
    for phrase in entity.context:
        _phrase(sink, phrase, rule(Role.CONTEXT, source=phrase))


def _name(sink: Sink, name: str, rule: Rule, person: bool) -> None:
    """A name as written, its hyphens as spaces, a Korean given name hyphenated, and a
    two-word person's name family name first."""
    if is_unspaced(name):
        _script(sink, name, rule)
        return
    sink.add(name, rule)
    words = name.replace("-", " ").split()
    if "-" in name:
        sink.add(" ".join(words), _with(rule, "hyphen as space"))
    if person and len(words) >= 3 and all(len(w) <= _SYLLABLE for w in words[-2:]):
        sink.add(" ".join(words[:-2] + ["-".join(words[-2:])]), _with(rule, "hyphenated"))
    if person and len(words) == 2 and "-" not in name:
        sink.add(f"{words[1]} {words[0]}", _with(rule, "family name first"))


def _topic(sink: Sink, wi: int, ti: int, topic: Topic) -> None:
    def rule(role: Role, phrase: str, group: int = -1) -> Rule:
        return Rule(wi, TermKind.TOPIC, ti, role, group, source=phrase)

    for phrase in topic.phrases:
        _phrase(sink, phrase, rule(Role.PHRASE, phrase), variants=True)
    for gi, group in enumerate(topic.all_of):
        for phrase in group:
            _phrase(sink, phrase, rule(Role.ALL, phrase, gi), variants=True)
    for phrase in topic.none_of:
        _phrase(sink, phrase, rule(Role.NONE, phrase), variants=True)
    if topic.near is not None:
        for phrase in topic.near.a:
            _phrase(sink, phrase, rule(Role.NEAR_A, phrase), variants=True)
        for phrase in topic.near.b:
            _phrase(sink, phrase, rule(Role.NEAR_B, phrase), variants=True)


def _phrase(sink: Sink, phrase: str, rule: Rule, variants: bool = False) -> None:
    if phrase.endswith("*"):
        sink.add_prefix(phrase[:-1], _with(rule, f"prefix {phrase}"), None)
    elif is_unspaced(phrase) or non_latin(phrase):
        _script(sink, phrase, rule)
    elif variants:
        _variants(sink, phrase, rule)
    else:
        sink.add(phrase, rule)


def _script(sink: Sink, phrase: str, rule: Rule) -> None:
    """An alias or phrase in another script: a substring where words are not spaced,
    else a phrase whose Cyrillic last word may take an ending."""
    if phrase.endswith("*"):
        sink.add_prefix(phrase[:-1], _with(rule, f"prefix {phrase}"), None)
    elif is_unspaced(phrase):
        sink.add_unspaced(phrase, rule)
    else:
        sink.add(phrase, rule)
        words = words_of(phrase)
        stem = inflected_stem(fold(words[-1])) if words and not words[-1].isupper() else None
        if stem is not None:
            sink.add_prefix(
                " ".join([*words[:-1], stem]), _with(rule, "inflected"), INFLECTION_LETTERS
            )


def _variants(sink: Sink, phrase: str, rule: Rule) -> None:
    """Topic phrases also match their hyphen and spacing variants: "mil-to-mil",
    "mil to mil"; "cyber security", "cyber-security", "cybersecurity"; and a closed
    compound of two common words its open forms ("cyberattack": "cyber-attack")."""
    words = phrase.replace("-", " ").split()
    if len(words) == 1:
        split = _compound(words[0])
        if split:
            words = list(split)
    variants = {phrase}
    if "-" in phrase or len(words) == 2:
        variants |= {" ".join(words), "-".join(words), "".join(words)}
    for variant in sorted(variants):
        sink.add(variant, rule if variant == phrase else _with(rule, "spelt " + variant))


def _with(rule: Rule, form: str) -> Rule:
    return Rule(rule.wl, rule.kind, rule.index, rule.role, rule.group, form, rule.source)


def _compound(word: str) -> tuple[str, str] | None:
    """A closed compound's halves, where both are common English words ("cyber",
    "attack"); None for a word that is not one ("embargo", "tariff")."""
    w = word.lower()
    if not w.isalpha() or len(w) < 7:
        return None
    best = max(
        ((min(common_word(w[:i]), common_word(w[i:])), i) for i in range(3, len(w) - 2)),
        default=(0.0, 0),
    )
    return (w[: best[1]], w[best[1] :]) if best[0] >= _COMPOUND_ZIPF else None
