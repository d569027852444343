"""Extract stage: a linked page's HTML to its article's main text, for matching.

Many feeds carry only a headline and a teaser, so the article is matched on the page
it links to. Only the main text counts: a watchlist name in the menu, the footer, a
"related stories" list or the comments is about some other story. trafilatura finds
the text; this module bounds what it is given and tidies what it returns.
"""

from __future__ import annotations

import codecs
import html as entities
import logging
import re
import unicodedata
from itertools import islice
from typing import TYPE_CHECKING, Any, Final

from monitor.models import Fetched, Page, PageOutcome
from monitor.parse import tidy
from monitor.redact import redact

if TYPE_CHECKING:
    from lxml.etree import _Element

log = logging.getLogger(__name__)

# A page is read up to its 5,000,000th byte, its 30,000th start tag or its first tag
# with 1,000 attributes, whichever comes first. The caller caps bodies at 5 MB already.
# 5 MB of markup can hold a million elements, and trafilatura takes ~50 us and ~1.5 kB
# for each (a page of 200,000 <p> took 52 s and 370 MB; cut at 30,000, 1.4 s and 50 MB);
# the corpus's largest page has 9,900, and 30,000 hold more text than max_chars keeps.
# libxml2 parses an element's attributes in quadratic time: 40,000 of them take a
# second, 500,000 minutes. Deep nesting needs nothing of ours: libxml2 stops parsing
# at depth 256 (keeping what came before), so a page of 100,000 nested <div>s is cheap.
MAX_BYTES: Final = 5_000_000
MAX_TAGS: Final = 30_000
MAX_ATTRIBUTES: Final = 1_000
MIN_WORDS: Final = 10  # fewer is a stub, an error page or a paywall, not an article

# Text a reader cannot see (inline display:none, visibility:hidden, the hidden
# attribute) is not the article: menus, modals, hidden SEO copy.
_HIDDEN = (
    '//*[@hidden or contains(translate(@style, " ", ""), "display:none")'
    ' or contains(translate(@style, " ", ""), "visibility:hidden")]'
)
# Chosen on the readability corpus (tests/test_extract.py prints the figures): comments
# are not the article; trafilatura's default balance left less boilerplate than
# favor_recall for as much article text, and favor_precision and fast lost article text.
SETTINGS: Final[dict[str, Any]] = {
    "output_format": "xml",  # the tree, unrendered: _text_of renders it
    "include_comments": False,
    "include_tables": True,
    "include_images": False,
    "include_links": False,
    "include_formatting": False,
    "deduplicate": False,  # its cache spans calls: a story syndicated twice would lose its text
    "with_metadata": False,
    "prune_xpath": _HIDDEN,
}

# Markup as the HTML5 tokenizer (libxml2 2.14's too) reads it, so that what counts as a
# tag here is a tag there: comments, bogus comments (<!...>, <?...>) and the text of
# raw-text elements hold no tags; in a tag, an attribute's name ends at white space, "/",
# ">" or "=", its value is quoted or ends at white space or ">". Possessive throughout and
# consumed match by match, so one pass over the page, whatever it holds.
_ATTRIBUTE = r"""[\s/]*+[^\s/>][^\s/>=]*+(?:\s*+=\s*+(?:"[^"]*+"|'[^']*+'|[^\s>]++))?+"""
_RAW_TEXT = "script|style|textarea|title|xmp|iframe|noembed|noframes"
_MARKUP = re.compile(
    rf"""<!--(?:-?>|.*?(?:--!?>|\Z))
    | <[!?][^>]*+>?
    | <plaintext(?=[\s/>]).*
    | <(?P<raw>(?P<rawname>{_RAW_TEXT})(?=[\s/>])(?:{_ATTRIBUTE})*+)[\s/]*+>?
      .*?(?:</(?P=rawname)(?=[\s/>])|\Z)
    | </?(?P<tag>[A-Za-z][^\s/>]*+(?:{_ATTRIBUTE})*+)[\s/]*+>?
    | </[^A-Za-z>][^>]*+>?
    """,
    re.VERBOSE | re.DOTALL | re.IGNORECASE,
)
_ATTRIBUTES = re.compile(_ATTRIBUTE)
_LONG_TAG = 2 * MAX_ATTRIBUTES  # an attribute takes two characters at least
_META_CHARSET = re.compile(rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.I)
_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_LINE_TAGS = frozenset(("p", "head", "list", "item", "quote", "table", "row", "lb", "div"))
# WHATWG decodes these labels as the superset that pages labelled so are really in.
_SUPERSETS: Final = {
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "tis-620": "cp874",
    "iso8859-11": "cp874",
    "big5": "big5hkscs",
}
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


