from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import load, parse_duration
from monitor.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172800),
        ("1w", 604800),
        ("1h30m", 5400),
        (" 10M ", 600),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "5x", "1h 3", "m5", 10])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="30s, 5m, 1h or 2d"):
        parse_duration(text)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return root


GOOD_FEEDS = "feeds:\n  - name: a\n    url: https://a.example/rss\n"
GOOD_WATCH = "channel: '#desk'\nentities:\n  - name: Qin Gang\n"


def test_example_config_is_valid() -> None:
    cfg = load(Path(__file__).resolve().parents[1] / "config", env={})
    assert {w.name for w in cfg.watchlists} == {"us-china"}
    names = {e.name for e in cfg.watchlists[0].entities}
    assert {"Qin Gang", "Wang Yi", "Li Shangfu", "Antony Blinken"} <= names
    assert {t.name for t in cfg.watchlists[0].topics} >= {
        "military dialogue",
        "export controls",
        "fentanyl",
    }


def test_defaults_and_overrides(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "feeds.yaml": GOOD_FEEDS + "  - name: b\n    url: http://b.example/\n"
            "    interval: 30s\n    backfill: 2d\n",
            "watchlists/desk.yaml": GOOD_WATCH,
        },
    )
    cfg = load(
        root,
        env={
            "MONITOR_DATABASE_URL": "sqlite:////tmp/x.db",
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_API_URL": "http://127.0.0.1:9/api/",
        },
    )
    a, b = cfg.feeds
    assert cfg.interval(a) == timedelta(minutes=10) and cfg.backfill(a) == timedelta(hours=24)
    assert cfg.interval(b) == timedelta(seconds=30) and cfg.backfill(b) == timedelta(days=2)
    assert cfg.watchlists[0].name == "desk"  # the file's stem
    assert cfg.settings.effective_database_url() == "sqlite:////tmp/x.db"
    assert cfg.settings.slack.token == "xoxb-1"
    assert cfg.settings.slack.api_url == "http://127.0.0.1:9/api/"


BROKEN = {
    "monitor.yaml": "default_interval: soon\nhttp:\n  read_timout: 5s\n",
    "feeds.yaml": (
        "feeds:\n"
        "  - name: a\n"
        "    url: https://a.example/rss\n"
        "  - name: a\n"
        "    url: ftp://b.example/rss\n"
        "    interval: 0s\n"
        "  - url: https://c.example/\n"
    ),
    "watchlists/desk.yaml": (
        "channel: 'China Desk'\n"
        "entities:\n"
        "  - name: Qin Gang\n"
        "    aliases: Qin\n"
        "    type: PERSONA\n"
        "  - name: qin gang\n"
        "topics:\n"
        "  - name: x\n"
        "    phrase: [y]\n"
    ),
    "watchlists/syntax.yaml": "channel: '#a'\nentities: [\n  - name: b\n",
}


def test_check_reports_every_problem_with_its_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _write(tmp_path, BROKEN)
    assert main(["--config", str(root), "check"]) == 2
    out = capsys.readouterr().out.replace(str(root) + "/", "")
    lines = out.splitlines()
    expected = [
        "monitor.yaml:1:19: default_interval: bad duration 'soon': write it like 30s, 5m, 1h or 2d",
        "monitor.yaml:3:3: unknown key 'read_timout'",
        "feeds.yaml:5:10: feeds.url: bad URL 'ftp://b.example/rss': must be an http:// or "
        "https:// URL with a host",
        "feeds.yaml:6:15: feeds.interval: duration must be greater than zero",
        "feeds.yaml:7:5: missing required key 'name'",
        "watchlists/desk.yaml:1:10: channel: bad channel 'China Desk': use a Slack channel name "
        "like '#china-desk' or a channel ID like C0123456789",
        "watchlists/desk.yaml:4:14: entities.aliases: Input should be a valid list",
        "watchlists/desk.yaml:5:11: entities.type: unknown type 'PERSONA'; one of EVENT, FAC, "
        "GPE, LANGUAGE, LAW, LOC, NORP, ORG, PERSON, PRODUCT, WORK_OF_ART",
        "watchlists/desk.yaml:9:5: unknown key 'phrase'",
    ]
    for line in expected:
        assert line in lines, f"missing: {line}\n--- got:\n{out}"
    assert any(line.startswith("watchlists/syntax.yaml:3:3: YAML syntax:") for line in lines), out
    assert len(lines) == len(expected) + 1, out


def test_duplicates_are_reported_where_they_stand(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "feeds.yaml": GOOD_FEEDS + "  - name: a\n    url: https://a.example/rss\n",
            "watchlists/one.yaml": "name: desk\n" + GOOD_WATCH + "  - name: QIN GANG\n",
            "watchlists/two.yaml": "name: desk\n" + GOOD_WATCH,
            "watchlists/three.yaml": "channel: '#x'\nchannel: '#y'\ntopics: [{name: t}]\n",
        },
    )
    with pytest.raises(ConfigError) as info:
        load(root, env={})
    got = {str(p).replace(str(root) + "/", "") for p in info.value.problems}
    assert got == {
        "feeds.yaml:4:11: duplicate feed name 'a' (first at line 2)",
        "feeds.yaml:5:10: duplicate feed URL 'https://a.example/rss' (first at line 3)",
        "watchlists/one.yaml:5:11: duplicate entity name 'qin gang' (first at line 4)",
        "watchlists/two.yaml:1:7: duplicate watchlist name 'desk' (also in watchlists/one.yaml)",
        "watchlists/three.yaml:2:1: duplicate key 'channel'",
    }


def test_missing_feeds_file_and_empty_watchlist(tmp_path: Path) -> None:
    root = _write(tmp_path, {"watchlists/w.yaml": "channel: '#w'\n"})
    with pytest.raises(ConfigError) as info:
        load(root, env={})
    messages = [p.message for p in info.value.problems]
    assert "feeds.yaml is missing" in messages
    assert any("at least one entity or topic" in m for m in messages)


def test_topic_without_phrases_matches_its_name(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "feeds.yaml": GOOD_FEEDS,
            "watchlists/w.yaml": "channel: C0123456789\ntopics: [{name: fentanyl}]\n",
        },
    )
    assert load(root, env={}).watchlists[0].topics[0].phrases == ["fentanyl"]


def test_bad_environment_is_reported(tmp_path: Path) -> None:
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": GOOD_WATCH})
    with pytest.raises(ConfigError) as info:
        load(root, env={"SLACK_API_URL": "not a url"})
    [problem] = info.value.problems
    assert str(problem).startswith("<environment>:1:1: slack.api_url: bad URL 'not a url'")
