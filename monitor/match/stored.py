"""The matcher's phrase tables kept on disk, so that a process cron starts does not build
them again from watchlists that have not changed: for 50,000 entities a build is 7 s of
CPU, reading them back 1-1.5 s.

One file holds the tables of the watchlists last built with it, so it is never larger
than one build (25 MB for 50,000 entities); tables of other watchlists replace it. Its
header holds a key, a SHA-256 of the watchlists and of all a build depends on besides
(the matching code, spaCy, its lookups, wordfreq, Python), and a SHA-256 of the rest; a
file of another key, or whose rest does not hash to its header or does not read as
tables, is built again and written anew. It is written whole to a temporary file beside
it and renamed over it: a reader finds the old file or the new one, never a part. The
tables are written with marshal, which holds builtin values only and runs nothing it
reads (a rule as its fields); the digest finds damage, not forgery: whoever can write the
data directory can write the SQLite database in it too.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import marshal
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from itertools import islice
from pathlib import Path
from typing import Any

from monitor.config import Watchlist
from monitor.heap import collector_paused
from monitor.match.finds import Role, Rule
from monitor.match.phrases import Tables
from monitor.models import TermKind

log = logging.getLogger(__name__)
_MAGIC = b"monitor matcher tables 1\n"
_BUILT_WITH = ("spacy", "spacy-lookups-data", "wordfreq")  # packages whose data a build reads
_SLICE = 10_000  # phrases written at a time
_LEFT_OVER = 600.0  # seconds after which a temporary file is a writer's that was killed
_KINDS = {kind.value: kind for kind in TermKind}
_ROLES = {role.value: role for role in Role}


def key(watchlists: Sequence[Watchlist]) -> str:
    """What tables are built from, as a SHA-256: equal for equal watchlists, built by the
    same code with the same packages."""
    out = hashlib.sha256(_code())
    for part in (wl.model_dump_json().encode() for wl in watchlists):
        out.update(len(part).to_bytes(8, "big") + part)  # no two lists of parts run together
    return out.hexdigest()


@functools.cache
def _code() -> bytes:
    """A digest of the matching code and of the versions of what it builds with."""
    out = hashlib.sha256(sys.version.encode())  # marshal's format is Python's own
    for name in _BUILT_WITH:
        try:
            out.update(f"{name} {metadata.version(name)}\n".encode())
        except metadata.PackageNotFoundError:
            out.update(f"{name} -\n".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        out.update(source.name.encode() + b"\n" + source.read_bytes())
    return out.digest()


def load(path: Path, wanted: str) -> Tables | None:
    """The tables stored at `path` if they are those of key `wanted`; None if there are
    none, or others, or the file is damaged (it is then written anew after a build)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(_MAGIC)
    stored, digest = data[head : head + 64], data[head + 65 : head + 129]
    if data[:head] != _MAGIC or stored != wanted.encode():
        return None
    body = memoryview(data)[head + 130 :]
    if hashlib.sha256(body).hexdigest().encode() != digest:
        log.warning("matcher tables damaged: building them again", extra={"path": str(path)})
        return None
    try:
        with collector_paused():  # 350,000 rules for 50,000 entities: heap.py
            return _read(data, head + 130)
    except (ValueError, TypeError, EOFError, KeyError) as exc:
        log.warning(
            "matcher tables unreadable: building them again",
            extra={"path": str(path), "error": repr(exc)},
        )
        return None


def save(path: Path, key: str, tables: Tables) -> None:
    """Writes the tables of key `key` at `path`, replacing what was there; a directory
    that cannot be written leaves the next process to build them again. Written a slice
    at a time: a copy of all the tables at once would stay in this process's heap."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_left_over(path)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(b"".join([_MAGIC, key.encode(), b"\n", b"0" * 64, b"\n"]))
                digest = hashlib.sha256()
                for record in _records(tables):
                    data = marshal.dumps(record)
                    data = len(data).to_bytes(8, "big") + data  # marshal.load reads slowly
                    digest.update(data)
                    out.write(data)
                out.seek(len(_MAGIC) + 65)
                out.write(digest.hexdigest().encode())
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
    except (OSError, ValueError) as exc:  # never worth failing a match for
        log.info("matcher tables not kept", extra={"path": str(path), "error": str(exc)})


def _clear_left_over(path: Path) -> None:
    """Temporary files of writers killed before their rename (a running writer's is new)."""
    for left in path.parent.glob(f"{path.name}.*.tmp"):
        try:
            if time.time() - left.stat().st_mtime > _LEFT_OVER:
                left.unlink()
        except OSError:
            continue


_Fields = tuple[int, str, int, str, int, str, str]


def _fields(rule: Rule) -> _Fields:
    kind, role = rule.kind.value, rule.role.value
    return rule.wl, kind, rule.index, role, rule.group, rule.form, rule.source


def _rule(fields: _Fields) -> Rule:
    wl, kind, index, role, group, form, source = fields
    return Rule(wl, _KINDS[kind], index, _ROLES[role], group, form, source)


def _records(tables: Tables) -> Iterator[Any]:
    """The tables as builtin values, a few at a time: a rule as its fields."""
    yield tables.lengths
    yield tables.keys
    yield tables.capital_keys
    yield {
        prefix: [(before, _fields(rule), most) for before, rule, most in forms]
        for prefix, forms in tables.prefixes.items()
    }
    yield {phrase: [_fields(r) for r in found] for phrase, found in tables.unspaced.items()}
    phrases = iter(tables.rules.items())
    while chunk := [(ids, tuple(map(_fields, found))) for ids, found in islice(phrases, _SLICE)]:
        yield chunk


def _split(data: memoryview, at: int) -> Iterator[memoryview]:
    """Each record (its length, then its marshal bytes), as a view into `data`."""
    while at < len(data):
        size = int.from_bytes(data[at : at + 8], "big")
        yield data[at + 8 : at + 8 + size]
        at += 8 + size


def _read(data: bytes, start: int) -> Tables:
    records = _split(memoryview(data), start)
    lengths, keys, capital_keys, prefixes, unspaced = [marshal.loads(r) for r in islice(records, 5)]
    rules: dict[tuple[int, ...], tuple[Rule, ...]] = {}
    for record in records:
        for ids, found in marshal.loads(record):
            rules[ids] = tuple(map(_rule, found))
    return Tables(
        rules,
        lengths,
        keys,
        {
            prefix: [(before, _rule(fields), most) for before, fields, most in forms]
            for prefix, forms in prefixes.items()
        },
        {phrase: [_rule(fields) for fields in found] for phrase, found in unspaced.items()},
        capital_keys,
    )
