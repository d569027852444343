"""The watchlist author's tools: `monitor explain` and `monitor backtest`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.cli import main
from tests.conftest import SHARED, US_CHINA, write_config
from tests.servers import FakeSlack, FeedServer, Route, rss

SEED = SHARED / "seed" / "us-china-visits-2023-07-24.txt"


@pytest.mark.skipif(not SEED.exists(), reason=f"seed article not found at {SEED}")
def test_explain_the_seed_article(capsys: pytest.CaptureFixture[str]) -> None:
    config = Path(__file__).resolve().parents[1] / "config"
    assert main(["--config", str(config), "explain", str(SEED), "--watchlist", "us-china"]) == 0
    out = capsys.readouterr().out
    assert "us-china: MATCH (about) -> #china-desk" in out
    for term in (
        "Qin Gang",
        "Wang Yi",
        "Li Shangfu",
        "Antony Blinken",
        "military dialogue",
        "export controls",
        "fentanyl",
    ):
        assert f"'{term}'" in out, term
    assert "»Military-to-military communication«" in out
    assert "short form 'Qin' at" in out and "the full name 'Qin Gang' appears" in out


def test_explain_shows_what_decided_each_hit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule, the variant that matched, the title, the prior and the votes: what a
    watchlist author needs to see why."""
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": "https://f.example/rss"}])
    (cfg / "watchlists" / "desk.yaml").write_text(
        yaml.safe_dump(
            {
                "channel": "#desk",
                "entities": [
                    {"name": "Lloyd Austin", "type": "PERSON", "titles": ["defense secretary"]},
                    {"name": "Fumio Kishida", "type": "PERSON"},
                    {"name": "Andrew Young", "type": "PERSON"},
                ],
                "topics": [{"name": "hacking", "phrases": ["hack*"]}],
            }
        )
    )
    feed = tmp_path / "feed.xml"
    feed.write_bytes(
        rss(
            [
                {
                    "title": "Kishida Fumio meets Austin",
                    "guid": "1",
                    "description": "Secretary Austin said hackers struck.",
                },
                {"title": "School fete", "guid": "2", "description": "Ms Young was absent."},
            ]
        )
    )
    assert main(["--config", str(cfg), "explain", str(feed), "--watchlist", "desk"]) == 0
    out = capsys.readouterr().out
    assert "[entity 'Fumio Kishida' by name (family name first)]" in out
    assert "[entity 'Lloyd Austin' by short form (last name)]" in out
    assert "title 'Secretary', as in its declared titles (+2)" in out
    assert "prior: 'Austin' is common (Zipf 4.4), needs +2" in out
    assert "[topic 'hacking' by phrase (prefix hack*)]" in out
    assert "because: 'hackers' for 'hack*': prefix hack*" in out
    assert "evidence: last name 'Young' at" in out and "'Young' is very common" in out
    assert "desk: no match" in out


def test_explain_a_feed_file_and_an_unknown_watchlist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": "https://f.example/rss"}])
    feed = tmp_path / "feed.xml"
    feed.write_bytes(
        rss(
            [
                {"title": "Wang Yilong wins", "guid": "1"},
                {"title": "Wang Yi visits Jakarta", "guid": "2"},
            ]
        )
    )
    assert main(["--config", str(cfg), "explain", str(feed)]) == 0
    out = capsys.readouterr().out
    assert out.count("us-china: no match") == 1 and out.count("us-china: MATCH") == 1
    assert main(["--config", str(cfg), "explain", str(feed), "--watchlist", "nope"]) == 2
    assert "no watchlist named 'nope' (known: us-china)" in capsys.readouterr().err


def test_backtest_runs_an_edited_watchlist_over_stored_articles(
    feed_server: FeedServer,
    slack_env: FakeSlack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    items = [
        {
            "title": f"Market report {i}",
            "guid": f"m{i}",
            "link": f"https://m.example/{i}",
            "description": "Shares were flat.",
        }
        for i in range(600)
    ]
    items += [
        {"title": "Qin Gang missing", "guid": "q", "link": "https://m.example/q"},
        {
            "title": "Heatwave in Rome",
            "guid": "h",
            "link": "https://m.example/h",
            "description": "Temperatures hit 40C in Rome.",
        },
    ]
    feed_server.routes["/f.xml"] = Route(rss(items))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml")}])
    assert main(["--config", str(cfg), "poll"]) == 0
    assert len(slack_env.messages) == 1
    capsys.readouterr()

    edited = {**US_CHINA, "topics": [*US_CHINA["topics"], {"name": "heatwave"}]}
    (cfg / "watchlists" / "us-china.yaml").write_text(yaml.safe_dump(edited))
    assert main(["--config", str(cfg), "backtest", "--watchlist", "us-china", "--since", "1d"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert any("Heatwave in Rome" in line and "[heatwave]" in line for line in lines)
    assert any("Qin Gang missing" in line and "[Qin Gang]" in line for line in lines)
    assert "2 stories would have alerted" in captured.out
    assert "in #china-desk, out of 602 articles" in captured.out
    assert "backtest: 602/602 articles" in captured.err  # progress on a long run
    assert len(slack_env.messages) == 1, "a backtest never alerts"
