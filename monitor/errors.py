"""Every error monitor raises on purpose derives from MonitorError, and lives here:

MonitorError
 ├── ConfigError   bad YAML or settings; carries every Problem found (path:line:col)
 ├── UsageError    a command line or setting that asks for what cannot be
 ├── FetchError    a feed could not be fetched (names the URL; `kind` says why: FetchFailure)
 ├── ParseError    a feed's body is not a feed (names the URL)
 │    └── UnsafeDocument  a body refused unparsed: it could exhaust memory
 ├── StoreError    the database refused or is unreachable
 │    └── DatabaseUnavailable  it cannot be reached now (restarting, down, locked): wait
 ├── MeaningError  the meaning model is missing or its weights are not the ones pinned
 ├── FeedbackError a click or an undo names a match or feedback that is not stored
 ├── WorkerDied    a pass worker process exited before answering for its feed
 └── AlertError    a sink refused an alert; `permanent` says retrying cannot help (how a
                   failed send is retried: retries.py)

Besides these: ValueError inside config validators (pydantic turns it into a located
ConfigError) and for a delivery state change the state machine forbids (a bug, see
models.DeliveryStatus); and two private subclasses of library errors that never leave
their module (config._Refused: a YAML document refused while read; fetch._Refused: an
address the SSRF guard refused, turned into FetchError there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from monitor.redact import redact


class MonitorError(Exception):
    """Base of every error monitor raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One config problem, located so an editor can jump to it."""

    path: Path
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class ConfigError(MonitorError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class FetchFailure(StrEnum):
    """Why a fetch failed, decided where it failed (fetch.py): code that must tell failures
    apart (pages.outcome) reads this; the reason's text is for people."""

    HTTP_STATUS = "http_status"  # the server answered with an error (FetchError.status)
    TIMEOUT = "timeout"  # a timeout, or the whole fetch's deadline
    TOO_LARGE = "too_large"  # the body is over the size cap, declared or counted
    UNSAFE = "unsafe"  # the guard refused every address of the host: none is public
    BAD_URL = "bad_url"  # a URL that cannot be fetched, or a host in odd numeric form
    DNS = "dns"  # the host's name did not resolve
    REFUSED = "refused"  # the connection was refused or reset
    TLS = "tls"  # the TLS handshake or the certificate failed
    REDIRECTS = "redirects"  # too many redirects
    CODING = "coding"  # a content coding we refuse, or a body that does not decode
    NETWORK = "network"  # any other transport failure


class FetchError(MonitorError):
    def __init__(
        self,
        url: str,
        reason: str,
        kind: FetchFailure,
        status: int | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        self.url = redact(url)  # people read errors: never a password or a key
        self.reason = redact(reason)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{self.url}: {self.reason}")

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.url, self.reason, self.kind, self.status, self.retry_after)


class ParseError(MonitorError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(url)
        self.reason = redact(reason)
        super().__init__(f"{self.url}: {self.reason}")

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.url, self.reason)


class UnsafeDocument(ParseError):
    """A document refused before any parser sees it (it declares XML entities): unlike a
    body that is merely not a feed, it must not be read as plain text either."""


class StoreError(MonitorError):
    pass


class DatabaseUnavailable(StoreError):
    """The database cannot be reached right now (restarting, down, a SQLite file locked
    past its busy timeout): not a fault of the work, which waits and tries again (see
    outage.py)."""


class MeaningError(MonitorError):
    """The meaning model cannot be had: its package is missing, or its weights fail their
    checksum. Terms that declare senses cannot be judged without it."""


class FeedbackError(MonitorError):
    """A click or an undo that names what is not stored (a pruned match, a mistyped id)."""


class UsageError(MonitorError):
    """A command line or setting that asks for what cannot be: the operator must change it."""


class WorkerDied(MonitorError):
    """A pass worker exited (killed, out of memory, a crash) before answering: its feed
    fails this time, with this as the reason, and is polled again on its interval."""


class AlertError(MonitorError):
    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        unknown_outcome: bool = False,
    ) -> None:
        self.permanent = permanent
        self.retry_after = retry_after  # seconds the sink asked us to wait (HTTP 429)
        self.unknown_outcome = unknown_outcome  # the request went out; the answer did not come
        super().__init__(message)
