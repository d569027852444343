"""Article extraction, measured on real pages (mozilla/readability's test pages, with the
article text Readability found in each), bounded on hostile ones, and checked on small
pages built to put a phrase in one place each."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from monitor import extract as extraction
from monitor.extract import extract
from monitor.parse import html_to_text
from tests.conftest import SHARED
from tests.peak import PEAK_KB

ARTICLES = SHARED / "corpus" / "articles"
URL = "http://fakehost/test/page.html"  # the address readability's tests give every page
_WORD = re.compile(r"\w+")


def _words(text: str) -> Counter[str]:
    return Counter(w.lower() for w in _WORD.findall(text))


def score(expected: str, extracted: str | None) -> tuple[int, int, float, float]:
    """Expected and extracted word counts; kept: the share of the expected words (as a
    multiset) that the extraction holds; boilerplate: the share of the extraction's words
    that the expected text does not."""
    want, got = _words(expected), _words(extracted or "")
    n_want, n_got = sum(want.values()), sum(got.values())
    kept = sum((want & got).values()) / n_want if n_want else 1.0
    boilerplate = sum((got - want).values()) / n_got if n_got else 0.0
    return n_want, n_got, kept, boilerplate


def corpus_pages() -> list[Path]:
    if not ARTICLES.is_dir():
        pytest.skip(f"no article corpus at {ARTICLES}")
    return sorted(p for p in ARTICLES.iterdir() if (p / "source.html").is_file())


@pytest.mark.corpus
def test_corpus_keeps_the_article_and_little_else() -> None:
    rows = []
    extract(b"<html><body><p>warm up</p></body></html>", URL)  # the first call loads data
    for page in corpus_pages():
        source = (page / "source.html").read_bytes()
        start = time.perf_counter()
        found = extract(source, URL)
        ms = (time.perf_counter() - start) * 1000
        rows.append(row(page, found, ms))
    assert_keeps_the_article(rows)


Row = tuple[str, int, int, float, float, float | None, bool]


def row(page: Path, found: str | None, ms: float | None = None) -> Row:
    """One page's figures: name, expected and extracted words, kept, boilerplate, ms
    (when timed), and whether nothing was extracted."""
    expected = html_to_text((page / "expected.html").read_text("utf-8"))
    return (page.name, *score(expected, found), ms, found is None)


def assert_keeps_the_article(rows: list[Row]) -> None:
    """Prints the per-page figures, and holds the corpus to the issue's bar."""
    print(f"\n{'page':40} {'expected':>8} {'got':>6} {'kept':>5} {'boiler':>6} {'ms':>5}")
    for name, n_want, n_got, kept, boiler, ms, none in rows:
        note = "  None" if none else ""
        took = "-" if ms is None else f"{ms:.0f}"
        print(f"{name:40} {n_want:8} {n_got:6} {kept:5.2f} {boiler:6.2f} {took:>5}{note}")
    kept = [r[3] for r in rows]
    boiler = [r[4] for r in rows]
    times = sorted(r[5] for r in rows if r[5] is not None)
    timing = ""
    if times:
        timing = f", ms mean {statistics.mean(times):.1f} p90 {times[int(0.9 * len(times))]:.1f}"
    print(
        f"{len(rows)} pages: kept median {statistics.median(kept):.3f} mean"
        f" {statistics.mean(kept):.3f}, boilerplate median {statistics.median(boiler):.3f}"
        f" mean {statistics.mean(boiler):.3f}, None {sum(r[6] for r in rows)}{timing}"
    )
    assert statistics.median(kept) >= 0.90
    assert statistics.median(boiler) <= 0.10
    # The medians sit at 0.99 and 0.00; the means (0.89, 0.02 when chosen) move first.
    assert statistics.mean(kept) >= 0.85
    assert statistics.mean(boiler) <= 0.05


# Each hostile page is built and extracted in a child, which reports its own peak RSS.
_CHILD = (
    PEAK_KB
    + """
import json, sys, time
from monitor.extract import extract
import trafilatura  # the baseline holds the extractor, so the peak measures one page

kind = sys.argv[1]
head = b"<html><head><title>t</title></head><body><article>"
tail = b"</article></body></html>"
para = b" Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 18 + b"</p>"
if kind == "deep":  # 100,000 nested <div>s
    html = head + b"<div>" * 100_000 + b"<p>" + para + b"</div>" * 100_000 + tail
elif kind == "big":  # 50 MB of distinct paragraphs
    html = head + b"".join(b"<p>%d" % i + para for i in range(50_000_000 // len(para))) + tail
elif kind == "text":  # one text node of 20 MB
    html = head + b"<p>" + b"word " * 4_000_000 + b"</p>" + tail
elif kind == "paragraphs":  # 200,000 <p>
    html = head + b"<p>A paragraph with several words in it.</p>" * 200_000 + tail
elif kind == "tags":  # 600,000 elements in under 5 MB
    html = head + b"<b>w</b>" * 600_000 + tail
elif kind == "attributes":  # one element of 500,000 attributes, then the article
    html = head + b"<div " + b"".join(b"a%d " % i for i in range(500_000)) + b">"
    html += b"<p>" + para + b"</div>" + tail
base = peak_kb()
start = time.perf_counter()
found = extract(html, "https://example.test/story")
seconds = time.perf_counter() - start
peak = peak_kb()
kind_of = type(found).__name__
print(json.dumps({"mb": (peak - base) / 1024, "s": seconds, "type": kind_of, "bytes": len(html)}))
"""
)


