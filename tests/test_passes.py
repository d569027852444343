"""The pass workers' matcher, built once in their fork server (runtime/warm.py) from the
pool's handover, and shared: it must match exactly as a worker's own would."""

from __future__ import annotations

import importlib
import os
import pickle
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from monitor import config as config_mod
from monitor.dedupe import identify
from monitor.models import Item
from monitor.runtime.passes import HANDOVER, Handover, PassPool
from monitor.service import matcher_for, meaning_for
from tests.conftest import US_CHINA, write_config

TEXTS = [
    ("Qin Gang meets Antony Blinken", "The ministers met in Beijing on fentanyl and trade."),
    ("Wang Yi in Washington", "China's top diplomat Wang Yi called for military dialogue."),
    ("Rain all week", "Showers are expected in town until Sunday, forecasters said."),
    ("Tony Blinken in Manila", "Blinken spoke with Qin about the South China Sea."),
]


@pytest.fixture
def warm_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    """runtime/warm.py as the fork server imports it, with a config handed over."""
    cfg = config_mod.load(write_config(tmp_path / "c", [], [US_CHINA]))
    path = tmp_path / "handover"
    path.write_bytes(pickle.dumps(Handover.of(cfg)))
    monkeypatch.setenv(HANDOVER, str(path))
    yield _fresh_warm()  # it reads the handover once, and removes it
    monkeypatch.delenv(HANDOVER)
    _fresh_warm()


def _fresh_warm() -> ModuleType:
    """runtime/warm.py imported anew, as a fork server imports it once at its start."""
    sys.modules.pop("monitor.runtime.warm", None)
    return importlib.import_module("monitor.runtime.warm")


def test_the_shared_matcher_matches_as_a_workers_own_would(
    warm_with: ModuleType, tmp_path: Path
) -> None:
    cfg = config_mod.load(tmp_path / "c")
    shared = warm_with.shared_matcher(cfg)
    assert shared is not None
    own = matcher_for(cfg.watchlists, meaning_for(cfg))
    at = datetime(2026, 12, 7, tzinfo=UTC)
    entries = [identify(Item(t, None, t, b, "", at)) for t, b in TEXTS]
    found = shared.match(entries)
    assert found == own.match(entries)
    assert [e.item.title for e, _ in found] == [TEXTS[0][0], TEXTS[1][0], TEXTS[3][0]]


def test_a_reloaded_config_is_not_given_the_fork_servers_matcher(
    warm_with: ModuleType, tmp_path: Path
) -> None:
    cfg = config_mod.load(tmp_path / "c")
    assert warm_with.shared_matcher(cfg) is not None
    fewer = replace(cfg, watchlists=())
    assert warm_with.shared_matcher(fewer) is None
    other_model = replace(
        cfg,
        settings=cfg.settings.model_copy(
            update={"meaning": cfg.settings.meaning.model_copy(update={"model": "elsewhere"})}
        ),
    )
    assert warm_with.shared_matcher(other_model) is None


def test_without_a_handover_there_is_no_shared_matcher(tmp_path: Path) -> None:
    warm = importlib.import_module("monitor.runtime.warm")
    cfg = config_mod.load(write_config(tmp_path / "c", [], [US_CHINA]))
    assert warm.shared_matcher(cfg) is None


def test_the_fork_server_removes_the_handover_once_read(
    warm_with: ModuleType, tmp_path: Path
) -> None:
    """Read once, at the fork server's start: a service killed outright (no close) leaves
    no file of its watchlists in the temp directory."""
    assert warm_with.PREBUILT is not None
    assert not (tmp_path / "handover").exists()


def test_a_closed_pool_leaves_no_handover_behind(tmp_path: Path) -> None:
    cfg = config_mod.load(write_config(tmp_path / "c", [], [US_CHINA]))
    pool = PassPool(2, cfg)
    pool.start()
    path = Path(os.environ[HANDOVER])
    pool.close()
    assert HANDOVER not in os.environ
    assert not path.exists()
