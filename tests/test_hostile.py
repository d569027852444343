"""Hostile feeds and config files (issue 15), tried as an attacker would: each attack runs
`monitor poll` in a subprocess with one hostile feed beside one normal feed, and ends with
the normal feed's alert delivered once, the hostile feed failing with a reason in
`monitor feeds`, the poll's peak memory under 500 MB and the poll done within its
deadline plus 10 s. Bombs are generated here, never stored."""

from __future__ import annotations

import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import brotli
import pytest

from monitor import config as config_mod
from monitor.cli import main
from monitor.service import build
from tests.conftest import write_config
from tests.peak import MONITOR
from tests.servers import FakeSlack, FeedServer, RawServer, Route, rss, running, trickle_headers

CONNECT, READ = 5, 5
DEADLINE = CONNECT + READ  # the per-fetch deadline: connect_timeout + read_timeout
MEMORY_MB = 500
GIB = 1 << 30
SETTINGS = {"http": {"connect_timeout": f"{CONNECT}s", "read_timeout": f"{READ}s"}}
NORMAL = rss([{"title": "Qin Gang misses Asean meeting", "link": "https://n.example/qin"}])
# A safety net, not the bound under test: a regression must not take the machine down.
_ADDRESS_SPACE = 8 * GIB


@dataclass
class Run:
    code: int
    started: float  # time.monotonic() when the process was started
    ended: float
    peak_mb: float  # the process's own peak resident memory; inf if it never reported
    out: str
    err: str

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def run_monitor(cfg: Path, *args: str, kill_after: float = 60) -> Run:
    """`monitor --config cfg ARGS` in a subprocess, with its own peak RSS (VmHWM)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE, _ADDRESS_SPACE))

    with tempfile.TemporaryDirectory() as tmp:
        out, err, peak = (Path(tmp) / name for name in ("out", "err", "peak"))
        with out.open("wb") as out_file, err.open("wb") as err_file:
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-c", MONITOR, str(peak), "--config", str(cfg), *args],
                stdout=out_file,
                stderr=err_file,
                preexec_fn=limit,
            )
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            ended = time.monotonic()
        run = Run(
            proc.returncode,
            started,
            ended,
            int(peak.read_text() or 0) / 1024 if peak.exists() else float("inf"),
            out.read_text(errors="replace"),
            err.read_text(errors="replace"),
        )
    print(f"\nmonitor {' '.join(args)}: exit {run.code}, {run.seconds:.1f}s, {run.peak_mb:.0f} MB")
    return run


def feeds_json(cfg: Path) -> dict[str, dict[str, Any]]:
    run = run_monitor(cfg, "feeds", "--json")
    assert run.code == 0, run.err
    return {row["name"]: row for row in map(json.loads, run.out.splitlines())}


@pytest.fixture
def normal(feed_server: FeedServer) -> str:
    feed_server.routes["/normal.xml"] = Route(NORMAL)
    return feed_server.url("/normal.xml")


def attack(
    tmp_path: Path, slack: FakeSlack, normal: str, hostile: str
) -> tuple[Run, dict[str, Any]]:
    """One poll with the hostile feed beside the normal one, and the checks every attack
    ends with; returns the run and the hostile feed's row for the attack's own checks."""
    cfg = write_config(
        tmp_path / "c",
        [{"name": "hostile", "url": hostile}, {"name": "normal", "url": normal}],
        settings=SETTINGS,
    )
    run = run_monitor(cfg, "poll")
    assert run.code == 0, run.err
    assert "Traceback" not in run.err, run.err
    [alert] = slack.in_channel("#china-desk")
    assert alert["text"].startswith("Qin Gang misses Asean meeting")
    assert run.peak_mb < MEMORY_MB, run.err
    rows = feeds_json(cfg)
    assert rows["normal"]["state"] == "ok"
    assert rows["hostile"]["state"] == "failing" and rows["hostile"]["last_error"], rows
    return run, rows["hostile"]


def _stream(compress: Any, total: int, chunk: int = 16 << 20) -> bytes:
    block = b"\0" * chunk
    return b"".join(compress(block) for _ in range(total // chunk))


@pytest.fixture(scope="module")
def brotli_bomb() -> bytes:
    """1 GiB of zeros in about 2 kB."""
    packer = brotli.Compressor(quality=5)
    return _stream(packer.process, GIB) + packer.finish()


@pytest.fixture(scope="module")
def double_gzip_bomb() -> bytes:
    """1 GiB of zeros gzipped twice: about 2 kB, and 1 MB after one layer."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return gzip.compress(_stream(packer.compress, GIB) + packer.flush())


