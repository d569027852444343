"""Fetch stage: one conditional GET per feed, bounded in time and size."""

from __future__ import annotations

import time
import zlib

import httpx

from monitor.errors import FetchError
from monitor.models import Fetched

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
) -> Fetched:
    """GETs `url`, sending the validators from the last fetch so an unchanged feed costs a 304.

    `deadline` caps the whole transfer in seconds: read timeouts alone let a server that
    trickles one byte at a time hold a worker forever.
    """
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    started = time.monotonic()
    try:
        with client.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 304:
                return Fetched(str(resp.url), 304, b"", {}, etag, last_modified)
            if resp.status_code >= 400:
                raise FetchError(
                    url,
                    f"HTTP {resp.status_code} {resp.reason_phrase}".strip(),
                    status=resp.status_code,
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
                body=_gunzip_stray(b"".join(chunks), max_bytes, url),
                headers=doc_headers,
                etag=resp.headers.get("etag"),
                last_modified=resp.headers.get("last-modified"),
            )
    except httpx.TimeoutException as exc:
        raise FetchError(url, f"timed out ({type(exc).__name__})") from exc
    except httpx.TooManyRedirects as exc:
        raise FetchError(url, "too many redirects") from exc
    except httpx.HTTPError as exc:
        raise FetchError(url, f"{type(exc).__name__}: {exc}") from exc


def _gunzip_stray(body: bytes, max_bytes: int, url: str) -> bytes:
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