@pytest.mark.parametrize(
    "kind",
    [
        "deep",
        "big",
        "text",
        pytest.param("paragraphs", marks=pytest.mark.slow),
        "tags",
        "attributes",
    ],
)
def test_hostile_page_is_bounded(kind: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, kind],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"\n{kind}: {report['bytes'] / 1e6:.1f} MB page, +{report['mb']:.0f} MB peak RSS,"
        f" {report['s']:.2f} s, {report['type']}"
    )
    assert report["type"] in ("str", "NoneType")
    assert report["mb"] < 300
    assert report["s"] < 20  # ~2 s at most here; unguarded, 200,000 <p> took 52 s


_SENTENCES = [
    "The talks in the capital ran late into the evening on Tuesday.",
    "Officials from both delegations described the mood as businesslike.",
    "Trade figures released last month showed exports falling for a third quarter.",
    "Analysts said the meeting was the most significant contact in several years.",
    "A joint statement is expected once both governments have reviewed the text.",
    "Shipping companies have been watching the negotiations closely.",
    "The ministry declined to comment on the details of the proposals.",
    "Several regional leaders welcomed the resumption of the dialogue.",
    "Markets in the region rose modestly after the first reports of progress.",
    "Earlier rounds collapsed over disagreements about inspections.",
]


