"""Fetch stage: one conditional GET per feed, bounded in time and size, through a client
that refuses non-public addresses and never holds more than `per_host` connections to
one publisher.

A publisher controls every byte, so every bound holds whatever it sends: the deadline
covers the whole exchange (name lookup, connect, headers, body, on every redirect hop),
and the size cap bounds memory as well as the kept body (content codings are decoded
here, step by step, never more than a small piece at a time)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import brotli
import httpcore
import httpx

from monitor.config import Settings, numeric_host
from monitor.errors import FetchError, FetchFailure
from monitor.models import Fetched, http_date

_GZIP_MAGIC = b"\x1f\x8b"
# Headers that describe the transfer, not the document: feedparser must not see them
# once the body has been decoded.
_TRANSFER_HEADERS = ("content-encoding", "content-length", "transfer-encoding")
_CODINGS = ("gzip", "x-gzip", "deflate", "br")  # what we decode, and say we accept
_STEP = 64 * 1024  # about the most one decoding step may produce
# When the fetch running in this thread must be done (time.monotonic()); every blocking
# network call made for it waits at most until then.
_DEADLINE: ContextVar[float | None] = ContextVar("fetch_deadline", default=None)


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

    `deadline` caps the whole exchange in seconds: read timeouts alone let a server that
    trickles one byte at a time, in its headers or its body, hold a worker forever. It
    holds for clients made by `http_client`; with another client only between body chunks.
    `accept` replaces the client's Accept header (which asks for feeds), e.g. to ask for
    an article's HTML page.
    """
    headers = {"Accept": accept} if accept else {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    problem = numeric_host(urlsplit(url).hostname or "")
    if problem:
        raise FetchError(url, problem, FetchFailure.BAD_URL)
    started = time.monotonic()
    end = started + deadline
    token = _DEADLINE.set(end)
    try:
        timeout = client.timeout
        request = client.build_request(
            "GET",
            url,
            headers=headers,
            timeout=httpx.Timeout(
                connect=timeout.connect,
                read=timeout.read,
                write=timeout.write,
                pool=min(timeout.pool or deadline, deadline),
            ),
        )
        resp, history = _follow(client, request)
        # where the document is, as a base for its relative links: never our credentials
        located = str(resp.url.copy_with(userinfo=b""))
        try:
            moved = _permanent_redirect(url, history, resp)
            if resp.status_code == 304:
                # a 304 has no body (h11 holds it to none, whatever Content-Length says),
                # but until its end is read the pool cannot reuse the connection
                resp.read()
                return Fetched(
                    located,
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
                    FetchFailure.HTTP_STATUS,
                    status=resp.status_code,
                    retry_after=retry_after(resp.headers),
                )
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(
                    url,
                    f"body of {declared} bytes exceeds the {max_bytes}-byte cap",
                    FetchFailure.TOO_LARGE,
                )
            body = _read_body(resp, url, max_bytes, end, deadline)
            doc_headers = {
                k.lower(): v for k, v in resp.headers.items() if k.lower() not in _TRANSFER_HEADERS
            }
            doc_headers.setdefault("content-location", located)
            return Fetched(
                url=located,
                status=resp.status_code,
                body=unwrap_gzip(body, max_bytes, url),
                headers=doc_headers,
                etag=resp.headers.get("etag"),
                last_modified=resp.headers.get("last-modified"),
                hint=freshness(resp.headers),
                moved_to=moved,
                elapsed=time.monotonic() - started,
            )
        finally:
            resp.close()
    except httpx.TimeoutException as exc:
        if time.monotonic() >= end - 0.05:
            raise FetchError(url, _late(deadline), FetchFailure.TIMEOUT) from exc
        reason = f"timed out ({type(exc).__name__})"
        raise FetchError(url, reason, FetchFailure.TIMEOUT) from exc
    except httpx.TooManyRedirects as exc:
        raise FetchError(url, "too many redirects", FetchFailure.REDIRECTS) from exc
    except httpx.InvalidURL as exc:
        raise FetchError(url, f"bad URL: {exc}", FetchFailure.BAD_URL) from exc
    except httpx.HTTPError as exc:
        raise FetchError(url, f"{type(exc).__name__}: {exc}", _transport_failure(exc)) from exc
    finally:
        _DEADLINE.reset(token)


def _transport_failure(exc: BaseException) -> FetchFailure:
    """What a transport error comes down to, judged by the exceptions under it (httpx
    raises each from httpcore's, which is raised from the socket's or ssl's, or is one of
    our backend's _Refused)."""
    seen: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in seen:
        seen.append(cause)
        if isinstance(cause, _Refused):
            return cause.failure
        if isinstance(cause, ssl.SSLError):
            return FetchFailure.TLS
        if isinstance(cause, socket.gaierror):
            return FetchFailure.DNS
        if isinstance(cause, ConnectionRefusedError | ConnectionResetError):
            return FetchFailure.REFUSED
        cause = cause.__cause__ or cause.__context__
    return FetchFailure.NETWORK


class _Refused(httpcore.ConnectError):
    """A connection our backend would not make, and why (it reaches FetchError.kind)."""

    def __init__(self, message: str, failure: FetchFailure) -> None:
        super().__init__(message)
        self.failure = failure


def _late(deadline: float) -> str:
    return f"took longer than the {deadline:g}s deadline (connect, headers and body)"


def _follow(
    client: httpx.Client, request: httpx.Request
) -> tuple[httpx.Response, list[httpx.Response]]:
    """Sends `request`, following redirects here rather than in httpx, which reads each
    redirect's whole body (decoded, uncapped) before it moves on."""
    history: list[httpx.Response] = []
    while True:
        resp = client.send(request, stream=True, follow_redirects=False)
        if resp.next_request is None:
            return resp, history
        resp.close()
        history.append(resp)
        if len(history) > client.max_redirects:
            raise httpx.TooManyRedirects("too many redirects", request=request)
        request = resp.next_request


def _read_body(
    resp: httpx.Response, url: str, max_bytes: int, end: float, deadline: float
) -> bytes:
    """The body, decoded as it arrives: both what comes off the wire and what decoding
    makes of it are counted against the cap as they come."""
    coding = _coding(resp.headers, url)
    decoder = _decoder(coding) if coding else None
    kept = _Kept(max_bytes, url)
    received = 0
    try:
        for chunk in resp.iter_raw():
            received += len(chunk)
            if received > max_bytes:
                reason = f"body exceeds the {max_bytes}-byte cap"
                raise FetchError(url, reason, FetchFailure.TOO_LARGE)
            if time.monotonic() > end:
                raise FetchError(url, _late(deadline), FetchFailure.TIMEOUT)
            kept.extend(decoder.feed(chunk) if decoder else (chunk,))
        if decoder:
            kept.extend(decoder.finish())
    except (zlib.error, brotli.error) as exc:
        reason = f"body is not valid {coding}: {exc}"
        raise FetchError(url, reason, FetchFailure.CODING) from exc
    return kept.body()


def _coding(headers: httpx.Headers, url: str) -> str | None:
    """The one content coding we decode, if any. Codings stacked on each other (`gzip,
    gzip`) are refused: each layer multiplies what a few bytes can become."""
    codings = [c.strip().lower() for c in headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > 1:
        reason = f"refused: more than one content coding ({', '.join(codings)})"
        raise FetchError(url, reason, FetchFailure.CODING)
    if codings and codings[0] not in _CODINGS:
        reason = f"refused: unsupported content coding {codings[0]!r}"
        raise FetchError(url, reason, FetchFailure.CODING)
    return codings[0] if codings else None


class _Decoder(Protocol):
    """One content coding, decoded step by step: no step yields much more than _STEP
    bytes, whatever the compression ratio, so a bomb stops at the cap."""

    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def finish(self) -> Iterator[bytes]: ...


def _decoder(coding: str) -> _Decoder:
    return _Unbrotli() if coding == "br" else _Inflate(raw_allowed=coding == "deflate")


class _Inflate:
    """gzip, or deflate: meant to be zlib-wrapped, which some servers leave out."""

    def __init__(self, raw_allowed: bool) -> None:
        self._inflater = zlib.decompressobj(wbits=15 if raw_allowed else 31)
        self._head: bytes | None = b"" if raw_allowed else None  # until the wrapper shows

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._head is not None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, None
            if not _zlib_header(data):
                self._inflater = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
        while data and not self._inflater.eof:
            out = self._inflater.decompress(data, _STEP)
            data = self._inflater.unconsumed_tail
            yield out
            while len(out) == _STEP and not data and not self._inflater.eof:
                out = self._inflater.decompress(b"", _STEP)  # output still pending
                yield out

    def finish(self) -> Iterator[bytes]:
        if self._head:  # a body of one byte: not a zlib wrapper, then
            self._inflater = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
            yield self._inflater.decompress(self._head, _STEP)


class _Unbrotli:
    def __init__(self) -> None:
        self._brotli = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._brotli.is_finished():
            return  # bytes after the end of the stream are ignored, as zlib does
        yield self._brotli.process(data, output_buffer_limit=_STEP)
        while not self._brotli.can_accept_more_data():
            yield self._brotli.process(b"", output_buffer_limit=_STEP)

    def finish(self) -> Iterator[bytes]:
        while not self._brotli.is_finished():
            out = self._brotli.process(b"", output_buffer_limit=_STEP)
            if not out:
                return  # a truncated stream: what came is kept, as for gzip
            yield out


def _zlib_header(data: bytes) -> bool:
    return data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


class _Kept:
    """Decoded pieces of a body, refused as soon as they add up to more than the cap."""

    def __init__(self, max_bytes: int, url: str) -> None:
        self._max, self._url = max_bytes, url
        self._parts: list[bytes] = []
        self._size = 0

    def extend(self, parts: Iterable[bytes]) -> None:
        for part in parts:
            self._size += len(part)
            if self._size > self._max:
                reason = f"decoded body exceeds the {self._max}-byte cap"
                raise FetchError(self._url, reason, FetchFailure.TOO_LARGE)
            self._parts.append(part)

    def body(self) -> bytes:
        return b"".join(self._parts)


def unwrap_gzip(body: bytes, max_bytes: int, url: str) -> bytes:
    """Some servers send a .gz file without Content-Encoding; unwrap it, within the size
    cap and as step by step as a Content-Encoding."""
    if not body.startswith(_GZIP_MAGIC):
        return body
    decoder = _decoder("gzip")
    kept = _Kept(max_bytes, url)
    try:
        kept.extend(decoder.feed(body))
        kept.extend(decoder.finish())
    except zlib.error as exc:
        reason = f"body looks gzipped but is corrupt: {exc}"
        raise FetchError(url, reason, FetchFailure.CODING) from exc
    return kept.body()


def _permanent_redirect(
    url: str, history: list[httpx.Response], resp: httpx.Response
) -> str | None:
    """Where the feed now lives if every redirect from `url` on was permanent (301/308)."""
    if not history:
        return None
    moved = None
    targets = [hop.url for hop in history[1:]] + [resp.url]
    for hop, target in zip(history, targets, strict=True):
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


def _time_left(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` shortened to what is left of this thread's fetch deadline."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the fetch's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every blocking call waits at most until the deadline of the
    fetch using it (a pooled connection serves many fetches, so it asks each time)."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # CPython bounds a whole TLS handshake by the socket timeout, not each read of it
        wait = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, wait))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DeadlineBackend(httpcore.SyncBackend):
    """Connects within the fetch's deadline: the name is looked up in a thread of its own
    (a resolver can hang for many seconds), each address is dialled with the time left,
    and the connection it makes keeps to the deadline (_DeadlineStream). Hosts written as
    numbers in other than dotted-quad form are refused on every hop: resolvers read
    `0177.0.0.1` or `2130706433` as 127.0.0.1, other parsers as names."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        problem = numeric_host(host)
        if problem:
            raise _Refused(problem, FetchFailure.BAD_URL)
        failure: Exception | None = None
        for address in self.screen(host, _resolve(host, port, timeout)):
            try:
                wait = _time_left(timeout, httpcore.ConnectTimeout)
                stream = super().connect_tcp(
                    str(address), port, wait, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _DeadlineStream(stream)
        raise failure or _Refused(f"cannot resolve {host}: no address", FetchFailure.DNS)

    def screen(self, host: str, addresses: list[IPAddress]) -> list[IPAddress]:
        """The addresses `host` resolved to that may be dialled: all of them, unless a
        guard says otherwise."""
        return addresses


def _resolve(host: str, port: int, timeout: float | None) -> list[IPAddress]:
    if _is_ip(host):
        return [ipaddress.ip_address(host)]
    wait = _time_left(timeout, httpcore.ConnectTimeout)
    answer: list[Any] = []

    def look_up() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(exc)

    worker = threading.Thread(target=look_up, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(wait)
    if not answer:
        raise httpcore.ConnectTimeout(f"looking up {host} took longer than {wait:g}s")
    if isinstance(answer[0], OSError):
        raise _Refused(f"cannot resolve {host}: {answer[0]}", FetchFailure.DNS)
    found: list[IPAddress] = []
    for info in answer[0]:
        address = ipaddress.ip_address(info[4][0])
        if address not in found:
            found.append(address)
    return found


# Python 3.11 rates these global; they are not: RFC 8215's local-use NAT64 prefix
# translates to IPv4 addresses at an offset only its operator knows.
_NOT_PUBLIC = (ipaddress.ip_network("64:ff9b:1::/48"),)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def carried_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, where a translator or tunnel takes the
    packet on: IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96),
    6to4 (2002::/16) and Teredo (2001::/32: its server and client)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = []
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(low)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def is_public(address: IPAddress, networks: Iterable[Network] = ()) -> bool:
    """Whether the guard lets a connection to `address` through: a public address that
    carries only public IPv4 addresses, or one in an allowed network (as is, or by the
    IPv4 address it carries)."""
    judged = [address, *carried_ipv4(address)]
    if any(a in net for net in networks for a in judged):
        return True
    if any(address in net for net in _NOT_PUBLIC):
        return False
    return all(a.is_global for a in judged)


class GuardedBackend(DeadlineBackend):
    """Refuses to connect to private, loopback, link-local and other non-public addresses,
    judging IPv6 forms that embed an IPv4 address by that address too.

    The check runs at connect time on the address actually dialled, so it holds on every
    redirect hop and against DNS answers that change between a check and the connect.
    """

    def __init__(self, allowed_hosts: Iterable[str] = (), allowed_networks: Iterable[Network] = ()):
        self._hosts = {h.lower() for h in allowed_hosts}
        self._networks = list(allowed_networks)

    def screen(self, host: str, addresses: list[IPAddress]) -> list[IPAddress]:
        if host.lower() in self._hosts:
            return addresses
        permitted = [a for a in addresses if is_public(a, self._networks)]
        if not permitted:
            raise _Refused(
                f"refused: {host} resolves to non-public address "
                f"{', '.join(str(a) for a in addresses)} "
                "(set allow_private_networks or allowed_hosts to fetch internal feeds)",
                FetchFailure.UNSAFE,
            )
        return permitted


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the connection pool dialling through `backend`."""

    def __init__(self, backend: DeadlineBackend, **kwargs: Any) -> None:
        # one context for both pools: loading the CA bundle is ~20 ms of a process's start
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context, **kwargs)
        limits = kwargs.get("limits", httpx.Limits())
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def http_client(settings: Settings) -> httpx.Client:
    """The feed fetcher's client; it refuses non-public addresses unless told otherwise,
    and keeps every fetch to its deadline either way."""
    http = settings.http
    limits = httpx.Limits(
        max_connections=http.concurrency, max_keepalive_connections=http.concurrency
    )
    backend = DeadlineBackend()
    if not settings.allow_private_networks:
        hosts = [h for h in settings.allowed_hosts if "/" not in h and not _is_ip(h)]
        networks = [
            ipaddress.ip_network(h, strict=False) for h in settings.allowed_hosts if h not in hosts
        ]
        backend = GuardedBackend(hosts, networks)
    return httpx.Client(
        timeout=httpx.Timeout(
            http.read_timeout.total_seconds(), connect=http.connect_timeout.total_seconds()
        ),
        follow_redirects=True,
        max_redirects=http.max_redirects,
        limits=limits,
        transport=GuardedTransport(backend, limits=limits),
        headers={
            "User-Agent": http.agent,
            "Accept": "application/rss+xml, application/atom+xml, application/feed+json, "
            "application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5",
            "Accept-Encoding": ", ".join(c for c in _CODINGS if c != "x-gzip"),
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
