"""Real HTTP servers on 127.0.0.1 for tests: a feed server and a fake Slack Web API."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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
    trickle: float = 0.0  # seconds between chunks of 64 bytes: a server that never finishes
    length: bool = True  # send Content-Length; False: the body ends when the connection does


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default 5 drops concurrent SYNs, costing a 1s retransmit


class FeedServer:
    """Serves routes by path; honours If-None-Match with a 304 like a well-behaved publisher.
    With `keep_alive` it speaks HTTP/1.1 and keeps connections open, as most publishers
    do; `connections` counts those it accepted."""

    def __init__(self, keep_alive: bool = False) -> None:
        self.routes: dict[str, Route] = {}
        self.connections = 0
        self.hits: dict[str, int] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.in_flight: dict[str, int] = {}  # by Host header
        self.most_in_flight: dict[str, int] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def setup(self) -> None:
                super().setup()
                with owner.lock:
                    owner.connections += 1

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                host = self.headers.get("Host", "")
                with owner.lock:
                    owner.in_flight[host] = owner.in_flight.get(host, 0) + 1
                    owner.most_in_flight[host] = max(
                        owner.most_in_flight.get(host, 0), owner.in_flight[host]
                    )
                try:
                    self._get()
                finally:
                    with owner.lock:
                        owner.in_flight[host] -= 1

            def _get(self) -> None:
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
                    if route.length:
                        self.send_header("Content-Length", str(len(body)))
                    else:
                        self.close_connection = True
                    if route.gzip:
                        self.send_header("Content-Encoding", "gzip")
                    if route.etag:
                        self.send_header("ETag", route.etag)
                    for k, v in route.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if route.trickle:
                        for i in range(0, len(body), 64):
                            self.wfile.write(body[i : i + 64])
                            self.wfile.flush()
                            time.sleep(route.trickle)
                    else:
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
    """One scripted answer: an HTTP status, or a Slack error code in a 200.

    `lose` posts the message and then drops the connection before answering, the way a
    crash or a network cut loses the outcome of a send. `lag` holds the request that long
    before Slack counts it, as a loaded machine or network delays a request on its way;
    `hang` holds the answer after it was counted.
    """

    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    hang: float = 0.0
    lose: bool = False
    lag: float = 0.0


def channel_id(name: str) -> str:
    """A stable fake channel ID for a channel name."""
    if name.startswith(("C", "G", "D")) and name[1:].isalnum() and name.isupper():
        return name
    return "C" + hashlib.sha1(name.lstrip("#").encode()).hexdigest()[:10].upper()


class FakeSlack:
    """Speaks enough of Slack's Web API for monitor: chat.postMessage (threads,
    metadata), conversations.history, conversations.replies, conversations.list, and
    incoming webhooks; and for the Slack app: auth.test, apps.connections.open (the URL
    of `socket`, a Socket Mode server, when started with one), chat.update (counted in
    `update_calls` on arrival, then held until `update_gate` is set, as a slow Slack
    would, or refused with the codes in `update_errors`), chat.postEphemeral,
    usergroups.users.list (`groups`) and response URLs (`respond_url`).

    `down` answers every chat.postMessage while set (Slack in an outage); else `script`
    is consumed one reply per chat.postMessage; when empty, `every` patterns
    ({3: Reply(status=429, retry_after=1)} answers every third call so) apply, and then
    success. `min_interval` answers 429 to a second post in a channel within that many
    seconds, as Slack's per-channel limit does. `messages` holds what landed.
    """

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.calls = 0
        self.script: list[Reply] = []
        self.every: dict[int, Reply] = {}
        self.min_interval = 0.0
        self.down: Reply | None = None  # while set, every post is answered so (an outage)
        self.rate_limited = 0
        self.answered = 0  # chat.postMessage answers written back (any status)
        self.hanging = 0  # chat.postMessage requests held unanswered by `hang` now
        self.auth: list[str] = []
        self.lock = threading.Lock()
        self._last_post: dict[str, float] = {}
        self._clock = 0.0
        self.channels = {"china-desk", "climate", "w"}  # channels the bot can see
        self.team = "T0TEAM001"
        self.groups: dict[str, list[str]] = {}  # user group ID -> its members
        self.group_calls = 0
        self.updates: list[dict[str, Any]] = []
        self.updated = threading.Condition(self.lock)
        self.update_calls = 0
        self.update_gate = threading.Event()
        self.update_gate.set()
        self.update_errors: list[str] = []  # chat.update answers these errors first, in turn
        self.ephemerals: list[dict[str, Any]] = []  # chat.postEphemeral and response URLs
        self.ephemeral = threading.Condition(self.lock)
        self.socket: SocketServer | None = None
        self.opened: list[str] = []  # the tokens apps.connections.open was called with
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
                    for key in ("blocks", "metadata"):
                        if isinstance(payload.get(key), str):
                            payload[key] = json.loads(payload[key])
                method = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/api/conversations."):
                    self._json(owner._conversations(method, payload))
                    return
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if self.path.startswith("/respond/") or method in owner._app_methods:
                    answer = owner._app(
                        method if "/api/" in self.path else "respond", payload, token
                    )
                    self._json(answer)
                    return
                with owner.lock:
                    owner.calls += 1
                    owner.auth.append(self.headers.get("Authorization") or "")
                    reply = owner._next_reply()
                if reply.lag:
                    time.sleep(reply.lag)
                with owner.lock:
                    channel = channel_id(str(payload.get("channel", "webhook")))
                    now = time.monotonic()
                    if (
                        reply.status == 200
                        and owner.min_interval
                        and now - owner._last_post.get(channel, -1e9) < owner.min_interval
                    ):
                        owner.rate_limited += 1
                        reply = Reply(status=429, retry_after=1)
                    elif reply.status == 200 and not reply.error:
                        # counted on arrival, as Slack counts: two posts in flight at once
                        # in one channel are caught however long each takes to answer
                        owner._last_post[channel] = now
                if reply.hang:
                    with owner.lock:
                        owner.hanging += 1
                    time.sleep(reply.hang)
                    with owner.lock:
                        owner.hanging -= 1
                try:
                    self._answer(reply, payload, channel)
                finally:
                    with owner.lock:
                        owner.answered += 1

            def _answer(self, reply: Reply, payload: dict[str, Any], channel: str) -> None:
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
                    owner._clock = max(time.time(), owner._clock + 0.000001)
                    ts = f"{owner._clock:.6f}"
                    owner.messages.append(
                        {**payload, "ts": ts, "path": self.path, "channel_id": channel}
                    )
                if reply.lose:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if webhook:
                    self._text(b"ok")
                else:
                    self._json(
                        {
                            "ok": True,
                            "channel": channel,
                            "ts": ts,
                            "message": {"text": payload.get("text"), "ts": ts},
                        }
                    )

            def _json(self, obj: dict[str, Any]) -> None:
                self._text(json.dumps(obj).encode(), "application/json; charset=utf-8")

            def _text(self, body: bytes, kind: str = "text/plain") -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client died waiting (a killed worker): the post still landed

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    _app_methods = (
        "auth.test",
        "apps.connections.open",
        "chat.update",
        "chat.postEphemeral",
        "usergroups.users.list",
    )

    def _app(self, method: str, payload: dict[str, Any], token: str) -> dict[str, Any]:
        """The Web API methods of the Slack app (see the class doc)."""
        if method == "auth.test":
            return {"ok": True, "team_id": self.team, "user_id": "U0BOT0001", "bot_id": "B0BOT1"}
        if method == "apps.connections.open":
            with self.lock:
                self.opened.append(token)
            if self.socket is None or not token.startswith("xapp-"):
                return {"ok": False, "error": "not_allowed_token_type"}
            return {"ok": True, "url": self.socket.url}
        if method == "usergroups.users.list":
            with self.lock:
                self.group_calls += 1
            return {"ok": True, "users": self.groups.get(str(payload.get("usergroup")), [])}
        if method == "chat.update":
            with self.lock:
                self.update_calls += 1
                self.updated.notify_all()
                if self.update_errors:
                    return {"ok": False, "error": self.update_errors.pop(0)}
            self.update_gate.wait()
            with self.lock:
                self.updates.append(payload)
                for message in self.messages:
                    if message["channel_id"] == payload.get("channel") and message[
                        "ts"
                    ] == payload.get("ts"):
                        message.update(blocks=payload.get("blocks"), text=payload.get("text"))
                self.updated.notify_all()
            return {"ok": True, "channel": payload.get("channel"), "ts": payload.get("ts")}
        with self.lock:  # chat.postEphemeral, or a response URL
            self.ephemerals.append({**payload, "via": method})
            self.ephemeral.notify_all()
        return {"ok": True, "message_ts": f"{time.time():.6f}"}

    def wait_for(
        self, cond: threading.Condition, ready: Callable[[], bool], timeout: float = 30
    ) -> bool:
        """Waits (a barrier, not a timed assertion) until `ready()` holds."""
        with cond:
            return cond.wait_for(ready, timeout=timeout)

    def top_level(self) -> list[dict[str, Any]]:
        """The messages posted to a channel, not into a thread."""
        with self.lock:
            return [m for m in self.messages if not m.get("thread_ts")]

    def listed_in_thread(self, parent: dict[str, Any]) -> list[str]:
        """The links a digest's or flood's thread lists, page after page."""
        with self.lock:
            pages = [m for m in self.messages if m.get("thread_ts") == parent["ts"]]
        text = "\n".join(
            b["text"]["text"] for m in pages for b in m["blocks"] if b["type"] == "section"
        )
        return re.findall(r"• <(https://[^|>]+)", text)

    def respond_url(self, n: int = 1) -> str:
        return f"http://127.0.0.1:{self.port}/respond/{n}"

    def _next_reply(self) -> Reply:
        if self.down is not None:
            return self.down
        if self.script:
            return self.script.pop(0)
        for n, reply in sorted(self.every.items(), reverse=True):
            if self.calls % n == 0:
                return reply
        return Reply()

    def _conversations(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if method == "conversations.list":
                names = self.channels | {
                    str(m.get("channel", "")).lstrip("#") for m in self.messages
                }
                return {
                    "ok": True,
                    "channels": [{"id": channel_id(n), "name": n} for n in sorted(names)],
                    "response_metadata": {"next_cursor": ""},
                }
            oldest = float(payload.get("oldest") or 0)
            wanted = payload.get("channel")
            found = [
                m for m in self.messages if m["channel_id"] == wanted and float(m["ts"]) >= oldest
            ]
            if method == "conversations.replies":
                found = [m for m in found if m.get("thread_ts") == payload.get("ts")]
            else:
                found = [m for m in found if not m.get("thread_ts")]
            return {
                "ok": True,
                "messages": [
                    {"ts": m["ts"], "text": m.get("text"), "metadata": m.get("metadata")}
                    for m in reversed(found)
                ],
                "has_more": False,
                "response_metadata": {"next_cursor": ""},
            }

    def in_channel(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["channel_id"] == channel_id(name)]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/XXXX"

    def start(self) -> FakeSlack:
        self.thread.start()
        return self

    def with_socket(self) -> FakeSlack:
        """Also serves Socket Mode: apps.connections.open answers a local websocket's URL."""
        self.socket = SocketServer().start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.socket is not None:
            self.socket.stop()


