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
        "monitor.yaml:3:3: unknown key 'read_timout'; did you mean 'read_timeout'?",
        "feeds.yaml:5:10: feeds.url: bad URL 'ftp://b.example/rss': must be an http:// or "
        "https:// URL with a host",
        "feeds.yaml:6:15: feeds.interval: duration must be greater than zero",
        "feeds.yaml:7:5: missing required key 'name'",
        "watchlists/desk.yaml:1:10: channel: bad channel 'China Desk': use a Slack channel name "
        "like '#china-desk' or a channel ID like C0123456789",
        "watchlists/desk.yaml:4:14: entities.aliases: Input should be a valid list",
        "watchlists/desk.yaml:5:11: entities.type: unknown type 'PERSONA'; one of EVENT, FAC, "
        "GPE, LANGUAGE, LAW, LOC, NORP, ORG, PERSON, PRODUCT, WORK_OF_ART",
        "watchlists/desk.yaml:9:5: unknown key 'phrase'; did you mean 'phrases'?",
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
    assert str(problem).startswith("<environment>:1:1: SLACK_API_URL: bad URL 'not a url'")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("    aliases: [1984]", "5:15: entities.aliases: YAML reads 1984 as a number"),
        ("    aliases: [2024-02-28]", "5:15: entities.aliases: YAML reads 2024-02-28 as a date"),
        ("    aliases: [yes]", "5:15: entities.aliases: YAML reads yes as true or false"),
        ("    context: [3.5]", "5:15: entities.context: YAML reads 3.5 as a number"),
        ("    aliases: [2024-02-30]", "5:15: YAML cannot read 2024-02-30 as a date"),
    ],
    ids=["number", "date", "boolean", "float", "impossible-date"],
)
def test_yaml_types_where_text_is_expected_are_errors(
    tmp_path: Path, line: str, problem: str
) -> None:
    """YAML 1.1 guesses types for unquoted words; where the config wants text, a guess
    other than text is an error saying how to write it, never a traceback."""
    root = _write(
        tmp_path,
        {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": GOOD_WATCH + "    type: PERSON\n" + line},
    )
    with pytest.raises(ConfigError) as info:
        load(root, env={})
    [got] = [str(p).replace(str(root) + "/watchlists/w.yaml:", "") for p in info.value.problems]
    assert got.startswith(problem), got
    assert got.endswith("quote it if it is text"), got


def test_quoted_values_and_times_read_as_text(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "feeds.yaml": GOOD_FEEDS,
            "watchlists/w.yaml": GOOD_WATCH + "    aliases: ['1984', \"2024-02-30\", 'yes']\n"
            "quiet: {from: '22:00', to: '07:00'}\n",
        },
    )
    [entity] = load(root, env={}).watchlists[0].entities
    assert entity.aliases == ["1984", "2024-02-30", "yes"]


def test_aliases_within_the_bound_are_read(tmp_path: Path) -> None:
    """The trap for the alias bound: anchors used as meant, to share a list."""
    root = _write(
        tmp_path,
        {
            "feeds.yaml": GOOD_FEEDS,
            "watchlists/w.yaml": "channel: '#w'\nentities:\n"
            "  - {name: Qin Gang, context: &china [Beijing, foreign minister]}\n"
            "  - {name: Wang Yi, context: *china}\n",
        },
    )
    qin, wang = load(root, env={}).watchlists[0].entities
    assert qin.context == wang.context == ["Beijing", "foreign minister"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            "channel: '#w'\ntopics:\n  - &t {name: x, phrases: [*t]}\n",
            "3:28: refused: an alias inside the value it names",
        ),
        pytest.param(
            "channel: '#w'\ntopics: [" + "a, " * 200_001 + "]\n",
            "refused: more than 200,000 values",
            marks=pytest.mark.slow,
        ),
        ("# " + "x" * (2 * 1024 * 1024) + "\n", "1:1: refused: larger than 2,097,152 bytes"),
        ("channel: '#w'\ntopics:\n  - name: a\x07b\n", "3:12: YAML: special characters"),
    ],
    ids=["alias-loop", "values", "size", "control-character"],
)
def test_config_files_are_bounded(tmp_path: Path, body: str, problem: str) -> None:
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": body})
    with pytest.raises(ConfigError) as info:
        load(root, env={})
    [got] = [str(p) for p in info.value.problems]
    assert got.startswith(f"{root}/watchlists/w.yaml:") and problem in got, got


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            "http://0177.0.0.1/",
            "host '0177.0.0.1' is an IPv4 address in octal, hex or short form: write it as 127.0.0.1",
        ),
        (
            "http://0x7f.1/",
            "host '0x7f.1' is an IPv4 address in octal, hex or short form: write it as 127.0.0.1",
        ),
        (
            "http://2130706433/",
            "host '2130706433' is an IPv4 address in octal, hex or short form: write it as 127.0.0.1",
        ),
        ("http://1.2.3.256/", "host '1.2.3.256' is not a valid IPv4 address"),
        ("http://u:pw@0177.0.0.1/", "bad URL 'http://***@0177.0.0.1/'"),
    ],
)
@pytest.mark.parametrize("command", ["check", "poll"])
def test_hosts_written_as_odd_numbers_are_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, problem: str, command: str
) -> None:
    root = _write(
        tmp_path,
        {"feeds.yaml": f"feeds:\n  - name: a\n    url: {url}\n", "watchlists/w.yaml": GOOD_WATCH},
    )
    assert main(["--config", str(root), command]) == 2
    captured = capsys.readouterr()
    [line] = (captured.out + captured.err).splitlines()
    assert line.startswith(f"{root}/feeds.yaml:3:10: feeds.url: bad URL") and problem in line, line


