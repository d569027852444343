"""docs/payloads/ holds one sample chat.postMessage payload per form of delivery, for
review. This test keeps them true: it renders the same samples and compares.
Regenerate with MONITOR_WRITE_DOCS=1 pytest tests/test_docs.py."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.alert.slack import message
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
)
COPY = Story(
    **{
        **QIN.__dict__,
        "title": "Where is Qin Gang? Questions mount in Beijing",
        "url": "https://other.example/2023/07/13/qin",
        "feed": "scmp-china",
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
