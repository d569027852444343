from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor import config as config_mod
from monitor.errors import ParseError, UnsafeDocument
from monitor.fetch import unwrap_gzip
from monitor.models import Fetched
from monitor.parse import html_to_text, parse
from monitor.pipeline import run_feeds
from monitor.service import build
from tests.conftest import SHARED, write_config
from tests.servers import FeedServer, Route

CORPUS = SHARED / "corpus"


def doc(body: str, headers: dict[str, str] | None = None) -> Fetched:
    return Fetched("http://feeds.example/dir/feed.xml", 200, body.encode(), headers or {})


ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>T</title><id>urn:x</id>
<updated>2023-07-24T10:00:00+08:00</updated>
<entry><title type="text">&lt;!channel&gt; Qin Gang &amp; co</title>
<link href="/news/qin"/><id>urn:1</id>
<updated>2023-07-24T10:00:00+08:00</updated>
<summary type="html">&lt;p&gt;Foreign Minister &lt;b&gt;Qin Gang&lt;/b&gt; &amp;amp; aides.&lt;/p&gt;&lt;script&gt;alert(1)&lt;/script&gt;</summary>
<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Para one.</p><p>Para&#160;two.</p></div></content>
</entry></feed>"""


def test_atom_entry_becomes_clean_item() -> None:
    feed = parse(doc(ATOM, {"content-location": "https://news.example/feeds/atom"}))
    [item] = feed.items
    assert item.title == "<!channel> Qin Gang & co"  # plain text stays literal
    assert item.summary == "Foreign Minister Qin Gang & aides."
    assert item.content == "Para one.\nPara two."
    assert item.link == "https://news.example/news/qin"  # resolved against Content-Location
    assert item.guid == "urn:1"
    assert item.published == datetime(2023, 7, 24, 2, 0, tzinfo=UTC)


def test_links_resolve_against_each_entrys_xml_base() -> None:
    """feedparser's base URIs are cached (parse._cache_base_uris): each entry still
    resolves against its own xml:base, an unsafe one still falls back to its parent's."""
    body = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://a.example/x/"><title>T</title>
<entry><title>1</title><link href="one"/><id>urn:1</id></entry>
<entry xml:base="/y/"><title>2</title><link href="two"/><id>urn:2</id></entry>
<entry xml:base="javascript:alert(1)//"><title>3</title><link href="three"/><id>urn:3</id></entry>
<entry><title>4</title><link href="four"/><id>urn:4</id></entry>
</feed>"""
    for _ in range(2):  # the second time from the cache
        feed = parse(doc(body, {"content-location": "https://feeds.example/dir/feed.xml"}))
        assert [i.link for i in feed.items] == [
            "https://a.example/x/one",
            "https://a.example/y/two",
            "https://a.example/x/three",
            "https://a.example/x/four",
        ]


def test_html_to_text_unescapes_and_skips_scripts() -> None:
    assert (
        html_to_text("<p>a&amp;b &lt;c&gt;</p><style>x{}</style><div>d&nbsp;e</div>")
        == "a&b <c>\nd e"
    )


def test_not_a_feed_is_a_parse_error_naming_the_url() -> None:
    with pytest.raises(ParseError, match=r"^http://feeds.example/dir/feed.xml: not an RSS/Atom"):
        parse(doc("<html><body>Sorry, we moved</body></html>"))


def test_flawed_feed_with_entries_is_used() -> None:
    body = (
        '<rss version="2.0"><channel><title>x</title><item><title>A &bogus; B</title>'
        "<guid>g</guid></item></channel></rss>"
    )
    feed = parse(doc(body))
    assert [i.guid for i in feed.items] == ["g"] and feed.warning


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}")
@pytest.mark.corpus
def test_every_corpus_file_goes_through_the_pipeline(
    feed_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [CORPUS / path for path in _feed_documents()]
    assert len(files) > 2000
    feeds = []
    for i, path in enumerate(files):
        route = f"/{i}/{path.name}"
        feed_server.routes[route] = Route(path.read_bytes(), content_type="application/xml")
        feeds.append(
            {"name": f"{i}-{path.relative_to(CORPUS)}"[:200], "url": feed_server.url(route)}
        )
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{tmp_path / 'corpus.db'}")
    for var in ("SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(var, raising=False)
    service = build(config_mod.load(write_config(tmp_path / "c", feeds)))
    try:
        outcomes = {o.feed.split("-", 1)[1]: o for o in run_feeds(service.feeds, service.deps)}
    finally:
        service.close()
    assert len(outcomes) == len(files)
    crashed = {name: o.error for name, o in outcomes.items() if o.crashed}
    assert crashed == {}
    assert not outcomes["realworld/tumblr-error-page-instead-of-feed-2011.html"].ok
    # every real-world feed that holds items yields them (repeats of an item counted once)
    for path, items in _manifest().items():
        if items:
            got = outcomes[path]
            assert got.ok and 0 < got.new_items <= items, (path, got.error)
    ok = sum(o.ok for o in outcomes.values())
    assert ok > 0.9 * len(files)


def _manifest_rows() -> list[list[str]]:
    """The corpus's feed documents (its articles/ folder holds web pages, not feeds)."""
    lines = (CORPUS / "MANIFEST.tsv").read_text().splitlines()
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


def _feed_documents() -> list[str]:
    return sorted(row[0] for row in _manifest_rows())