@pytest.mark.slow
def test_brotli_bomb(
    tmp_path: Path, slack_env: FakeSlack, feed_server: FeedServer, normal: str, brotli_bomb: bytes
) -> None:
    feed_server.routes["/br.xml"] = Route(brotli_bomb, headers={"Content-Encoding": "br"})
    run, hostile = attack(tmp_path, slack_env, normal, feed_server.url("/br.xml"))
    assert run.seconds < DEADLINE + 10
    assert "decoded body exceeds the 20971520-byte cap" in hostile["last_error"]


@pytest.mark.slow
def test_double_gzip_bomb(
    tmp_path: Path,
    slack_env: FakeSlack,
    feed_server: FeedServer,
    normal: str,
    double_gzip_bomb: bytes,
) -> None:
    feed_server.routes["/gz.xml"] = Route(
        double_gzip_bomb, headers={"Content-Encoding": "gzip, gzip"}
    )
    run, hostile = attack(tmp_path, slack_env, normal, feed_server.url("/gz.xml"))
    assert run.seconds < DEADLINE + 10
    assert "more than one content coding (gzip, gzip)" in hostile["last_error"]


@pytest.mark.slow
def test_slow_headers_cannot_outlast_the_deadline(
    tmp_path: Path, slack_env: FakeSlack, normal: str
) -> None:
    """Headers one byte a second, never ending: each read returns well within the read
    timeout, so only a deadline over the whole exchange stops it."""
    with running(RawServer(trickle_headers(1.0))) as slow:
        run, hostile = attack(tmp_path, slack_env, normal, slow.url("/slow.xml"))
        [accepted] = slow.accepted
        assert run.ended - accepted < DEADLINE + 10
        [hung_up] = slow.hung_up
        assert hung_up - accepted < DEADLINE + 10
    assert f"longer than the {DEADLINE}s deadline" in hostile["last_error"]


def _entity_bomb(size: int, refs: int) -> bytes:
    entity = "A" * size
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n'
        f'<!ENTITY big "{entity}">\n]>\n'
        '<rss version="2.0"><channel><title>t</title><item><title>Expanding</title>'
        f"<guid>x</guid><description>{'&big;' * refs}</description></item></channel></rss>"
    ).encode()


@pytest.mark.slow
def test_xml_entity_expansion(
    tmp_path: Path, slack_env: FakeSlack, feed_server: FeedServer, normal: str
) -> None:
    """An entity of 40 kB referenced 5,000 times: 200 million characters from 65 kB."""
    bomb = _entity_bomb(40_000, 5_000)
    feed_server.routes["/entities.xml"] = Route(bomb)
    run, hostile = attack(tmp_path, slack_env, normal, feed_server.url("/entities.xml"))
    assert run.seconds < DEADLINE + 10
    assert "declares the XML entity 'big'" in hostile["last_error"]
    # monitor explain on the same document, as a file: one line, no traceback
    path = tmp_path / "bomb.xml"
    path.write_bytes(bomb)
    run = run_monitor(tmp_path / "c", "explain", str(path))
    assert run.code == 1 and run.peak_mb < MEMORY_MB
    [line] = run.err.splitlines()
    assert "declares the XML entity 'big'" in line and str(path) in line


SECRETS = ("s3cret-pw", "KEY123", "TOK456")


@pytest.mark.slow
def test_credentials_in_feed_urls_are_never_shown(
    tmp_path: Path, slack_env: FakeSlack, feed_server: FeedServer
) -> None:
    """A password and keys in feed URLs reach the publisher, and nowhere else: not the
    log, `monitor feeds` (text and JSON, working feed or failing), `monitor explain`
    errors, the stored error or the ops channel's message."""
    port = feed_server.port
    # a relative link resolves against the feed's address, without its credentials
    feed_server.routes["/private.xml?apikey=KEY123&q=china"] = Route(
        NORMAL.replace(b"https://n.example/qin", b"/qin")
    )
    cfg = write_config(
        tmp_path / "c",
        [
            {
                "name": "private",
                "url": f"http://reader:s3cret-pw@127.0.0.1:{port}/private.xml?apikey=KEY123&q=china",
            },
            {"name": "broken", "url": f"http://u:s3cret-pw@127.0.0.1:{port}/x.xml?token=TOK456"},
        ],
        settings={"ops_channel": "#ops", "health": {"failing_after": "1ms"}},
    )
    shown = [run_monitor(cfg, "poll").err, run_monitor(cfg, "poll").err]
    [sent] = [h for path, h in feed_server.requests if path.startswith("/private.xml")][:1]
    assert sent["authorization"] == "Basic cmVhZGVyOnMzY3JldC1wdw=="  # the real URL fetched
    [alert] = slack_env.in_channel("#china-desk")
    assert alert["text"].endswith(f" http://127.0.0.1:{port}/qin"), alert["text"]
    [notice] = slack_env.in_channel("#ops")
    assert "http://***@127.0.0.1" in notice["text"] and "token=***" in notice["text"]
    for args in (["feeds"], ["feeds", "--json"], ["--log-format", "json", "poll"]):
        run = run_monitor(cfg, *args)
        shown += [run.out, run.err]
    assert "apikey=***&q=china" in shown[4], shown[4]  # feeds --json
    explain = run_monitor(cfg, "explain", f"http://u:s3cret-pw@127.0.0.1:{port}/x.xml?sig=KEY123")
    assert explain.code == 1 and "http://***@127.0.0.1" in explain.err
    shown += [explain.err, json.dumps(slack_env.messages)]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text, text