def test_names_and_dotted_quads_that_look_numeric_are_fine(tmp_path: Path) -> None:
    urls = ["http://1.2.3.4/", "http://123.example/", "http://example.123a/", "http://[::1]:8080/"]
    feeds = "feeds:\n" + "".join(f"  - name: f{i}\n    url: {u}\n" for i, u in enumerate(urls))
    root = _write(tmp_path, {"feeds.yaml": feeds, "watchlists/w.yaml": GOOD_WATCH})
    assert [f.url for f in load(root, env={}).feeds] == urls


@pytest.mark.parametrize("command", ["check", "poll", "feeds"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not a url", "MONITOR_DATABASE_URL: not a database URL: 'not a url'"),
        ("mysql://m@db/monitor", "MONITOR_DATABASE_URL: unsupported database 'mysql'"),
    ],
)
def test_a_bad_database_url_is_named_by_its_variable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    value: str,
    problem: str,
) -> None:
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": GOOD_WATCH})
    monkeypatch.setenv("MONITOR_DATABASE_URL", value)
    assert main(["--config", str(root), command]) == 2
    captured = capsys.readouterr()
    [line] = (captured.out + captured.err).splitlines()
    assert line.startswith(f"<environment>:1:1: {problem}"), line


def test_database_urls_we_speak_are_accepted(tmp_path: Path) -> None:
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": GOOD_WATCH})
    for url in ("sqlite:////tmp/x.db", "postgresql://m@db/monitor", "postgresql+psycopg://db/m"):
        assert load(root, env={"MONITOR_DATABASE_URL": url}).settings.database_url == url


def test_the_data_directory_from_the_environment_is_read_as_the_shell_meant_it(
    tmp_path: Path,
) -> None:
    """As MONITOR_DATABASE_URL: an absolute one as it is, a relative one from the current
    directory (a container's volume, not its read-only config directory)."""
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": GOOD_WATCH})
    assert load(root).settings.data_dir == root.absolute() / "data"
    settings = load(root, env={"MONITOR_DATA_DIR": "/data"}).settings
    assert settings.data_dir == Path("/data")
    assert settings.effective_database_url() == "sqlite:////data/monitor.db"
    assert load(root, env={"MONITOR_DATA_DIR": "state"}).settings.data_dir == Path("state")


APP = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1-A0-1-abc"}


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {**APP, "SLACK_APP_TOKEN": "xoxb-not-an-app-token"},
            "SLACK_APP_TOKEN: not an app-level token: it starts with xapp-",
        ),
        ({**APP, "SLACK_SIGNING_SECRET": "short"}, "SLACK_SIGNING_SECRET: not a signing secret"),
        ({**APP, "SLACK_TEAM_ID": "acme"}, "SLACK_TEAM_ID: String should match pattern"),
        (
            {"SLACK_APP_TOKEN": "xapp-1-A0-1-abc"},
            "the Slack app (SLACK_APP_TOKEN or SLACK_SIGNING_SECRET) needs SLACK_BOT_TOKEN",
        ),
    ],
    ids=["bot-token-as-app-token", "short-secret", "team-name", "no-bot-token"],
)
def test_slack_app_settings_are_checked(tmp_path: Path, env: dict[str, str], problem: str) -> None:
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": GOOD_WATCH})
    with pytest.raises(ConfigError) as info:
        load(root, env=env)
    [got] = [str(p) for p in info.value.problems]
    assert problem in got
    assert "xoxb-not-an-app-token" not in got  # a secret is never echoed


