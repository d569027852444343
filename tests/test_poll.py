from __future__ import annotations

import gzip
import re
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import brotli
import httpx
import pytest

from monitor import config as config_mod
from monitor.config import Settings
from monitor.errors import FetchError, FetchFailure
from monitor.fetch import fetch, http_client
from tests.conftest import write_config
from tests.servers import FeedServer, RawServer, Route, rss, running, trickle_headers

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


def test_unchanged_feeds_reuse_one_connection(tmp_path: Path) -> None:
    """A 304 is read to its end, so the pool keeps its connection for the next fetch."""
    with running(FeedServer(keep_alive=True)) as server, http_client(_settings(tmp_path)) as c:
        server.routes["/f"] = Route(BODY, etag='"v1"')
        first = fetch(c, server.url("/f"), max_bytes=10**6, deadline=5)
        again = [
            fetch(c, server.url("/f"), etag=first.etag, max_bytes=10**6, deadline=5)
            for _ in range(3)
        ]
    assert all(f.not_modified for f in again)
    assert server.hits["/f"] == 4 and server.connections == 1


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
    with pytest.raises(
        FetchError, match=r"/big: body of 5000 bytes exceeds the 1000-byte cap"
    ) as info:
        fetch(client, feed_server.url("/big"), max_bytes=1000, deadline=5)
    assert info.value.kind is FetchFailure.TOO_LARGE


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
    with pytest.raises(FetchError, match="too many redirects") as info:
        fetch(client, feed_server.url("/loop"), max_bytes=10**6, deadline=5)
    assert info.value.kind is FetchFailure.REDIRECTS


def test_http_error_names_url_and_status(client: httpx.Client, feed_server: FeedServer) -> None:
    with pytest.raises(FetchError) as info:
        fetch(client, feed_server.url("/missing"), max_bytes=10**6, deadline=5)
    assert info.value.status == 404 and info.value.kind is FetchFailure.HTTP_STATUS
    assert str(info.value) == f"{feed_server.url('/missing')}: HTTP 404 Not Found"


def test_timeout(client: httpx.Client, feed_server: FeedServer) -> None:
    feed_server.routes["/slow"] = Route(BODY, delay=3)
    with pytest.raises(FetchError, match="timed out") as info:
        fetch(client, feed_server.url("/slow"), max_bytes=10**6, deadline=5)
    assert info.value.kind is FetchFailure.TIMEOUT


def test_connection_refused(client: httpx.Client) -> None:
    with pytest.raises(FetchError, match=r"^http://127.0.0.1:9/x: ConnectError") as info:
        fetch(client, "http://127.0.0.1:9/x", max_bytes=10**6, deadline=5)
    assert info.value.kind is FetchFailure.REFUSED


def _brotli_bomb(total: int = 1 << 30) -> bytes:
    packer = brotli.Compressor(quality=5)
    block = b"\0" * (16 << 20)
    return b"".join(packer.process(block) for _ in range(total // len(block))) + packer.finish()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("br", brotli.compress),
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),  # as the standard says: zlib-wrapped
        ("deflate", lambda b: zlib.compress(b, wbits=-15)),  # as some servers send it: raw
        ("identity", lambda b: b),
        ("gzip, identity", gzip.compress),
    ],
    ids=["br", "gzip", "x-gzip", "deflate", "raw-deflate", "identity", "gzip-identity"],
)
def test_content_codings_are_decoded(
    client: httpx.Client, feed_server: FeedServer, coding: str, encode: Callable[[bytes], bytes]
) -> None:
    feed_server.routes["/c"] = Route(encode(BODY), headers={"Content-Encoding": coding})
    got = fetch(client, feed_server.url("/c"), max_bytes=10**6, deadline=5)
    assert got.body == BODY and "content-encoding" not in got.headers


@pytest.mark.parametrize(
    ("coding", "reason"),
    [
        ("gzip, gzip", r"refused: more than one content coding \(gzip, gzip\)"),
        ("br, gzip", r"refused: more than one content coding \(br, gzip\)"),
        ("zstd", r"refused: unsupported content coding 'zstd'"),
    ],
)
def test_stacked_and_unknown_codings_are_refused(
    client: httpx.Client, feed_server: FeedServer, coding: str, reason: str
) -> None:
    feed_server.routes["/c"] = Route(gzip.compress(gzip.compress(BODY)))
    feed_server.routes["/c"].headers["Content-Encoding"] = coding
    with pytest.raises(FetchError, match=reason):
        fetch(client, feed_server.url("/c"), max_bytes=10**6, deadline=5)