# What an article page is asked for with, and what answers count as one.
ACCEPT: Final = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
_HTML_TYPES = frozenset(("text/html", "application/xhtml+xml"))
# Types servers send when they do not know: the body itself must then look like HTML.
_UNSURE_TYPES = frozenset(
    ("", "text/plain", "application/octet-stream", "binary/octet-stream", "application/unknown")
)
# First bytes that make a body something other than a page, whatever its Content-Type
# says (WHATWG MIME sniffing's signatures): PDF, PostScript, ZIP, PNG, GIF, JPEG, RIFF
# (WebP, WAV, AVI), Ogg, MP3, Matroska/WebM, fonts, gzip, RAR, 7z.
_NOT_PAGES = (
    b"%PDF-",
    b"%!PS-Adobe-",
    b"PK\x03\x04",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"\xff\xd8\xff",
    b"RIFF",
    b"OggS",
    b"ID3",
    b"\x1aE\xdf\xa3",
    b"wOFF",
    b"wOF2",
    b"\x1f\x8b",
    b"Rar!\x1a\x07",
    b"7z\xbc\xaf\x27\x1c",
)
# How an HTML document starts (WHATWG's HTML signature, with a byte-order mark, an XML
# declaration and comments allowed before it): an untyped body is a page only so.
_HTML_START = re.compile(
    rb"(?:\xef\xbb\xbf)?(?:\s|<\?xml[^>]{0,200}>|<!--.{0,4000}?-->)*"
    rb"<(?:!doctype\s+html|html|head|body|script|iframe|h1|div|font|table|a|style|title|b|br|p|meta)"
    rb"[\s>]",
    re.IGNORECASE | re.DOTALL,
)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def page(fetched: Fetched, *, max_chars: int = 100_000) -> Page:
    """What a fetched page gives to match on: its article's text, or why it gives none."""
    content_type = fetched.headers.get("content-type")
    if not is_html(content_type, fetched.body):
        kind = (content_type or "no Content-Type").split(";")[0].strip()
        return Page(PageOutcome.NOT_HTML, error=f"{kind}, {fetched.body[:8]!r}...")
    text = extract(fetched.body, fetched.url, max_chars=max_chars, charset=charset_of(content_type))
    if text is None:
        return Page(PageOutcome.EMPTY, error="no article text found on the page")
    return Page(PageOutcome.EXTRACTED, text)


def is_html(content_type: str | None, body: bytes) -> bool:
    """Whether a body is an HTML page: by a Content-Type naming HTML, unless the body
    starts like a PDF, an image or an archive; by the body's start when the type is
    missing or says nothing (text/plain, octet-stream); never for any other type."""
    kind = (content_type or "").split(";")[0].strip().lower()
    head = body[:4096]
    if head.startswith(_NOT_PAGES):
        return False
    if kind in _HTML_TYPES:
        # NUL bytes mean binary, unless the page is UTF-16 (its BOM says so)
        return b"\x00" not in head[:1024] or head.startswith((b"\xff\xfe", b"\xfe\xff"))
    return kind in _UNSURE_TYPES and _HTML_START.match(head) is not None


