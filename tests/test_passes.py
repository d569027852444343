"""The pass workers' matcher, built once in their fork server (runtime/warm.py) from the
pool's handover, and shared: it must match exactly as a worker's own would. A worker
takes its fork server's watchlists too, unless its config was reloaded since."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from monitor import config as config_mod
from monitor.dedupe import identify
from monitor.match import stored
from monitor.models import Item
from monitor.runtime.passes import HANDOVER, Handover, PassPool, digest
from monitor.service import matcher_for, meaning_for, tables_file
from tests.conftest import US_CHINA, write_config
from tests.servers import rss

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
    found = warm_with.shared(digest(cfg))
    assert found is not None
    watchlists, shared = found
    assert watchlists == cfg.watchlists
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
    assert warm_with.shared(digest(cfg)) is not None
    fewer = replace(cfg, watchlists=())
    assert warm_with.shared(digest(fewer)) is None
    other_model = replace(
        cfg,
        settings=cfg.settings.model_copy(
            update={"meaning": cfg.settings.meaning.model_copy(update={"model": "elsewhere"})}
        ),
    )
    assert warm_with.shared(digest(other_model)) is None


def test_without_a_handover_there_is_no_shared_matcher(tmp_path: Path) -> None:
    warm = importlib.import_module("monitor.runtime.warm")
    cfg = config_mod.load(write_config(tmp_path / "c", [], [US_CHINA]))
    assert warm.shared(digest(cfg)) is None


def test_the_fork_server_removes_the_handover_once_read(
    warm_with: ModuleType, tmp_path: Path
) -> None:
    """Read once, at the fork server's start: a service killed outright (no close) leaves
    no file of its watchlists in the temp directory."""
    assert warm_with.PREBUILT is not None
    assert not (tmp_path / "handover").exists()


def test_a_fork_server_keeps_the_matchers_tables_for_the_next_to_read(
    warm_with: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As cron starts `monitor poll` again and again: the first fork server builds the
    phrase tables and keeps them in the data directory, the next reads them back."""
    cfg = config_mod.load(tmp_path / "c")
    kept = tables_file(cfg.settings)
    assert kept.is_file()
    written = kept.stat().st_mtime_ns
    path = tmp_path / "handover"
    path.write_bytes(pickle.dumps(Handover.of(cfg)))
    monkeypatch.setattr(stored, "save", lambda *_: pytest.fail("tables built again"))
    found = _fresh_warm().shared(digest(cfg))
    assert found is not None
    assert kept.stat().st_mtime_ns == written
    at = datetime(2026, 12, 7, tzinfo=UTC)
    entries = [identify(Item(t, None, t, b, "", at)) for t, b in TEXTS]
    assert found[1].match(entries) == warm_with.shared(digest(cfg))[1].match(entries)


def test_a_closed_pool_leaves_no_handover_behind(tmp_path: Path) -> None:
    cfg = config_mod.load(write_config(tmp_path / "c", [], [US_CHINA]))
    pool = PassPool(2, cfg)
    pool.start()
    path = Path(os.environ[HANDOVER])
    pool.close()
    assert HANDOVER not in os.environ
    assert not path.exists()


# A service with two pass workers, in a process of its own (so its fork server is new):
# one feed body through a worker, then the watchlists edited and reloaded, then two more.
RELOAD = """
import shutil, sys
from pathlib import Path
from monitor import config, logs
from monitor.models import Body, Fetched
from monitor.runtime.passes import PassPool
from monitor.service import build

root, edited, *bodies = map(Path, sys.argv[1:])
logs.setup("INFO", "text")
cfg = config.load(root)
service = build(cfg, pool=PassPool(2, cfg))
pool = service.deps.pool
for ready in pool.start():
    ready.result()

def run(body):
    feed = service.deps.feeds.states(service.feeds)[0]
    done = pool.submit(feed, Body(Fetched(feed.url, 200, body.read_bytes(), {}))).result()
    print(f"queued={done.queued}" if done.ok else done.error, flush=True)

run(bodies[0])
shutil.copy(edited, root / "watchlists" / "us-china.yaml")
assert service.reload()
print("-- reloaded", file=sys.stderr, flush=True)
for body in bodies[1:]:
    run(body)
service.close()
"""


def test_workers_take_the_fork_servers_watchlists_until_a_reload_changes_them(
    tmp_path: Path,
) -> None:
    """Started for the config the pool handed over, both workers take their fork server's
    watchlists and matcher ("matcher shared") and are sent none; after an edit of the
    watchlists, each worker restarted for its next feed is sent the new ones and matches
    with them, not with what its fork server built."""
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": "http://127.0.0.1:9/f.xml"}])
    edited = tmp_path / "edited.yaml"
    edited.write_text(
        "name: us-china\nchannel: '#china-desk'\nentities:\n- {name: Li Qiang, type: PERSON}\n"
    )
    bodies = []
    for i, title in enumerate(["Qin Gang in Manila", "Li Qiang in Berlin", "Qin Gang in Rome"]):
        body = tmp_path / f"body{i}.xml"
        body.write_bytes(rss([{"title": title, "link": f"https://n.example/{i}", "guid": i}]))
        bodies.append(str(body))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env["MONITOR_DATABASE_URL"] = f"sqlite:///{tmp_path / 'reload.db'}"
    done = subprocess.run(
        [sys.executable, "-c", RELOAD, str(cfg), str(edited), *bodies],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stderr.split("-- reloaded")
    assert before.count("passes: matcher shared") == 2, before
    assert "watchlists received" not in before
    # the Qin Gang article alerted before the edit; after it, Li Qiang's does, Qin Gang's not
    assert done.stdout.split() == ["queued=1", "queued=1", "queued=0"]
    assert "passes: matcher shared" not in after
    # one worker took both feeds, or each took one: each restarted for the new config
    assert after.count("passes: watchlists received") in (1, 2), after
