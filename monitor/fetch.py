"""Fetch stage: one conditional GET per feed, bounded in time and size, through a client
that refuses non-public addresses and never holds more than `per_host` connections to
one publisher."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from monitor.config import Settings
from monitor.errors import FetchError
from monitor.models import Fetched, http_date

_GZIP_MAGIC = b"\x1f\x8b"
# Headers that describe the transfer, not the document: feedparser must not see them
# once httpx has already decoded the body.
_TRANSFER_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


def fetch(
    client: httpx.Client,
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int,
    deadline: float,
    accept: str | None = None,
) -> Fetched:
    """GETs `url`, sending the validators from the last fetch so an unchanged feed costs a 304.

    `deadline` caps the whole transfer in seconds: read timeouts alone let a server that
    trickles one byte at a time hold a worker forever. `accept` replaces the client's
    Accept header (which asks for feeds), e.g. to ask for an article's HTML page.
    """
    headers = {"Accept": accept} if accept else {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    started = time.monotonic()
    try:
        with client.stream("GET", url, headers=headers) as resp:
            moved = _permanent_redirect(url, resp)
            if resp.status_code == 304:
                return Fetched(
                    str(resp.url),
                    304,
                    b"",
                    {},
                    etag,
                    last_modified,
                    hint=freshness(resp.headers),
                    moved_to=moved,
                    elapsed=time.monotonic() - started,
                )
            if resp.status_code >= 400:
                raise FetchError(
                    url,
                    f"HTTP {resp.status_code} {resp.reason_phrase}".strip(),
                    status=resp.status_code,
                    retry_after=retry_after(resp.headers),
                )
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(url, f"body of {declared} bytes exceeds the {max_bytes}-byte cap")
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(url, f"body exceeds the {max_bytes}-byte cap")
                if time.monotonic() - started > deadline:
                    raise FetchError(url, f"transfer took longer than {deadline:.0f}s")
                chunks.append(chunk)
            doc_headers = {
                k.lower(): v for k, v in resp.headers.items() if k.lower() not in _TRANSFER_HEADERS
            }
            doc_headers.setdefault("content-location", str(resp.url))
            return Fetched(
                url=str(resp.url),
                status=resp.status_code,
                body=unwrap_gzip(b"".join(chunks), max_bytes, url),
                headers=doc_headers,
                etag=resp.headers.get("etag"),
                last_modified=resp.headers.get("last-modified"),
                hint=freshness(resp.headers),
                moved_to=moved,
                elapsed=time.monotonic() - started,
            )
    except httpx.TimeoutException as exc:
        raise FetchError(url, f"timed out ({type(exc).__name__})") from exc
    except httpx.TooManyRedirects as exc:
        raise FetchError(url, "too many redirects") from exc
    except httpx.HTTPError as exc:
        raise FetchError(url, f"{type(exc).__name__}: {exc}") from exc


def _permanent_redirect(url: str, resp: httpx.Response) -> str | None:
    """Where the feed now lives if every redirect from `url` on was permanent (301/308)."""
    if not resp.history:
        return None
    moved = None
    targets = [hop.url for hop in resp.history[1:]] + [resp.url]
    for hop, target in zip(resp.history, targets, strict=True):
        if hop.status_code not in (301, 308):
            break
        moved = str(target)
    return moved if moved != url else None


def freshness(headers: httpx.Headers) -> timedelta | None:
    """How long the publisher says the document stays fresh: max-age, else Expires."""
    for directive in headers.get("cache-control", "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.lower() in ("max-age", "s-maxage") and value.strip('"').isdigit():
            return timedelta(seconds=int(value.strip('"')))
    expires = http_date(headers.get("expires"))
    if expires is not None:
        now = http_date(headers.get("date")) or datetime.now(UTC)
        return max(timedelta(0), expires - now)
    return None


def retry_after(headers: httpx.Headers) -> timedelta | None:
    value = headers.get("retry-after", "").strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    when = http_date(value)
    return max(timedelta(0), when - datetime.now(UTC)) if when else None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class GuardedBackend(httpcore.SyncBackend):
    """Refuses to connect to private, loopback, link-local and other non-public addresses.

    The check runs at connect time on the address actually dialled, so it holds on every
    redirect hop and against DNS answers that change between a check and the connect.
    """

    def __init__(self, allowed_hosts: Iterable[str] = (), allowed_networks: Iterable[Network] = ()):
        self._hosts = {h.lower() for h in allowed_hosts}
        self._networks = list(allowed_networks)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if host.lower() in self._hosts:
            return super().connect_tcp(host, port, timeout, local_address, socket_options)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        refused = []
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if address.is_global or any(address in net for net in self._networks):
                return super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            refused.append(str(address))
        raise httpcore.ConnectError(
            f"refused: {host} resolves to non-public address {', '.join(refused)} "
            "(set allow_private_networks or allowed_hosts to fetch internal feeds)"
        )


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the connection pool dialling through GuardedBackend."""

    def __init__(self, backend: GuardedBackend, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        limits = kwargs.get("limits", httpx.Limits())
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def unwrap_gzip(body: bytes, max_bytes: int, url: str) -> bytes:
    """Some servers send a .gz file without Content-Encoding; unwrap it, within the size cap."""
    if not body.startswith(_GZIP_MAGIC):
        return body
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise FetchError(url, f"body looks gzipped but is corrupt: {exc}") from exc
    if len(out) > max_bytes:
        raise FetchError(url, f"decompressed body exceeds the {max_bytes}-byte cap")
    return out


def http_client(settings: Settings) -> httpx.Client:
    """The feed fetcher's client; it refuses non-public addresses unless told otherwise."""
    http = settings.http
    limits = httpx.Limits(
        max_connections=http.concurrency, max_keepalive_connections=http.concurrency
    )
    transport = None
    if not settings.allow_private_networks:
        hosts = [h for h in settings.allowed_hosts if "/" not in h and not _is_ip(h)]
        networks = [
            ipaddress.ip_network(h, strict=False) for h in settings.allowed_hosts if h not in hosts
        ]
        transport = GuardedTransport(GuardedBackend(hosts, networks), limits=limits)
    return httpx.Client(
        timeout=httpx.Timeout(
            http.read_timeout.total_seconds(), connect=http.connect_timeout.total_seconds()
        ),
        follow_redirects=True,
        max_redirects=http.max_redirects,
        limits=limits,
        transport=transport,
        headers={
            "User-Agent": http.agent,
            "Accept": "application/rss+xml, application/atom+xml, application/feed+json, "
            "application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5",
        },
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class HostLimits:
    """At most `per_host` fetches at once to any one host, however many feeds it serves."""

    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._lock = threading.Lock()
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    def slot(self, url: str) -> threading.BoundedSemaphore:
        host = (urlsplit(url).hostname or "").lower()
        with self._lock:
            if host not in self._slots:
                self._slots[host] = threading.BoundedSemaphore(self._per_host)
            return self._slots[host]
