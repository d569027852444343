"""docs/payloads/ holds one sample chat.postMessage payload per form of delivery, for
review. This test keeps them true: it renders the same samples and compares.
Regenerate with MONITOR_WRITE_DOCS=1 pytest tests/test_docs.py."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.alert.blocks import message
from monitor.models import Outgoing, Story

DOCS = Path(__file__).resolve().parents[1] / "docs" / "payloads"

QIN = Story(
    title="China's foreign minister Qin Gang misses Asean meeting",
    url="https://news.example/world/asia/qin-gang-asean",
    feed="bbc-asia",
    published=datetime(2023, 7, 13, 9, 30, tzinfo=UTC),
    matched=["Qin Gang"],
    strength="about",
    snippet="Foreign Minister Qin Gang did not attend the meeting in Jakarta, officials said.",
    highlights=[(17, 25)],
    match_id=41,
)
COPY = Story(
    **{
        **QIN.__dict__,
        "title": "Where is Qin Gang? Questions mount in Beijing",
        "url": "https://other.example/2023/07/13/qin",
        "feed": "scmp-china",
        "match_id": 42,
    }
)
DIGEST = [
    QIN,
    Story(
        **{
            **QIN.__dict__,
            "title": "US and China to cooperate on fentanyl",
            "url": "https://news.example/fentanyl",
            "feed": "npr-world",
            "matched": ["fentanyl"],
            "strength": "mention",
        }
    ),
    Story(
        **{
            **QIN.__dict__,
            "title": "Pentagon seeks restored military dialogue",
            "url": "https://news.example/mil",
            "feed": "aljazeera",
            "matched": ["military dialogue", "Li Shangfu"],
        }
    ),
    Story(
        **{
            **QIN.__dict__,
            "title": "Qin's absence fuels speculation",
            "url": "https://news.example/qin-2",
            "feed": "guardian-world",
        }
    ),
]
KEY = "us-china|url:https://news.example/world/asia/qin-gang-asean|#china-desk"
SAMPLES = {
    "immediate": Outgoing(
        1, KEY, "alert", "us-china", "#china-desk", [QIN], mentions=["U0123ABCD"]
    ),
    "thread-followup": Outgoing(
        2,
        KEY + "|also|7",
        "followup",
        "us-china",
        "#china-desk",
        [COPY],
        thread_ts="1689240600.000100",
    ),
    "flood": Outgoing(
        4,
        "flood|#china-desk|41",
        "flood",
        "us-china",
        "#china-desk",
        DIGEST,  # the first ones of the flood: the count is in the label
        label="240 alerts in one poll cycle",
    ),
    "digest": Outgoing(
        3,
        "us-china|digest|2023-07-14T07:00:00+00:00|#china-desk|0",
        "digest",
        "us-china",
        "#china-desk",
        DIGEST,
        label="until Fri 08:00 BST",
    ),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_payloads_are_current(name: str) -> None:
    path = DOCS / f"{name}.json"
    rendered = json.dumps(message(SAMPLES[name]), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("MONITOR_WRITE_DOCS"):
        path.write_text(rendered)
    assert path.read_text() == rendered, f"{path} is stale: regenerate it (see module doc)"


# The README is a user's guide (issue 22): measurements and design notes live in docs/.

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_a_users_guide() -> None:
    heads = [line for line in README.splitlines() if line.startswith("## ")]
    for want in ("Quick start", "Slack set-up", "Commands", "Configuration reference"):
        assert f"## {want}" in heads
    assert "## Operations" in heads and "## Troubleshooting" in heads
    assert "make run" in README and "make test" in README
    assert len(README.splitlines()) < 350, "keep measurements and design notes in docs/"
    assert "2026-" not in README, "dated measurements belong in docs/"


def test_every_setting_is_in_the_readme_reference() -> None:
    from monitor.config import Entity, FeedConfig, Settings, Topic, Watchlist

    queue_row = next(line for line in README.splitlines() if line.startswith("| `queue.*`"))
    for name, field in Settings.model_fields.items():
        nested = field.annotation
        if name == "slack":  # secrets: the environment table names them
            assert all(f"`SLACK_{v}`" in README for v in ("BOT_TOKEN", "API_URL", "WEBHOOK_URL"))
        elif name == "queue":
            assert all(f"`{sub}`" in queue_row for sub in nested.model_fields)  # type: ignore[union-attr]
        elif isinstance(nested, type) and hasattr(nested, "model_fields"):
            for sub in nested.model_fields:
                assert f"`{name}.{sub}`" in README, f"{name}.{sub}"
        else:
            assert f"| `{name}`" in README, name
    for model in (FeedConfig, Watchlist, Entity, Topic):
        for name, field in model.model_fields.items():
            assert f"`{field.alias or name}`" in README, f"{model.__name__}.{name}"


def test_readme_links_resolve() -> None:
    import re

    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_pyproject_names_its_licence_as_spdx() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # a table is deprecated by setuptools
    [setuptools] = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools == "setuptools>=77"  # the first to read the string form