def _article(*, body_phrase: str = "", **extra: str) -> bytes:
    """A news page: a menu, an article of 30 paragraphs (body_phrase in the 25th), and
    boilerplate in the places named by `extra` (nav, related, comments, footer)."""
    paragraphs = []
    for i in range(30):
        sentence = " ".join(_SENTENCES[(i + k) % len(_SENTENCES)] for k in range(3))
        if i == 24 and body_phrase:
            sentence = f"In a later session, {body_phrase} spoke about the outcome. {sentence}"
        paragraphs.append(f"<p>Paragraph {i + 1} of the report. {sentence}</p>")
    nav = "".join(
        f'<li><a href="/{w.lower()}">{w}</a></li>' for w in ("World", "Business", "Sport")
    )
    related = "".join(
        f'<li><a href="/story/{i}">Story number {i} about something else</a></li>' for i in range(5)
    )
    comments = "".join(
        f'<div class="comment"><p class="author">reader{i}</p><p>I think this is right.</p></div>'
        for i in range(3)
    )
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<title>Talks resume after long pause - Example News</title></head><body>
<header><nav class="menu"><ul>{nav}<li><a href="/x">{extra.get("nav", "Weather")}</a></li></ul></nav></header>
<main><article><h1>Talks resume after long pause</h1>
<div class="byline">By A. Reporter</div>
<div class="story-body"><div class="inner">{"".join(paragraphs)}</div></div>
</article>
<aside class="related-stories"><h3>Related stories</h3><ul>{related}
<li><a href="/story/x">{extra.get("related", "Another unrelated story")}</a></li></ul></aside>
<section id="comments" class="comments"><h3>Comments</h3>{comments}
<div class="comment"><p>{extra.get("comments", "Nice article.")}</p></div></section>
</main>
<footer class="site-footer"><p>{extra.get("footer", "Contact us")}</p>
<p>Copyright 2024 Example News. All rights reserved.</p></footer>
</body></html>""".encode()


def test_a_phrase_deep_in_the_body_is_kept() -> None:
    found = extract(_article(body_phrase="Qin Gang"), URL)
    assert found is not None
    assert "Qin Gang" in found
    assert "Paragraph 30 of the report." in found


@pytest.mark.parametrize("place", ["nav", "related", "comments", "footer"])
def test_a_phrase_only_in_boilerplate_is_left_out(place: str) -> None:
    found = extract(_article(**{place: "Antony Blinken visits Wang Yi"}), URL)
    assert found is not None
    assert "Paragraph 25 of the report." in found
    assert "Blinken" not in found
    assert "Wang Yi" not in found


def test_lines_are_paragraphs_not_the_source_line_breaks() -> None:
    page = b"""<html><body><article><h1>Headline</h1><p>A sentence that the page's source
    breaks over
    three lines, as editors' tools do.</p><p>A second paragraph follows it here, with
    enough words in it to be read as an article.</p></article></body></html>"""
    found = extract(page, URL)
    assert found is not None
    assert "A sentence that the page's source breaks over three lines, as editors' tools do." in (
        found.splitlines()
    )


def test_text_a_reader_cannot_see_is_left_out() -> None:
    page = _article().replace(
        b'<div class="inner">',
        b'<div class="inner"><p style="display: none">Secret Wang Yi copy</p>'
        b"<p hidden>Hidden Wang Yi copy</p>",
    )
    found = extract(page, URL)
    assert found is not None
    assert "Wang Yi" not in found


def test_output_is_capped_at_a_word() -> None:
    whole = extract(_article(), URL)
    capped = extract(_article(), URL, max_chars=1000)
    assert whole is not None and capped is not None
    assert 800 <= len(capped) <= 1000
    assert whole.startswith(capped) and whole[len(capped)] in " \n"


@pytest.mark.parametrize(
    "page",
    [
        b"",
        b"   ",
        b"\x00\xff\xfe\x00" * 100,
        b"just a line of text, not a page",
        b"<html><body><nav><a href='/'>Home</a></nav></body></html>",
        b'{"json": "not html"}',
        b"<html><body><p>Too short.</p></body></html>",
    ],
)
def test_nothing_worth_matching_is_none(page: bytes) -> None:
    assert extract(page, URL) is None


def test_a_crowded_tag_or_a_flood_of_tags_ends_the_page_not_the_article() -> None:
    article = _article(body_phrase="Qin Gang")
    crowded = b"<div " + b" ".join(b"a%d" % i for i in range(50_000)) + b">x</div>"
    flood = b"<span>x</span>" * 100_000
    for junk in (crowded, flood):
        page = article.replace(b"</article>", b"</article>" + junk)
        start = time.perf_counter()
        found = extract(page, URL)
        assert time.perf_counter() - start < 10
        assert found is not None and "Qin Gang" in found


def test_tags_are_counted_as_html_reads_them() -> None:
    """Tags inside comments, scripts and quoted values are not tags; their attributes
    are not counted, and what follows them is still read."""
    many = " ".join(f"a{i}" for i in range(5000))
    for hidden in (f"<!-- <div {many}> -->", f"<script>var s = '<div {many}>';</script>"):
        page = f"<html><body><p>before</p>{hidden}<p>after</p></body></html>"
        assert extraction._bounded(page) == page
    crowded = f"<html><body><p>before</p><div {many}>x</div><p>after</p></body></html>"
    assert extraction._bounded(crowded) == "<html><body><p>before</p>"
    image = '<img src="data:image/png;base64,' + "A" * 200_000 + '">'
    page = f"<html><body>{image}<p>after</p></body></html>"
    assert extraction._bounded(page) == page


@pytest.mark.parametrize(
    ("data", "charset", "text"),
    [
        ("café".encode(), None, "café"),
        (b"\xef\xbb\xbfcaf\xc3\xa9", None, "café"),
        ("café".encode("utf-16-le").join([b"\xff\xfe", b""]), None, "café"),
        (b'<meta charset="windows-1252"><p>caf\xe9 \x93quoted\x94', None, "café “quoted”"),
        (
            b'<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">\xe9',
            None,
            "é",
        ),
        (b"<p>caf\xe9", "ISO-8859-1", "café"),
        ('<meta charset="gb2312"><p>中文'.encode("gb18030"), None, "中文"),
        ('<meta charset="gb2312"><p>中文'.encode(), None, "中文"),  # the label lies: UTF-8
        (b"<p>caf\xe9", "no-such-charset", "café"),  # windows-1252, the web's default
    ],
)
def test_decode(data: bytes, charset: str | None, text: str) -> None:
    assert text in extraction._decode(data, charset)


def test_a_page_cut_inside_a_character_is_still_utf8() -> None:
    assert extraction._decode("Zürich Zü".encode()[:-1]) == "Zürich Z"
    assert extraction._decode(b"caf\xe9") == "café"  # no sign of UTF-8 before the cut


def test_extract_reads_a_legacy_page() -> None:
    page = _article(body_phrase="Zürich’s mayor").decode().replace("utf-8", "windows-1252")
    found = extract(page.encode("cp1252"), URL)
    assert found is not None and "Zürich’s mayor" in found


def test_import_is_lazy() -> None:
    """The CLI imports monitor modules at start; trafilatura costs ~0.1 s, so only
    extracting imports it."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, monitor.extract; print('trafilatura' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"
