"""The matcher's phrase tables kept on disk (match/stored.py): read back, a matcher matches
exactly as one built anew; tables of other watchlists, or damaged, are built again."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from monitor.config import Watchlist
from monitor.dedupe import identify
from monitor.match import stored
from monitor.match.matcher import default_meaning
from monitor.models import Entry, Item
from monitor.service import matcher_for
from tests.conftest import US_CHINA

WATCH = Watchlist.model_validate(US_CHINA)
# a prefix form, another script's alias, a word split as a compound, an acronym: each a
# kind of table
MORE = Watchlist.model_validate(
    {
        "name": "more",
        "channel": "#more",
        "entities": [
            {"name": "Xi Jinping", "aliases": ["习近平", "Си Цзиньпин"], "type": "PERSON"},
            {"name": "Huawei Technologies", "aliases": ["Huawei"], "type": "ORG"},
            {"name": "National Security Agency", "aliases": ["NSA"]},
        ],
        "topics": [{"name": "hacking", "phrases": ["hack*", "cyberattack"]}],
    }
)
TEXTS = [
    ("Qin Gang meets Antony Blinken", "The ministers met in Beijing on fentanyl and trade."),
    ("习近平会见", "习近平在北京会见了来访的外国领导人。"),
    ("Hackers strike", "A cyber-attack hit Huawei, whose hackers' rivals were blamed."),
    ("Leak inquiry", "The NSA said its staff had been told."),
    ("Rain all week", "Showers are expected in town until Sunday, forecasters said."),
]


def entries() -> list[Entry]:
    return [identify(Item(t, None, t, b, "", None)) for t, b in TEXTS]


def test_a_matcher_from_kept_tables_matches_as_one_built_anew(tmp_path: Path) -> None:
    path = tmp_path / "matcher.tables"
    built = matcher_for([WATCH, MORE], default_meaning, tables=path)
    assert path.is_file()
    kept = stored.load(path, stored.key([WATCH, MORE]))
    assert kept == built.tables()
    assert kept.capital_keys == {"nsa"}  # the acronym's, kept apart
    read = matcher_for([WATCH, MORE], default_meaning, tables=path)
    found = read.match(entries())
    assert found == built.match(entries())
    assert [e.item.title for e, _ in found] == [t for t, _ in TEXTS[:4]]


def test_tables_of_other_watchlists_are_built_again_and_replace_them(tmp_path: Path) -> None:
    path = tmp_path / "matcher.tables"
    matcher_for([WATCH], default_meaning, tables=path)
    assert stored.load(path, stored.key([WATCH, MORE])) is None
    both = matcher_for([WATCH, MORE], default_meaning, tables=path)
    assert stored.load(path, stored.key([WATCH])) is None  # one file: the last watchlists'
    assert stored.load(path, stored.key([WATCH, MORE])) == both.tables()
    assert [p.name for p in tmp_path.iterdir()] == ["matcher.tables"]


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "garbage", "not tables"])
def test_damaged_tables_are_built_again_and_written_anew(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "matcher.tables"
    built = matcher_for([WATCH, MORE], default_meaning, tables=path)
    data = path.read_bytes()
    key = stored.key([WATCH, MORE])
    junk = (8).to_bytes(8, "big") + b"no table"  # its header's digest is right
    path.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "flipped": data[:-10] + bytes([data[-10] ^ 1]) + data[-9:],
            "empty": b"",
            "garbage": os.urandom(len(data)),
            "not tables": b"%s%s\n%s\n%s"
            % (stored._MAGIC, key.encode(), hashlib.sha256(junk).hexdigest().encode(), junk),
        }[damage]
    )
    assert stored.load(path, key) is None
    fresh = matcher_for([WATCH, MORE], default_meaning).tables()  # no article seen yet
    again = matcher_for([WATCH, MORE], default_meaning, tables=path)
    assert again.match(entries()) == built.match(entries())
    assert stored.load(path, key) == fresh


def test_a_directory_that_cannot_be_written_only_costs_a_build(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "matcher.tables"
    matcher = matcher_for([WATCH], default_meaning, tables=path)
    assert len(matcher.match(entries())) == 1
    assert stored.load(path, stored.key([WATCH])) is None


def test_a_killed_writers_temporary_file_is_cleared_by_the_next(tmp_path: Path) -> None:
    old = tmp_path / "matcher.tables.abc123.tmp"
    new = tmp_path / "matcher.tables.def456.tmp"  # a writer's still at work
    for left in (old, new):
        left.write_bytes(b"half a write")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    matcher_for([WATCH], default_meaning, tables=tmp_path / "matcher.tables")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matcher.tables", new.name]


def test_the_key_is_that_of_the_watchlists() -> None:
    assert stored.key([WATCH, MORE]) == stored.key(
        [Watchlist.model_validate(US_CHINA), MORE.model_copy()]
    )
    assert stored.key([WATCH, MORE]) != stored.key([MORE, WATCH])
    renamed = MORE.model_copy(update={"channel": "#other"})
    assert stored.key([WATCH, MORE]) != stored.key([WATCH, renamed])