def _manifest() -> dict[str, int]:
    return {row[0]: int(row[4]) for row in _manifest_rows() if row[4] != "-"}


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS}")
@pytest.mark.corpus
def test_real_world_feeds_yield_the_items_the_manifest_counts() -> None:
    """The hard cases included: rss:-prefixed elements, JSON Feed, RSS-in-JSON, gzip."""
    short = {
        "realworld/cercle-psy-2018-latin1-nodecl.xml": 9,  # a stray byte ends one item
        "realworld/pcmag-dvorak-2018-illegally-nested.xml": 10,
    }  # items inside items
    got = {}
    for path in _manifest():
        body = unwrap_gzip((CORPUS / path).read_bytes(), 10**8, path)
        try:
            got[path] = len(parse(Fetched(path, 200, body, {})).items)
        except ParseError:
            got[path] = 0
    expected = {**_manifest(), **short}
    assert got == expected


def _rss(description: str, prolog: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n{prolog}<rss version="2.0"><channel>'
        f"<title>T</title><item><title>Qin Gang</title><guid>g</guid>"
        f"<description>{description}</description></item></channel></rss>"
    )


@pytest.mark.parametrize(
    ("body", "summary"),
    [
        # a description is HTML, so the text drops what reads as a declaration in it
        (_rss("<![CDATA[Write <!ENTITY x 'y'> in a DTD]]>"), "Write in a DTD"),
        (_rss("a<!-- <!ENTITY x 'y'> -->b"), "ab"),
        (_rss("&lt;!ENTITY x 'y'&gt; is how"), "is how"),
        (_rss("a&nbsp;b", '<!DOCTYPE rss [\n<!ENTITY nbsp "&#160;">\n]>\n'), "a b"),
    ],
    ids=["cdata", "comment", "escaped", "character-entity"],
)
def test_entity_text_and_character_entities_still_parse(body: str, summary: str) -> None:
    """Trap cases: no declaration that could expand, so nothing is refused."""
    [item] = parse(doc(body)).items
    assert item.summary == summary


@pytest.mark.parametrize(
    ("prolog", "name"),
    [
        ('<!DOCTYPE rss [\n<!ENTITY big "AAAA">\n]>\n', "entity 'big'"),
        ('<!DOCTYPE rss [<!ENTITY big "AAAA">]>', "entity 'big'"),
        ('<!DOCTYPE rss [\n<!ENTITY % p "x">\n]>\n', "parameter entity 'p'"),
        ('<!DOCTYPE rss [\n<!ENTITY a "&b;&b;">\n<!ENTITY b "&#65;">\n]>\n', "entity 'a'"),
        ('<!DOCTYPE rss [\n<!ENTITY x SYSTEM "file:///etc/passwd">\n]>\n', "entity 'x'"),
        # feedparser's own DOCTYPE handling reads a declaration inside a comment
        ('<!DOCTYPE rss [\n<!--\n<!ENTITY big "AAAA">\n-->\n]>\n', "entity 'big'"),
    ],
    ids=["internal", "one-line", "parameter", "nested", "external", "in-comment"],
)
def test_entity_declarations_are_refused_before_parsing(prolog: str, name: str) -> None:
    with pytest.raises(
        UnsafeDocument,
        match=f"^http://feeds.example/dir/feed.xml: refused: declares the XML {name}",
    ):
        parse(doc(_rss("&big;&big;", prolog)))


def test_entity_declarations_are_found_in_any_encoding() -> None:
    """Looked for in the document as the parsers read it, not in its bytes."""
    body = _rss("&big;", '<!DOCTYPE rss [\n<!ENTITY big "AAAA">\n]>\n')
    utf16 = body.replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16")
    assert b"ENTITY" not in utf16
    with pytest.raises(UnsafeDocument, match="declares the XML entity 'big'"):
        parse(Fetched("http://f.example/", 200, utf16, {}))


INVISIBLE = "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2066\u2067\u2068\u2069\ufeff\u061c"


def test_invisible_and_bidirectional_characters_are_removed() -> None:
    """A headline can display in another order than it is written (U+202E reverses)."""
    atom = f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>F{INVISIBLE}eed</title><id>urn:x</id>
<entry><title>Qin{INVISIBLE} Gang \u202egnp.exe</title><id>urn:1</id>
<link href="https://n.example/\u202eqin"/><author><name>A{INVISIBLE}uthor</name></author>
<summary type="html">&lt;p&gt;Wang\u200bYi\u2067 said&lt;/p&gt;</summary>
<content type="text">Li\u202d Qiang</content></entry></feed>"""
    feed = parse(doc(atom))
    [item] = feed.items
    assert (item.title, item.summary, item.content) == (
        "Qin Gang gnp.exe",
        "WangYi said",
        "Li Qiang",
    )
    assert (item.link, item.author, feed.title) == ("https://n.example/qin", "Author", "Feed")
    shown = [item.title, item.summary, item.content, item.link, item.author, feed.title]
    assert not any(c in text for c in INVISIBLE for text in shown if text)
    # and in JSON Feed: the same removal
    json_doc = '{"version": "https://jsonfeed.org/version/1.1", "title": "J\\u202e", "items": [{"id": "1", "title": "Qin\\u200b Gang", "content_text": "x"}]}'
    [json_item] = parse(doc(json_doc, {"content-type": "application/feed+json"})).items
    assert json_item.title == "Qin Gang"


def test_right_to_left_text_keeps_its_letters() -> None:
    """The rule removes controls, not scripts: Arabic and Hebrew stay as written."""
    body = _rss("\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd")
    [item] = parse(doc(body)).items
    assert item.summary == "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd"