class SocketServer:
    """Slack's Socket Mode end on 127.0.0.1 (plain ws: slack-sdk's builtin client speaks
    it to any port but 443): says hello to each connection, sends envelopes, and records
    the acks (`acks[envelope_id]` is the ack's payload, or {} for a bare one)."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.acks: dict[str, dict[str, Any]] = {}
        self.acked = threading.Condition()
        self.connected = threading.Condition()
        self._conns: list[Any] = []
        self._count = 0
        self.server = serve(self._serve, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link/?ticket=fake"

    def _serve(self, conn: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        conn.send(json.dumps({"type": "hello", "num_connections": 1}))
        with self.connected:
            self._conns.append(conn)
            self.connected.notify_all()
        try:
            for raw in conn:
                data = json.loads(raw)
                with self.acked:
                    self.acks[data["envelope_id"]] = data.get("payload") or {}
                    self.acked.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self.connected:
                self._conns.remove(conn)

    def wait_connected(self, timeout: float = 30) -> bool:
        with self.connected:
            return self.connected.wait_for(lambda: bool(self._conns), timeout=timeout)

    def send(self, kind: str, payload: dict[str, Any]) -> str:
        """Sends an envelope (`interactive`, `slash_commands`, `events_api`) to the newest
        connection; returns its envelope_id."""
        with self.connected:  # the client may be through its handshake before we see it
            assert self.connected.wait_for(lambda: bool(self._conns), timeout=30)
            self._count += 1
            envelope_id = f"env-{self._count}"
            conn = self._conns[-1]
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind == "slash_commands",
        }
        conn.send(json.dumps(envelope))
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 30) -> bool:
        with self.acked:
            return self.acked.wait_for(lambda: envelope_id in self.acks, timeout=timeout)

    def start(self) -> SocketServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()


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


class RawServer:
    """A TCP server on 127.0.0.1 that hands each connection to `serve`, for answers no
    well-behaved HTTP server gives (headers trickled a byte at a time). It notes when each
    connection was accepted and when the client hung up, by the test's own clock."""

    def __init__(self, serve: Callable[[RawServer, socket.socket], None]) -> None:
        self.serve = serve
        self.accepted: list[float] = []  # time.monotonic() of each accepted connection
        self.hung_up: list[float] = []  # time.monotonic() of each client hang-up seen
        self.stopping = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, suppress(OSError):
            self.serve(self, conn)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> RawServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()


def read_request(conn: socket.socket) -> bytes:
    """The request head, up to its blank line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def trickle_headers(every: float) -> Callable[[RawServer, socket.socket], None]:
    """Answers with a status line and then one header byte every `every` seconds, never
    ending the headers, until the client hangs up (which the server notes)."""

    def serve(server: RawServer, conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nX-Slow: ")
        while not server.stopping.is_set():
            readable, _, _ = select.select([conn], [], [], every)
            if readable and not conn.recv(1):
                server.hung_up.append(time.monotonic())
                return
            conn.sendall(b"a")

    return serve
