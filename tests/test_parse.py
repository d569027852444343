from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor import config as config_mod
from monitor.errors import ParseError
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