def _bomb_watchlist(levels: int = 9) -> str:
    """The issue's 549 bytes: nine levels of nine aliases, 387 million values."""
    lines = ["channel: '#w'", "topics:", "  - name: t", "    phrases:", "      - &l0 x"]
    for level in range(1, levels + 1):
        lines.append(f"      - &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("body", "where", "reason"),
    [
        (_bomb_watchlist(), "10:14:", "refused: aliases repeat more than 10,000 values"),
        (
            "channel: '#w'\ntopics: " + "[" * 100_000 + "]" * 100_000 + "\n",
            "2:72:",
            "refused: nested more than 64 levels deep",
        ),
        (
            "channel: '#w'\nentities:\n  - name: Qin Gang\n    aliases: [2024-02-30]\n",
            "4:15:",
            "YAML cannot read 2024-02-30 as a date",
        ),
    ],
    ids=["aliases", "deep", "impossible-date"],
)
def test_hostile_watchlists_are_refused_where_they_stand(
    tmp_path: Path, body: str, where: str, reason: str
) -> None:
    cfg = write_config(tmp_path / "c", [{"name": "n", "url": "https://n.example/rss"}], [])
    path = cfg / "watchlists" / "bad.yaml"
    path.write_text(body)
    run = run_monitor(cfg, "check")
    assert run.code == 2 and run.peak_mb < MEMORY_MB
    assert run.err == "", run.err
    [line] = run.out.splitlines()
    assert line.startswith(f"{path}:{where}") and reason in line, line


HOSTILE_WATCHLISTS = [
    _bomb_watchlist(),
    "channel: '#w'\ntopics: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "channel: '#w'\nentities:\n  - name: Qin Gang\n    aliases: [2024-02-30]\n",
]


def test_a_hostile_watchlist_saved_into_a_running_service_is_rejected(
    tmp_path: Path, slack_env: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """Hot reload: each bad save is reported where it stands, and the last good config
    stays in force."""
    cfg = write_config(tmp_path / "c", [{"name": "n", "url": "https://n.example/rss"}])
    service = build(config_mod.load(cfg))
    path = cfg / "watchlists" / "us-china.yaml"
    try:
        for body in HOSTILE_WATCHLISTS:
            caplog.clear()
            path.write_text(body)
            assert service.reload() is False
            [watchlist] = service.config.watchlists
            assert watchlist.name == "us-china" and watchlist.entities[0].name == "Qin Gang"
            [rejected] = [r for r in caplog.records if "config edit rejected" in r.getMessage()]
            assert f"{path}:" in rejected.getMessage()
    finally:
        service.close()


@pytest.mark.parametrize("where", ["under-a-file", "under-proc"])
@pytest.mark.parametrize("command", ["poll", "feeds"])
def test_a_data_dir_that_cannot_be_made_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: str,
    command: str,
) -> None:
    (tmp_path / "a-file").write_text("")
    data_dir = (
        tmp_path / "a-file" / "data" if where == "under-a-file" else Path("/proc/monitor/data")
    )
    monkeypatch.delenv("MONITOR_DATABASE_URL", raising=False)
    cfg = write_config(
        tmp_path / "c",
        [{"name": "n", "url": "https://n.example/rss"}],
        settings={"data_dir": str(data_dir)},
    )
    assert main(["--config", str(cfg), command]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"data directory {data_dir}: cannot create it ("), line


@pytest.mark.parametrize("host", ["0177.0.0.1", "0x7f.1", "2130706433"])
def test_explain_on_a_host_in_odd_form_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    cfg = write_config(tmp_path / "c", [{"name": "n", "url": "https://n.example/rss"}])
    assert main(["--config", str(cfg), "explain", f"http://{host}/feed.xml"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "command failed" in line and "write it as 127.0.0.1" in line, line
