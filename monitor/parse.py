"""Parse stage: feed bytes to Items, with markup stripped and dates in UTC."""

from __future__ import annotations

import bisect
import calendar
import functools
import io
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

from monitor.errors import ParseError, UnsafeDocument
from monitor.models import Fetched, Item, as_utc, http_date
from monitor.redact import redact

log = logging.getLogger(__name__)

_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "tr",
        "td",
        "th",
        "pre",
        "section",
        "article",
        "figcaption",
    ]
)
_SKIP_TAGS = frozenset(("script", "style", "noscript", "template"))
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\s*\n\s*")
# Characters that do not show but change what shows: zero-width ones (a word that looks
# whole but is not), and bidirectional controls, which can make a headline display in
# another order than it is written (a reversed "link"). Feed text never needs them.
_INVISIBLE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    items: list[Item]
    warning: str | None  # set when feedparser flagged the document but still found entries
    ttl: timedelta | None = None  # RSS <ttl>: the publisher's hint at how often to look


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment, entities unescaped, whitespace tidied."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return tidy("".join(extractor.parts))


def tidy(text: str) -> str:
    """Untrusted text as shown, matched and stored: invisible and bidirectional control
    characters removed, white space folded."""
    return _BLANK_LINES.sub("\n", _SPACES.sub(" ", _INVISIBLE.sub("", text))).strip()


def _link(value: Any) -> str | None:
    return _INVISIBLE.sub("", str(value or "")).strip() or None


def _text(detail: Any, fallback: str) -> str:
    """feedparser says whether a field is HTML; plain text must stay as written (a
    headline reading `<!channel>` is text, not a tag to drop)."""
    kind = (detail or {}).get("type", "text/html")
    if "html" in kind:
        return html_to_text(fallback)
    return tidy(fallback)


