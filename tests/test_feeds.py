"""Feeds at scale: SSRF guard, redirects, publisher hints, per-host limits, JSON Feed,
feed health and its once-only ops messages."""

from __future__ import annotations

import ipaddress
import json
from datetime import timedelta
from pathlib import Path

import httpcore
import httpx
import pytest

from monitor import config as config_mod
from monitor.cli import main
from monitor.errors import FetchError, FetchFailure
from monitor.fetch import (
    GuardedBackend,
    GuardedTransport,
    fetch,
    freshness,
    http_client,
    is_public,
    retry_after,
)
from monitor.models import utcnow
from monitor.pipeline import run_feeds
from monitor.service import build
from tests.conftest import write_config
from tests.servers import FakeSlack, FeedServer, Route, rss

ITEMS = [{"title": "Qin Gang missing", "guid": "1", "link": "https://n.example/1"}]


def guarded(**kw: object) -> httpx.Client:
    return httpx.Client(
        transport=GuardedTransport(GuardedBackend(**kw)),  # type: ignore[arg-type]
        follow_redirects=True,
        timeout=5,
    )


def test_private_addresses_are_refused_by_default(feed_server: FeedServer) -> None:
    feed_server.routes["/f.xml"] = Route(rss(ITEMS))
    with (
        guarded() as client,
        pytest.raises(FetchError, match="refused: 127.0.0.1 resolves to") as info,
    ):
        fetch(client, feed_server.url("/f.xml"), max_bytes=10**6, deadline=5)
    assert info.value.kind is FetchFailure.UNSAFE


def test_the_guard_holds_on_every_redirect_hop(feed_server: FeedServer) -> None:
    feed_server.routes["/f.xml"] = Route(rss(ITEMS))
    feed_server.routes["/jump"] = Route(
        status=302, headers={"Location": f"http://127.0.0.1:{feed_server.port}/f.xml"}
    )
    start = f"http://localhost:{feed_server.port}/jump"
    with guarded(allowed_hosts=["localhost"]) as client:
        with pytest.raises(FetchError, match="refused: 127.0.0.1"):
            fetch(client, start, max_bytes=10**6, deadline=5)
        assert feed_server.hits["/jump"] == 1 and "/f.xml" not in feed_server.hits


def test_allow_lists_and_the_switch(
    feed_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed_server.routes["/f.xml"] = Route(rss(ITEMS))
    with guarded(allowed_networks=[ipaddress.ip_network("127.0.0.0/8")]) as client:
        assert fetch(client, feed_server.url("/f.xml"), max_bytes=10**6, deadline=5).status == 200
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        settings={"allow_private_networks": False},
    )
    settings = config_mod.load(cfg, env={}).settings
    with http_client(settings) as client, pytest.raises(FetchError, match="refused"):
        fetch(client, feed_server.url("/f.xml"), max_bytes=10**6, deadline=5)
    settings = config_mod.load(cfg, env={"MONITOR_ALLOW_PRIVATE_NETWORKS": "1"}).settings
    with http_client(settings) as client:
        assert fetch(client, feed_server.url("/f.xml"), max_bytes=10**6, deadline=5).status == 200


def test_user_agent_names_the_product_and_contact(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.routes["/f.xml"] = Route(rss(ITEMS))
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": feed_server.url("/f.xml")}],
        settings={"http": {"contact_url": "https://desk.example/bot"}},
    )
    with http_client(config_mod.load(cfg, env={}).settings) as client:
        fetch(client, feed_server.url("/f.xml"), max_bytes=10**6, deadline=5)
    assert feed_server.requests[-1][1]["user-agent"] == "monitor/0.1 (+https://desk.example/bot)"


@pytest.mark.parametrize(
    ("status", "moves"), [(301, True), (308, True), (302, False), (307, False)]
)
def test_permanent_redirects_move_the_feed(
    feed_server: FeedServer,
    slack_env: FakeSlack,
    tmp_path: Path,
    status: int,
    moves: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    feed_server.routes["/old.xml"] = Route(status=status, headers={"Location": "/new.xml"})
    feed_server.routes["/new.xml"] = Route(rss(ITEMS))
    cfg = write_config(tmp_path / "c", [{"name": "f", "url": feed_server.url("/old.xml")}])
    main(["--config", str(cfg), "poll"])
    capsys.readouterr()
    main(["--config", str(cfg), "feeds", "--json"])
    [row] = map(json.loads, capsys.readouterr().out.splitlines())
    assert row["url"] == feed_server.url("/new.xml" if moves else "/old.xml")
    assert row["state"] == ("redirected" if moves else "ok")
    feed_server.hits.clear()
    service = build(config_mod.load(cfg))
    run_feeds(service.deps.feeds.states(service.feeds), service.deps)
    service.close()
    assert ("/old.xml" in feed_server.hits) is not moves


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Cache-Control": "public, max-age=3600"}, timedelta(hours=1)),
        (
            {"Expires": "Sun, 29 Nov 2026 12:00:00 GMT", "Date": "Sun, 29 Nov 2026 11:00:00 GMT"},
            timedelta(hours=1),
        ),
        ({"Cache-Control": "no-cache"}, None),
        ({}, None),
    ],
)
def test_freshness_headers(headers: dict[str, str], expected: timedelta | None) -> None:
    assert freshness(httpx.Headers(headers)) == expected


