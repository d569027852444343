"""deploy/: the files operators run, checked with the tools that understand them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "monitor.service").read_text()
    for needed in (
        "User=monitor",
        "EnvironmentFile=",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "StateDirectory=monitor",
        "NoNewPrivileges=true",
    ):
        assert needed in unit
    # verify checks that ExecStart exists: point it at this checkout's console script
    local = Path(sys.executable).with_name("monitor")
    copy = tmp_path / "monitor.service"
    copy.write_text(unit.replace("/opt/monitor/bin/monitor", str(local)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "monitor.service" not in result.stderr, result.stderr


def _compose_checked_by_docker() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


def test_compose_file_is_well_formed() -> None:
    if _compose_checked_by_docker():
        subprocess.run(
            ["docker", "compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
            check=True,
            timeout=60,
        )
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "monitor"}
    monitor = services["monitor"]
    assert monitor["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY.parent / monitor["build"]["context"].replace("..", ".")).exists()
    assert monitor["environment"]["MONITOR_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert monitor["environment"]["MONITOR_WORKERS_MODE"] == "queue"  # so `--scale` works
    assert "container_name" not in monitor  # a fixed name would forbid replicas
    assert set(monitor["depends_on"]) <= set(services)
    for volume in (v.split(":")[0] for s in services.values() for v in s.get("volumes", [])):
        assert volume.startswith(".") or volume in compose["volumes"], volume
    assert "SLACK_BOT_TOKEN" not in str(compose)  # secrets come from .env, not the file


def test_dockerfile_runs_unprivileged() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] != "USER root"
    assert lines.index(users[-1]) < lines.index('CMD ["monitor", "run"]')
    assert "STOPSIGNAL SIGTERM" in lines


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_worker_template_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "monitor@.service").read_text()
    assert "ExecStart=/opt/monitor/bin/monitor run --workers-mode queue" in unit
    assert "User=monitor" in unit and "Restart=on-failure" in unit
    local = Path(sys.executable).with_name("monitor")
    copy = tmp_path / "monitor@.service"
    copy.write_text(unit.replace("/opt/monitor/bin/monitor", str(local)))
    instance = tmp_path / "monitor@1.service"
    instance.symlink_to(copy)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(instance)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "monitor@" not in result.stderr, result.stderr


def test_slack_app_manifest_matches_what_the_service_listens_for() -> None:
    from monitor.slackapp.app import COMMAND, WHY

    manifest = yaml.safe_load((DEPLOY / "slack-app.yaml").read_text())
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True and settings["interactivity"]["is_enabled"]
    [shortcut] = manifest["features"]["shortcuts"]
    assert (shortcut["type"], shortcut["callback_id"]) == ("message", WHY)
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == COMMAND
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "usergroups:read", "commands", "channels:history"} <= scopes