def _when(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            try:
                return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
            except (OverflowError, ValueError, OSError):
                continue
    return None


def _item(entry: Any) -> Item:
    content = "\n\n".join(
        _text(c, c.get("value", "")) for c in entry.get("content", []) if c.get("value")
    )
    guid = (entry.get("id") or "").strip() or None
    return Item(
        title=_text(entry.get("title_detail"), entry.get("title", "")),
        link=_link(entry.get("link")),
        guid=guid,
        summary=_text(entry.get("summary_detail"), entry.get("summary", "")),
        content=content,
        published=_when(entry),
        author=tidy(entry.get("author") or "") or None,
    )


def parse(fetched: Fetched) -> ParsedFeed:
    """Raises ParseError when the body holds no feed at all; a flawed feed with entries is used."""
    if _looks_like_json(fetched):
        return parse_json_feed(fetched)
    result = _feedparser(fetched.body, fetched)
    if not result.entries and _PREFIXED.search(fetched.body[:4096]):
        result = _feedparser(_unprefix(fetched.body), fetched)
    if not result.entries and not result.get("version"):
        reason = result.get("bozo_exception") or "no feed found in the response"
        raise ParseError(fetched.url, f"not an RSS/Atom feed: {reason}")
    items: list[Item] = []
    for index, entry in enumerate(result.entries):
        try:
            item = _item(entry)
        except Exception as exc:  # one broken entry must not cost the feed its other items
            log.warning(
                "skipping unreadable entry",
                extra={"url": redact(fetched.url), "index": index, "error": repr(exc)},
            )
            continue
        if item.title or item.body or item.link:
            items.append(item)
    warning = str(result.get("bozo_exception")) if result.get("bozo") else None
    feed = result.get("feed") or {}
    title = tidy(feed.get("title", ""))
    ttl = str(feed.get("ttl", "")).strip()
    return ParsedFeed(
        title=title,
        items=items,
        warning=warning,
        ttl=timedelta(minutes=int(ttl)) if ttl.isdigit() else None,
    )


_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_DECLARATION = re.compile(rb"<!ENTITY\s*(%\s*)?([^\s\"'>]*)", re.IGNORECASE)
# the one declaration a feed has a use for: a name for one character, as HTML's &nbsp;
_CHARACTER = re.compile(
    rb"<!ENTITY\s+[^\s%\"'>]+\s+(\"|')&#(?:[0-9]{1,7}|x[0-9a-f]{1,6});\1\s*>", re.IGNORECASE
)
_SHIELDS = rb"<!--.*?(?:-->|\Z)|<!\[CDATA\[.*?(?:\]\]>|\Z)"  # comments and CDATA sections
_SHIELD = re.compile(_SHIELDS, re.DOTALL)
_SHIELD_OR_ELEMENT = re.compile(_SHIELDS + rb"|<[\w:]", re.DOTALL)


def _unsafe_entities(data: bytes) -> str | None:
    """Why a document must not be parsed, if it declares XML entities: feedparser's loose
    parser expands them without limit (one 40 kB entity referenced a thousand times makes
    a 40 MB article; a few more, gigabytes). Only declarations naming one character are let
    through: they expand to less than their reference. `data` is the document as the
    parsers see it (converted to UTF-8 as feedparser converts it). A declaration inside a
    comment or CDATA section counts before the root element (feedparser's own DOCTYPE
    handling does not see comments there) and is text after it."""
    if not _ENTITY.search(data):
        return None
    shields: list[int] = []  # start, end, start, end, ... of each section after the root
    root = None
    for m in _SHIELD_OR_ELEMENT.finditer(data):
        if not m[0].startswith(b"<!"):
            root = m.start()
            break
    if root is not None:
        shields = [i for m in _SHIELD.finditer(data, root) for i in m.span()]
    for m in _DECLARATION.finditer(data):
        if bisect.bisect_right(shields, m.start()) % 2 or _CHARACTER.match(data, m.start()):
            continue
        kind = "parameter entity" if m[1] else "entity"
        name = m[2].decode("utf-8", "replace")[:40]
        return (
            f"refused: declares the XML {kind} {name!r}; entity declarations can expand a "
            "small document without bound (only single-character ones such as "
            '<!ENTITY nbsp "&#160;"> are read)'
        )
    return None


_PREFIXED = re.compile(rb"<rss:(?:channel|item)\b")
_BROKEN_DECLARATION = re.compile(rb"<\?xml\?xml[^>]*\?\?>")


def _feedparser(body: bytes, fetched: Fetched) -> Any:
    """Links and guids are still made absolute; HTML inside entries is neither sanitised
    nor has its URIs resolved, since it is only ever reduced to text here (scripts and
    styles dropped): those two passes cost feedparser about a third of its time.
    Every body is first looked at as the parsers will read it, for entity declarations."""
    # Imported here: a poll where every feed answers 304 never parses (and the full-text
    # path imports this module for `tidy` alone).
    import feedparser
    from feedparser.encodings import convert_to_utf8

    _cache_base_uris()
    unsafe = _unsafe_entities(convert_to_utf8(dict(fetched.headers), body, {}))
    if unsafe:
        raise UnsafeDocument(fetched.url, unsafe)
    return feedparser.parse(
        io.BytesIO(body),
        response_headers=fetched.headers,
        resolve_relative_uris=False,
        sanitize_html=False,
    )


@functools.cache
def _cache_base_uris() -> None:
    """feedparser makes the base URI safe and absolute again at every start tag, joining
    it to itself (`make_safe_absolute_uri(base, base)`): with a base (the Content-Location
    given it) that is about a quarter of its time. The function is pure (two strings in,
    one out), so a small cache in front of it answers the same for a fraction of that."""
    from feedparser import mixin

    mixin.make_safe_absolute_uri = functools.lru_cache(maxsize=64)(mixin.make_safe_absolute_uri)


def _unprefix(body: bytes) -> bytes:
    """Some generators write RSS with an undeclared `rss:` prefix on every element (and a
    mangled XML declaration); without the prefix it is plain RSS 2.0."""
    body = _BROKEN_DECLARATION.sub(b"", body)
    return re.sub(rb"(</?|\s)rss:", rb"\1", body)


def _looks_like_json(fetched: Fetched) -> bool:
    kind = fetched.headers.get("content-type", "").lower()
    start = fetched.body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return "json" in kind or start.startswith(b"{")


def parse_json_feed(fetched: Fetched) -> ParsedFeed:
    """JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1), which feedparser does not
    read, into the same Items as RSS and Atom."""
    try:
        doc = json.loads(fetched.body.decode("utf-8-sig"), strict=False)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(fetched.url, f"not a JSON Feed: {exc}") from exc
    if isinstance(doc, dict) and isinstance((doc.get("rss") or {}).get("channel"), dict):
        return _rss_in_json(doc["rss"]["channel"], fetched)
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise ParseError(fetched.url, "not a JSON Feed: no items list")
    base = str(doc.get("home_page_url") or doc.get("feed_url") or fetched.url)
    items = []
    for index, raw in enumerate(doc["items"]):
        if not isinstance(raw, dict):
            log.warning(
                "skipping unreadable entry", extra={"url": redact(fetched.url), "index": index}
            )
            continue
        link = raw.get("url") or raw.get("external_url")
        authors = raw.get("authors") or ([raw["author"]] if raw.get("author") else [])
        content = (
            html_to_text(str(raw["content_html"]))
            if raw.get("content_html")
            else tidy(str(raw.get("content_text") or ""))
        )
        item = Item(
            title=tidy(str(raw.get("title") or "")),
            link=_link(urljoin(base, str(link))) if link else None,
            guid=str(raw["id"]).strip() if raw.get("id") not in (None, "") else None,
            summary=tidy(str(raw.get("summary") or "")),
            content=content,
            published=_iso_date(raw.get("date_published") or raw.get("date_modified")),
            author=next(
                (tidy(str(a["name"])) for a in authors if isinstance(a, dict) and a.get("name")),
                None,
            ),
        )
        if item.title or item.body or item.link:
            items.append(item)
    return ParsedFeed(title=tidy(str(doc.get("title") or "")), items=items, warning=None)


def _rss_in_json(channel: dict[str, Any], fetched: Fetched) -> ParsedFeed:
    """Scripting News' RSS-in-JSON: an RSS 2.0 channel written as JSON."""
    raw_items = channel.get("item") or []
    items = []
    for raw in raw_items if isinstance(raw_items, list) else [raw_items]:
        if not isinstance(raw, dict):
            continue
        link = raw.get("link")
        items.append(
            Item(
                title=tidy(str(raw.get("title") or "")),
                link=_link(urljoin(fetched.url, str(link))) if link else None,
                guid=str(raw["guid"]) if raw.get("guid") else None,
                summary=html_to_text(str(raw.get("description") or "")),
                content="",
                published=http_date(str(raw.get("pubDate") or "")),
            )
        )
    return ParsedFeed(title=tidy(str(channel.get("title") or "")), items=items, warning=None)


def _iso_date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return as_utc(parsed)
