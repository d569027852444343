"""Real HTTP servers on 127.0.0.1 for tests: a feed server and a fake Slack Web API."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    etag: str | None = None
    delay: float = 0.0
    gzip: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default 5 drops concurrent SYNs, costing a 1s retransmit


class FeedServer:
    """Serves routes by path; honours If-None-Match with a 304 like a well-behaved publisher."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path
                owner.hits[path] = owner.hits.get(path, 0) + 1
                owner.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
                route = owner.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                if route.delay:
                    time.sleep(route.delay)
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    self.send_response(304)
                    self.send_header("ETag", route.etag)
                    self.end_headers()
                    return
                body = gzip.compress(route.body) if route.gzip else route.body
                try:
                    self.send_response(route.status)
                    self.send_header("Content-Type", route.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    if route.gzip:
                        self.send_header("Content-Encoding", "gzip")
                    if route.etag:
                        self.send_header("ETag", route.etag)
                    for k, v in route.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> FeedServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Reply:
    """One scripted answer: an HTTP status, or a Slack error code in a 200."""

    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    hang: float = 0.0


class FakeSlack:
    """Speaks enough of Slack's Web API (chat.postMessage) and incoming webhooks.

    `script` is consumed one reply per request; when empty, requests succeed.
    Only successful posts land in `messages`, as Slack would show them in a channel.
    """

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.calls = 0
        self.script: list[Reply] = []
        self.auth: list[str] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if "json" in (self.headers.get("Content-Type") or ""):
                    payload = json.loads(raw or b"{}")
                else:
                    payload = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                    if isinstance(payload.get("blocks"), str):
                        payload["blocks"] = json.loads(payload["blocks"])
                with owner.lock:
                    owner.calls += 1
                    owner.auth.append(self.headers.get("Authorization") or "")
                    reply = owner.script.pop(0) if owner.script else Reply()
                if reply.hang:
                    time.sleep(reply.hang)
                webhook = self.path.startswith("/services/")
                if reply.status != 200:
                    self.send_response(reply.status)
                    if reply.retry_after is not None:
                        self.send_header("Retry-After", str(reply.retry_after))
                    body = b'{"ok": false, "error": "ratelimited"}' if reply.status == 429 else b""
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if reply.error:
                    self._json({"ok": False, "error": reply.error})
                    return
                with owner.lock:
                    ts = f"{1700000000 + len(owner.messages)}.{len(owner.messages):06d}"
                    owner.messages.append({**payload, "ts": ts, "path": self.path})
                if webhook:
                    self._text(b"ok")
                else:
                    self._json(
                        {
                            "ok": True,
                            "channel": payload.get("channel"),
                            "ts": ts,
                            "message": {"text": payload.get("text"), "ts": ts},
                        }
                    )

            def _json(self, obj: dict[str, Any]) -> None:
                body = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _text(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/XXXX"

    def start(self) -> FakeSlack:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def running(server: Any) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def rss(items: list[dict[str, Any]], title: str = "Test feed") -> bytes:
    """An RSS 2.0 document; each item may carry title, link, guid, description, published."""
    parts = [
        f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>http://example.com/</link>"
        "<description>test</description>"
    ]
    for item in items:
        parts.append("<item>")
        for tag in ("title", "link", "guid", "description"):
            if item.get(tag) is not None:
                parts.append(f"<{tag}>{escape(str(item[tag]))}</{tag}>")
        published = item.get("published", datetime.now(UTC))
        if published is not None:
            parts.append(f"<pubDate>{format_datetime(published)}</pubDate>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "".join(parts).encode()
