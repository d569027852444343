"""Parse stage: feed bytes to Items, with markup stripped and dates in UTC."""

from __future__ import annotations

import calendar
import io
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import feedparser

from monitor.errors import ParseError
from monitor.models import Fetched, Item

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


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    items: list[Item]
    warning: str | None  # set when feedparser flagged the document but still found entries


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
    return _BLANK_LINES.sub("\n", _SPACES.sub(" ", text)).strip()


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
    link = (entry.get("link") or "").strip() or None
    return Item(
        title=_text(entry.get("title_detail"), entry.get("title", "")),
        link=link,
        guid=guid,
        summary=_text(entry.get("summary_detail"), entry.get("summary", "")),
        content=content,
        published=_when(entry),
        author=(entry.get("author") or None),
    )


def parse(fetched: Fetched) -> ParsedFeed:
    """Raises ParseError when the body holds no feed at all; a flawed feed with entries is used."""
    result = feedparser.parse(
        io.BytesIO(fetched.body),
        response_headers=fetched.headers,
        resolve_relative_uris=True,
        sanitize_html=True,
    )
    if not result.entries and not result.get("version"):
        reason = result.get("bozo_exception") or "no feed found in the response"
        raise ParseError(fetched.url, f"not an RSS/Atom feed: {reason}")
    items: list[Item] = []
    for index, entry in enumerate(result.entries):
        try:
            item = _item(entry)
        except Exception as exc:  # one broken entry must not cost the feed its other items
            log.warning(
                "skipping unreadable entry url=%s index=%d error=%r", fetched.url, index, exc
            )
            continue
        if item.title or item.body or item.link:
            items.append(item)
    warning = str(result.get("bozo_exception")) if result.get("bozo") else None
    title = tidy(result.feed.get("title", "")) if result.get("feed") else ""
    return ParsedFeed(title=title, items=items, warning=warning)
