"""Operating the service: JSON Schemas for editors, `monitor init`, JSON logs."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import jsonschema
import pytest
import yaml

from monitor import config as config_mod
from monitor.cli import main
from monitor.logs import JsonFormatter, TextFormatter
from monitor.metrics import Metrics, StoredCounts
from monitor.service import build
from tests.conftest import write_config

EXAMPLE = Path(__file__).resolve().parents[1] / "monitor" / "example"


@pytest.mark.parametrize("name", ["monitor", "feeds", "watchlist"])
def test_shipped_schemas_are_current(name: str) -> None:
    shipped = json.loads((EXAMPLE / "schema" / f"{name}.schema.json").read_text())
    assert shipped == json.loads(json.dumps(config_mod.json_schemas()[name], sort_keys=True)), (
        "regenerate with `monitor schema`"
    )


@pytest.mark.parametrize(
    ("file", "schema"),
    [
        ("monitor.yaml", "monitor"),
        ("feeds.yaml", "feeds"),
        ("watchlists/us-china.yaml", "watchlist"),
    ],
)
def test_example_files_name_and_pass_their_schema(file: str, schema: str) -> None:
    text = (EXAMPLE / file).read_text()
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert (EXAMPLE / file).parent.joinpath(first.split("=", 1)[1]).resolve() == (
        EXAMPLE / "schema" / f"{schema}.schema.json"
    ).resolve()
    jsonschema.validate(yaml.safe_load(text), config_mod.json_schemas()[schema])


@pytest.mark.parametrize(
    ("schema", "doc"),
    [
        ("feeds", {"feeds": [{"name": "a", "url": "https://a.example/", "interval": "soon"}]}),
        ("feeds", {"feeds": [{"name": "a", "url": "https://a.example/", "colour": "red"}]}),
        ("watchlist", {"channel": "#x", "entities": [{"name": "Qin Gang", "alias": ["Qin"]}]}),
    ],
)
def test_schemas_catch_what_check_catches(schema: str, doc: dict[str, object]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, config_mod.json_schemas()[schema])


def test_init_writes_a_working_config_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "desk"
    assert main(["init", str(target)]) == 0
    assert main(["--config", str(target), "check"]) == 0
    assert (target / "schema" / "watchlist.schema.json").exists()
    assert main(["init", str(target)]) == 2
    assert "not empty" in capsys.readouterr().err


def _record(**fields: object) -> logging.LogRecord:
    return logging.getLogger("monitor.pipeline").makeRecord(
        "monitor.pipeline", logging.WARNING, __file__, 1, "feed failed", (), None, extra=fields
    )


def test_json_log_lines_keep_the_fields() -> None:
    error = "https://x.example/: HTTP 503 Service Unavailable key=not-a-field"
    entry = json.loads(JsonFormatter().format(_record(feed="bbc", feed_id=3, error=error)))
    assert entry["event"] == "feed failed" and entry["level"] == "WARNING"
    assert entry["feed"] == "bbc" and entry["feed_id"] == 3
    assert entry["error"] == error and "key" not in entry


def test_text_log_lines_quote_values_that_would_split() -> None:
    line = TextFormatter("%(message)s").format(
        _record(feed="bbc", feed_id=3, error='HTTP 503 key="x"', retry=None)
    )
    assert line == 'feed failed feed=bbc feed_id=3 error="HTTP 503 key=\\"x\\"" retry=-'


def test_a_scrape_keeps_the_process_metrics_when_the_database_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/metrics reads stored counts at each scrape; a database that fails them (here a
    table gone) leaves the process's own metrics, not a failed scrape."""
    db = tmp_path / "m.db"
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{db}")
    service = build(config_mod.load(write_config(tmp_path / "c", [])))
    try:
        metrics = Metrics()
        metrics.registry.register(StoredCounts(service))
        assert b"monitor_articles " in metrics.render()
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TABLE delivery")
        scrape = metrics.render().decode()
    finally:
        service.close()
    assert "process_cpu_seconds_total" in scrape and "monitor_fetches_total" in scrape
    assert "monitor_articles " not in scrape
