from __future__ import annotations

import pytest

from monitor.dedupe import canonical_url, fresh, identify
from monitor.models import Item


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://news.example/a?utm_source=rss&utm_medium=feed", "https://news.example/a"),
        ("http://www.News.Example:80/a#comments", "https://news.example/a"),
        ("https://news.example/a?id=7&fbclid=XYZ&gclid=1", "https://news.example/a?id=7"),
        ("https://news.example", "https://news.example/"),
        ("https://news.example:8443/a", "https://news.example:8443/a"),
        ("https://news.example/a?b=2&a=1", "https://news.example/a?b=2&a=1"),
        ("ftp://news.example/a", None),
        ("/relative/only", None),
        ("http://[::1", None),
    ],
    ids=[
        "utm",
        "scheme-www-port-fragment",
        "click-ids",
        "empty-path",
        "other-port",
        "order-kept",
        "not-http",
        "relative",
        "malformed",
    ],
)
def test_canonical_url(url: str, canonical: str | None) -> None:
    assert canonical_url(url) == canonical


def item(**kw: object) -> Item:
    base: dict[str, object] = {
        "title": "T",
        "link": None,
        "guid": None,
        "summary": "s",
        "content": "",
        "published": None,
    }
    return Item(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "key", "story"),
    [
        (
            {"guid": "g1", "link": "https://x.example/1?utm_campaign=a"},
            "guid:g1",
            "url:https://x.example/1",
        ),
        ({"link": "https://x.example/1#top"}, "url:https://x.example/1", "url:https://x.example/1"),
        ({}, "hash:", "hash:"),
    ],
    ids=["guid-first", "link-second", "hash-last"],
)
def test_identity_order(kw: dict[str, object], key: str, story: str) -> None:
    entry = identify(item(**kw))
    assert entry.key.startswith(key) and entry.story_key.startswith(story)


def test_hash_ignores_markup_spacing_and_case() -> None:
    a = identify(item(title="Qin Gang  missing", summary="Where is he?"))
    b = identify(item(title="qin gang missing", summary="Where is   he"))
    assert a.key == b.key and a.story_key == b.story_key


def test_long_guid_is_bounded() -> None:
    entry = identify(item(guid="x" * 5000))
    assert len(entry.key) < 100 and entry.key.startswith("guid:sha256:")


def test_title_change_keeps_identity() -> None:
    before = identify(item(guid="g", title="Qin Gang missing"))
    after = identify(item(guid="g", title="Qin Gang removed from office"))
    assert before.key == after.key


def test_fresh_drops_seen_and_repeats() -> None:
    a = identify(item(guid="1", link="https://x.example/a"))
    a_again = identify(item(guid="1", link="https://x.example/a", title="updated"))
    same_story = identify(item(guid="2", link="https://x.example/a?utm_source=x"))
    b = identify(item(guid="3", link="https://x.example/b"))
    c = identify(item(guid="4", link="https://x.example/c"))
    assert fresh([a, a_again, same_story, b, c], seen={"guid:3"}) == [a, c]