def test_a_brotli_bomb_stops_at_the_cap_as_it_decodes(
    client: httpx.Client, feed_server: FeedServer
) -> None:
    """1 GiB in 2 kB: decoded a step at a time, never more than the cap is held."""
    feed_server.routes["/bomb"] = Route(_brotli_bomb(), headers={"Content-Encoding": "br"})
    tracemalloc.start()
    try:
        with pytest.raises(FetchError, match="decoded body exceeds the 1000000-byte cap"):
            fetch(client, feed_server.url("/bomb"), max_bytes=1_000_000, deadline=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_a_redirect_body_is_never_read(client: httpx.Client, feed_server: FeedServer) -> None:
    """httpx reads a redirect's whole body, decoded and uncapped, before following it."""
    feed_server.routes["/jump"] = Route(
        _brotli_bomb(),
        status=302,
        headers={"Location": "/f", "Content-Encoding": "br"},
    )
    feed_server.routes["/f"] = Route(BODY)
    tracemalloc.start()
    try:
        got = fetch(client, feed_server.url("/jump"), max_bytes=1_000_000, deadline=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.body == BODY and peak < 5_000_000


def _settings(tmp_path: Path, **http: str) -> Settings:
    cfg = write_config(
        tmp_path / "c",
        [{"name": "f", "url": "https://f.example/"}],
        settings={"http": {"connect_timeout": "1s", "read_timeout": "1s", **http}},
    )
    return config_mod.load(cfg, env={}).settings


@pytest.mark.parametrize("guarded", [False, True], ids=["allow-private", "guarded"])
def test_the_deadline_covers_slow_headers(tmp_path: Path, guarded: bool) -> None:
    """Headers a byte every 0.2 s: each read is quick, the exchange never ends."""
    settings = _settings(tmp_path)
    if guarded:
        settings = settings.model_copy(
            update={"allow_private_networks": False, "allowed_hosts": ["127.0.0.0/8"]}
        )
    with running(RawServer(trickle_headers(0.2))) as slow, http_client(settings) as client:
        with pytest.raises(FetchError, match=r"took longer than the 2s deadline"):
            fetch(client, slow.url("/f"), max_bytes=10**6, deadline=2)
        [accepted] = slow.accepted
        deadline = time.monotonic() + 10
        while not slow.hung_up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.hung_up and slow.hung_up[0] - accepted < 2 + 10


def test_the_deadline_covers_every_redirect_hop(tmp_path: Path, feed_server: FeedServer) -> None:
    with (
        running(RawServer(trickle_headers(0.2))) as slow,
        http_client(_settings(tmp_path)) as client,
    ):
        feed_server.routes["/jump"] = Route(status=302, headers={"Location": slow.url("/f")})
        with pytest.raises(FetchError, match=r"took longer than the 2s deadline"):
            fetch(client, feed_server.url("/jump"), max_bytes=10**6, deadline=2)
        assert feed_server.hits["/jump"] == 1 and len(slow.accepted) == 1


def test_the_deadline_covers_a_hanging_name_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resolver that does not answer (here: the C library's lookup made to hang)."""
    looked_up = threading.Event()

    def hang(*args: object, **kwargs: object) -> list[object]:
        looked_up.set()
        time.sleep(30)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    with http_client(_settings(tmp_path, connect_timeout="20s")) as client:
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"took longer than the 1s deadline"):
            fetch(client, "http://feeds.example/f", max_bytes=10**6, deadline=1)
        assert looked_up.is_set() and time.monotonic() - started < 1 + 10


@pytest.mark.parametrize(
    ("host", "means"),
    [("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("2130706433", "127.0.0.1")],
)
def test_hosts_in_octal_hex_or_short_form_are_refused(
    tmp_path: Path, feed_server: FeedServer, host: str, means: str
) -> None:
    """Asked for directly, or reached by a redirect, through a client that lets private
    addresses through: the form itself is refused, not the address."""
    reason = rf"host '{host}' is an IPv4 address in octal, hex or short form: write it as {means}"
    with http_client(_settings(tmp_path)) as client:
        with pytest.raises(FetchError, match=reason):
            fetch(client, f"http://{host}:{feed_server.port}/f", max_bytes=10**6, deadline=5)
        feed_server.routes["/jump"] = Route(
            status=302, headers={"Location": f"http://{host}:{feed_server.port}/f"}
        )
        # httpx itself refuses some forms in a Location header, in its own words
        with pytest.raises(FetchError, match=re.escape(f"'{host}'")):
            fetch(client, feed_server.url("/jump"), max_bytes=10**6, deadline=5)
    assert "/f" not in feed_server.hits