def test_slack_app_settings_that_are_right_pass(tmp_path: Path) -> None:
    """Trap: real-shaped tokens, secret and team ID raise nothing and warn of nothing."""
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": GOOD_WATCH})
    env = {
        **APP,
        "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
        "SLACK_TEAM_ID": "T0123ABCD",
    }
    cfg = load(root, env=env)
    assert cfg.settings.slack.interactive and cfg.settings.slack.team_id == "T0123ABCD"
    assert not cfg.warnings
    cfg = load(root, env=APP)  # no team: the bot token's own workspace, said as a warning
    assert [w.message for w in cfg.warnings] == [
        "slack.team_id is not set: clicks are taken from the bot token's own workspace "
        "(set it, or SLACK_TEAM_ID, to name the workspace)"
    ]
    assert not load(root, env={"SLACK_BOT_TOKEN": "xoxb-1"}).settings.slack.interactive


def test_feedback_from_takes_user_and_group_ids(tmp_path: Path) -> None:
    good = GOOD_WATCH + "feedback_from: [U0123ABCD, S0123ABCD, W0123ABCD]\n"
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": good})
    assert load(root, env={}).watchlists[0].feedback_from == ["U0123ABCD", "S0123ABCD", "W0123ABCD"]
    bad = GOOD_WATCH + "feedback_from: [here]\n"
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": bad})
    with pytest.raises(ConfigError) as info:
        load(root, env={})
    [got] = [str(p) for p in info.value.problems]
    assert "bad feedback_from entry 'here': a user ID (U0123ABCD) or a user group ID" in got


def test_check_says_how_the_slack_app_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _write(tmp_path, {"feeds.yaml": GOOD_FEEDS, "watchlists/w.yaml": GOOD_WATCH})
    for var, value in {**APP, "SLACK_TEAM_ID": "T0123ABCD"}.items():
        monkeypatch.setenv(var, value)
    assert main(["--config", str(root), "check"]) == 0
    out = capsys.readouterr().out
    assert "slack app: Socket Mode (SLACK_APP_TOKEN); workspace T0123ABCD" in out
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxp-user-token")
    assert main(["--config", str(root), "check"]) == 2
    assert "SLACK_APP_TOKEN: not an app-level token" in capsys.readouterr().out


def _aliases(times: int) -> str:
    """A list of 99 values aliased `times` times: 100 values repeated each time."""
    items = ", ".join(["x"] * 99)
    return f"channel: '#w'\nbase: &b [{items}]\nmore: [{', '.join(['*b'] * times)}]\n"


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        ("a: " + "[" * 63 + "]" * 63 + "\n", False),  # 64 levels with the mapping
        ("a: " + "[" * 64 + "]" * 64 + "\n", True),
        (_aliases(100), False),  # 10,000 values repeated: the bound itself
        (_aliases(101), True),
        ("a: &a [1, *a]\n", True),  # an alias inside what it names
        ("a: &a [1, 2]\nb: [*a, {c: *a}]\n", False),
    ],
    ids=["depth-64", "depth-65", "aliased-10000", "aliased-10100", "loop", "aliases"],
)
def test_libyamls_tree_is_bounded_as_pyyamls_composer_bounds_it(
    tmp_path: Path, body: str, refused: bool
) -> None:
    """The fast path composes in C and checks the bounds after; it must refuse exactly
    what the Python composer, which counts as it goes, refuses, and build the same tree."""
    import yaml

    from monitor import config

    path = tmp_path / "w.yaml"
    path.write_text(body)
    assert config._FAST is not None
    fast = config._single_node(config._FAST(body))
    try:
        config._within_bounds(fast)
        fast_refused = False
    except yaml.YAMLError:
        fast_refused = True
    try:
        checked = config._single_node(config._Checked(body))
        checked_refused = False
    except yaml.YAMLError:
        checked_refused = True
    assert fast_refused == checked_refused == refused
    if not refused:
        assert yaml.serialize(fast) == yaml.serialize(checked)
