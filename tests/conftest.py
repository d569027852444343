from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.servers import FakeSlack, FeedServer, running

SHARED = Path(__file__).resolve().parents[2] / "shared"
PG_URL = os.environ.get("MONITOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Under CI a test that needs PostgreSQL fails without it: a green run must have run them all.
CI = os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks `postgres` every test that asks for the pg_url fixture, so none can forget it
    (any_db_url's PostgreSQL case carries the mark on its parameter)."""
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


US_CHINA: dict[str, Any] = {
    "name": "us-china",
    "channel": "#china-desk",
    "entities": [
        {"name": "Qin Gang", "aliases": ["Qin"], "type": "PERSON"},
        {"name": "Wang Yi", "type": "PERSON"},
        {"name": "Li Shangfu", "type": "PERSON"},
        {"name": "Antony Blinken", "aliases": ["Tony Blinken"]},
    ],
    "topics": [
        {
            "name": "military dialogue",
            "phrases": ["military dialogue", "military-to-military communication"],
        },
        {"name": "fentanyl"},
    ],
}


def write_config(
    root: Path,
    feeds: list[dict[str, Any]],
    watchlists: list[dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "watchlists").mkdir(exist_ok=True)
    (root / "feeds.yaml").write_text(yaml.safe_dump({"feeds": feeds}, sort_keys=False))
    base = {
        "allow_private_networks": True,  # the feed server is on 127.0.0.1
        "tick": "1s",
        "http": {"connect_timeout": "2s", "read_timeout": "2s"},
        "delivery": {
            "channel_interval": "10ms",
            "max_per_second": 200,
            "lease": "1s",
            "retry_base": "1s",
        },
    }
    (root / "monitor.yaml").write_text(yaml.safe_dump({**base, **(settings or {})}))
    for wl in watchlists if watchlists is not None else [US_CHINA]:
        (root / "watchlists" / f"{wl['name']}.yaml").write_text(yaml.safe_dump(wl, sort_keys=False))
    return root


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with running(FeedServer()) as server:
        yield server


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with running(FakeSlack()) as server:
        yield server


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'monitor.db'}"


@pytest.fixture
def slack_env(monkeypatch: pytest.MonkeyPatch, slack: FakeSlack, db_url: str) -> FakeSlack:
    """Points the service at the fake Slack and a fresh SQLite file, as an operator would."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    monkeypatch.setenv("MONITOR_DATABASE_URL", db_url)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    return slack


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the local PostgreSQL, dropped afterwards."""
    try:
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            schema = f"t_{uuid.uuid4().hex[:12]}"
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as exc:
        missing = f"no PostgreSQL at {PG_URL} ({str(exc).splitlines()[0]})"
        if CI:
            pytest.fail(f"{missing}: CI=true requires it (.ci/run starts it)", pytrace=False)
        pytest.skip(missing)
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))