def test_retry_after_header() -> None:
    assert retry_after(httpx.Headers({"Retry-After": "120"})) == timedelta(minutes=2)
    assert retry_after(httpx.Headers({})) is None


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (Route(rss(ITEMS), headers={"Cache-Control": "max-age=7200"}), timedelta(hours=2)),
        (
            Route(
                rss(ITEMS).replace(
                    b"<description>test</description>",
                    b"<description>test</description><ttl>90</ttl>",
                )
            ),
            timedelta(minutes=90),
        ),
        (Route(rss(ITEMS), headers={"Cache-Control": "max-age=9999999"}), timedelta(hours=6)),
        (Route(rss(ITEMS), headers={"Cache-Control": "max-age=5"}), timedelta(minutes=1)),
        (Route(status=429, headers={"Retry-After": "3600"}), timedelta(hours=1)),
        (Route(status=503, headers={"Retry-After": "30"}), timedelta(minutes=1)),
    ],
    ids=["max-age", "ttl", "clamped-to-max", "never-shorter", "429", "503-shorter"],
)
def test_publisher_hints_lengthen_the_interval(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path, route: Route, expected: timedelta
) -> None:
    feed_server.routes["/f.xml"] = route
    cfg = write_config(
        tmp_path / "c", [{"name": "f", "url": feed_server.url("/f.xml"), "interval": "1m"}]
    )
    before = utcnow()
    main(["--config", str(cfg), "poll"])
    service = build(config_mod.load(cfg))
    [row] = service.deps.feeds.rows()
    service.close()
    assert before + expected <= row.next_due_at <= utcnow() + expected


def test_per_host_limit(feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path) -> None:
    feeds = []
    for i in range(8):
        feed_server.routes[f"/{i}.xml"] = Route(rss([]), delay=0.3)
        host = "127.0.0.1" if i % 2 else "localhost"
        feeds.append({"name": f"f{i}", "url": f"http://{host}:{feed_server.port}/{i}.xml"})
    cfg = write_config(tmp_path / "c", feeds, settings={"http": {"per_host": 2, "concurrency": 16}})
    main(["--config", str(cfg), "poll"])
    assert sorted(feed_server.most_in_flight.values()) == [2, 2]


def test_json_feed_alerts_like_rss(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "home_page_url": "https://j.example/",
        "items": [
            {
                "id": "1",
                "url": "/posts/qin",
                "title": "Qin Gang missing",
                "content_html": "<p>Where is <b>Qin Gang</b>?</p>",
                "date_published": utcnow().isoformat(),
            },
            {"id": "2", "url": "/posts/rain", "content_text": "Rain in Rome."},
        ],
    }
    feed_server.routes["/feed.json"] = Route(
        json.dumps(doc).encode(), content_type="application/feed+json"
    )
    cfg = write_config(tmp_path / "c", [{"name": "j", "url": feed_server.url("/feed.json")}])
    main(["--config", str(cfg), "poll"])
    [message] = slack_env.messages
    assert message["text"] == "Qin Gang missing https://j.example/posts/qin"


def test_feed_health_messages_once_and_recovery_once(
    feed_server: FeedServer, slack_env: FakeSlack, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path / "c",
        [{"name": "broken", "url": feed_server.url("/x.xml"), "interval": "1s"}],
        settings={"ops_channel": "#ops", "health": {"failing_after": "1ms"}},
    )
    for _ in range(3):
        main(["--config", str(cfg), "poll"])
    [notice] = slack_env.in_channel("#ops")
    assert notice["text"].startswith("Feed broken has been failing since ")
    assert "HTTP 404" in notice["text"]
    feed_server.routes["/x.xml"] = Route(rss(ITEMS))
    for _ in range(2):
        main(["--config", str(cfg), "poll"])
    texts = [m["text"] for m in slack_env.in_channel("#ops")]
    assert texts[1:] == ["Feed broken has recovered (failing before)"]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254, the cloud metadata service
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("64:ff9b:1::808:808", False),  # local-use NAT64: its mapping is the operator's
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", False),  # 6to4 of 192.168.1.1
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("::a00:1", False),  # IPv4-compatible 10.0.0.1
        ("::808:808", True),  # IPv4-compatible 8.8.8.8
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:8.8.8.8", True),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("2606:4700::1111", True),  # a plain public IPv6 address
        ("::1", False),
        ("fe80::1", False),
        ("8.8.8.8", True),
        ("100.64.0.1", False),  # carrier-grade NAT
    ],
)
def test_the_guard_judges_ipv6_forms_by_the_ipv4_they_carry(address: str, public: bool) -> None:
    """Offline: the guard's verdict, never a connection."""
    assert is_public(ipaddress.ip_address(address)) is public
    if not public:
        with pytest.raises(httpcore.ConnectError, match=f"refused: {address} resolves to"):
            GuardedBackend().connect_tcp(address, 80, timeout=1)


def test_an_allowed_network_lets_its_addresses_through_in_any_form() -> None:
    allowed = [ipaddress.ip_network("10.1.0.0/16")]
    assert is_public(ipaddress.ip_address("64:ff9b::a01:5"), allowed)  # 10.1.0.5
    assert not is_public(ipaddress.ip_address("64:ff9b::a02:5"), allowed)  # 10.2.0.5