def charset_of(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type header, if any."""
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None


def title(html: bytes, charset: str | None = None) -> str:
    """A page's <title>, as text; empty when it has none."""
    found = _TITLE.search(_decode(html[:65536], charset))
    return tidy(entities.unescape(found.group(1))) if found else ""


def extract(
    html: bytes, url: str, *, max_chars: int = 100_000, charset: str | None = None
) -> str | None:
    """The main text of the article on a page, one paragraph a line, at most max_chars
    long; None when the page holds no article text worth matching. `charset` is the one
    the HTTP Content-Type named, if any. Never raises on what a page holds."""
    # Imported here, not at the top: the import costs ~0.1 s and ~27 MB, which commands
    # that never extract should not pay.
    import trafilatura

    text = _bounded(_decode(html[:MAX_BYTES], charset))
    try:
        document = trafilatura.bare_extraction(text, url=url, **SETTINGS)
    except Exception as exc:  # a heuristic library meeting any page: its bug costs the page only
        log.warning("extraction failed", extra={"url": redact(url), "error": redact(repr(exc))})
        return None
    body = getattr(document, "body", None)
    if body is None:
        return None
    found = unicodedata.normalize("NFC", _text_of(body))
    if len(_WORD.findall(found[:2000])) < MIN_WORDS:
        return None
    return _cut(found, max_chars)


def _decode(data: bytes, charset: str | None = None) -> str:
    """Text of a page: by its byte-order mark, else as UTF-8 if it is valid UTF-8 (pages
    converted to UTF-8 that kept their old label are common, legacy text that happens to
    be valid UTF-8 is not), else by the header's charset, <meta>'s, or windows-1252, the
    web's default; bytes that do not decode become U+FFFD."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        head = data[: error.start]
        if error.reason == "unexpected end of data" and not head.isascii():
            return head.decode("utf-8")  # UTF-8 with its last character cut in two
    found = _META_CHARSET.search(data, 0, 4096)
    for label in (charset, found.group(1).decode("ascii") if found else None):
        codec = _codec(label)
        if codec:
            return data.decode(codec, "replace")
    return data.decode("cp1252", "replace")


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'")).name
    except LookupError:
        return None
    if name.startswith(("utf-16", "utf-32")):  # without a BOM the label is wrong (WHATWG)
        return None
    return _SUPERSETS.get(name, name)


def _bounded(text: str) -> str:
    """The page cut before its MAX_TAGS-th start tag or its first tag of more than
    MAX_ATTRIBUTES attributes, whichever comes first."""
    starts = 0
    for markup in _MARKUP.finditer(text):
        tag = markup.group("tag") or markup.group("raw")
        if tag is None:
            continue
        if len(tag) > _LONG_TAG and _crowded(tag):
            return text[: markup.start()]
        if not text.startswith("</", markup.start()):
            starts += 1
            if starts >= MAX_TAGS:
                return text[: markup.start()]
    return text


def _crowded(tag: str) -> bool:
    return next(islice(_ATTRIBUTES.finditer(tag), MAX_ATTRIBUTES, None), None) is not None


def _text_of(body: _Element) -> str:
    """trafilatura's tree of the article as text: a line per paragraph, heading, list item
    or table row, white space collapsed as a browser shows it (the page source's line
    breaks would split sentences, and the matcher ends a snippet at a newline)."""
    parts: list[str] = []
    _render(body, parts, preformatted=False)
    return tidy("".join(parts))


def _render(element: _Element, parts: list[str], *, preformatted: bool) -> None:
    tag = element.tag
    preformatted = preformatted or tag == "code"
    mark = "\n" if tag in _LINE_TAGS else " " if tag == "cell" else ""
    parts.append(mark)
    if element.text:
        parts.append(element.text if preformatted else _SPACE.sub(" ", element.text))
    for child in element:
        _render(child, parts, preformatted=preformatted)
        if child.tail:
            parts.append(child.tail if preformatted else _SPACE.sub(" ", child.tail))
    parts.append(mark)


def _cut(text: str, max_chars: int) -> str:
    """At most max_chars, ending at a paragraph or else a word if one ends near."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    for mark in ("\n", " "):
        end = head.rfind(mark)
        if end >= max_chars * 0.8:
            return head[:end].rstrip()
    return head
