from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest

from monitor.errors import FetchError
from monitor.fetch import fetch
from tests.servers import FeedServer, Route, rss

BODY = rss([{"title": "One", "link": "https://e.example/1", "guid": "1"}])


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(
        timeout=httpx.Timeout(1.0, connect=1.0), follow_redirects=True, max_redirects=3
    ) as c:
        yield c


def test_conditional_get_returns_304(client: httpx.Client, feed_server: FeedServer) -> None:
    feed_server.routes["/f"] = Route(
        BODY, etag='"v1"', headers={"Last-Modified": "Sun, 29 Nov 2026 00:00:00 GMT"}
    )
    first = fetch(client, feed_server.url("/f"), max_bytes=10**6, deadline=5)
    assert first.status == 200 and first.body == BODY
    assert first.etag == '"v1"' and first.last_modified == "Sun, 29 Nov 2026 00:00:00 GMT"
    second = fetch(
        client,
        feed_server.url("/f"),
        etag=first.etag,
        last_modified=first.last_modified,
        max_bytes=10**6,
        deadline=5,
    )
    assert second.not_modified and second.body == b""
    assert first.elapsed > 0 and second.elapsed > 0  # both timed, for /metrics and `feeds`
    sent = feed_server.requests[-1][1]
    assert sent["if-none-match"] == '"v1"'
    assert sent["if-modified-since"] == "Sun, 29 Nov 2026 00:00:00 GMT"


def test_gzip_transfer_is_decoded(client: httpx.Client, feed_server: FeedServer) -> None:
    feed_server.routes["/gz"] = Route(BODY, gzip=True)
    got = fetch(client, feed_server.url("/gz"), max_bytes=10**6, deadline=5)
    assert got.body == BODY
    assert "content-encoding" not in got.headers  # feedparser must not decode it twice


def test_stray_gzip_body_is_unwrapped(client: httpx.Client, feed_server: FeedServer) -> None:
    feed_server.routes["/f.xml.gz"] = Route(gzip.compress(BODY), content_type="application/xml")
    assert fetch(client, feed_server.url("/f.xml.gz"), max_bytes=10**6, deadline=5).body == BODY


def test_size_cap(client: httpx.Client, feed_server: FeedServer) -> None:
    feed_server.routes["/big"] = Route(b"x" * 5000)
    with pytest.raises(FetchError, match=r"/big: body of 5000 bytes exceeds the 1000-byte cap"):
        fetch(client, feed_server.url("/big"), max_bytes=1000, deadline=5)


def test_gzip_bomb_is_capped(client: httpx.Client, feed_server: FeedServer) -> None:
    feed_server.routes["/bomb"] = Route(
        gzip.compress(b"a" * 2_000_000), content_type="application/octet-stream"
    )
    with pytest.raises(FetchError, match="exceeds the 100000-byte cap"):
        fetch(client, feed_server.url("/bomb"), max_bytes=100_000, deadline=5)


def test_redirects_are_followed_and_base_url_reported(
    client: httpx.Client, feed_server: FeedServer
) -> None:
    feed_server.routes["/old"] = Route(b"", status=301, headers={"Location": "/new"})
    feed_server.routes["/new"] = Route(BODY)
    got = fetch(client, feed_server.url("/old"), max_bytes=10**6, deadline=5)
    assert got.body == BODY and got.url == feed_server.url("/new")
    assert got.headers["content-location"] == feed_server.url("/new")


def test_redirect_loop(client: httpx.Client, feed_server: FeedServer) -> None:
    feed_server.routes["/loop"] = Route(b"", status=302, headers={"Location": "/loop"})
    with pytest.raises(FetchError, match="too many redirects"):
        fetch(client, feed_server.url("/loop"), max_bytes=10**6, deadline=5)


def test_http_error_names_url_and_status(client: httpx.Client, feed_server: FeedServer) -> None:
    with pytest.raises(FetchError) as info:
        fetch(client, feed_server.url("/missing"), max_bytes=10**6, deadline=5)
    assert info.value.status == 404
    assert str(info.value) == f"{feed_server.url('/missing')}: HTTP 404 Not Found"


def test_timeout(client: httpx.Client, feed_server: FeedServer) -> None:
    feed_server.routes["/slow"] = Route(BODY, delay=3)
    with pytest.raises(FetchError, match="timed out"):
        fetch(client, feed_server.url("/slow"), max_bytes=10**6, deadline=5)


def test_connection_refused(client: httpx.Client) -> None:
    with pytest.raises(FetchError, match=r"^http://127.0.0.1:9/x: ConnectError"):
        fetch(client, "http://127.0.0.1:9/x", max_bytes=10**6, deadline=5)
