"""Dedupe stage: gives each item its identities and drops what was seen before.

An item's `key` (unique within its feed) is its guid, else its canonical link, else a
hash of its text; its `story_key` (shared across feeds) is its canonical link, else
that hash. The database's unique constraints on both are the last guard.
"""

from __future__ import annotations

import functools
import hashlib
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from monitor.models import Entry, Item

_TRACKING_PREFIXES = ("utm_", "ga_", "mc_", "pk_", "mtm_", "hsa_", "ns_", "at_", "oly_")
_TRACKING_PARAMS = frozenset(
    [
        "fbclid",
        "gclid",
        "dclid",
        "gclsrc",
        "msclkid",
        "yclid",
        "igshid",
        "twclid",
        "ttclid",
        "li_fat_id",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "cmpid",
        "ocid",
        "smid",
        "smtyp",
        "sr_share",
        "s_cid",
        "icid",
        "ito",
        "cmp",
        "ref_src",
        "ref_url",
        "rss",
        "feed_id",
        "rssfeed",
        "__twitter_impression",
        "wt_mc",
        "wt.mc_id",
    ]
)
_MAX_KEY = 500
_WORDS = re.compile(r"\w+")


def canonical_url(url: str) -> str | None:
    """The link with tracking parameters, fragment, default port and `www.` removed; None
    when it is not an http(s) URL. Used as an identity only, never fetched."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    host = host.removeprefix("www.")
    if port and port not in (80, 443):
        host = f"{host}:{port}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith(_TRACKING_PREFIXES) and k.lower() not in _TRACKING_PARAMS
    ]
    return urlunsplit(("https", host, parts.path or "/", urlencode(query), ""))


def content_hash(item: Item) -> str:
    words = _WORDS.findall(f"{item.title}\n{item.body[:4000]}".lower())
    return hashlib.sha256(" ".join(words).encode()).hexdigest()


def _bounded(key: str) -> str:
    if len(key) <= _MAX_KEY:
        return key
    return key.split(":", 1)[0] + ":sha256:" + hashlib.sha256(key.encode()).hexdigest()


def identify(item: Item) -> Entry:
    link = canonical_url(item.link) if item.link else None
    digest = content_hash(item)
    if item.guid:
        key = f"guid:{item.guid}"
    elif link:
        key = f"url:{link}"
    else:
        key = f"hash:{digest}"
    story_key = f"url:{link}" if link else f"hash:{digest}"
    usable_link = item.link if link else None
    return Entry(item=item, key=_bounded(key), story_key=_bounded(story_key), link=usable_link)


def fingerprint(entry: Entry) -> Entry:
    """The entry with its MinHash signature, for near-duplicate stories (of the linked
    page's text too, when it was read). Only matched entries need one: only they can
    start or join a story."""
    signature = minhash(f"{entry.item.title}\n{entry.item.text}")
    if signature is None:
        return entry
    return replace(entry, minhash=signature)


def fresh(entries: Iterable[Entry], seen: set[str]) -> list[Entry]:
    """Entries not in `seen`, first copy only when a feed lists the same item or story twice."""
    keys, stories = set(seen), set()
    out = []
    for entry in entries:
        if entry.key in keys or entry.story_key in stories:
            continue
        keys.add(entry.key)
        stories.add(entry.story_key)
        out.append(entry)
    return out


NEAR_DUPLICATE = 0.6  # estimated Jaccard similarity of word 3-shingles
NEAR_DUPLICATE_WINDOW = timedelta(days=3)
BANDS = 8  # LSH bands of ROWS signature values: J=0.6 is a candidate 93% of the time
ROWS = 4
_MIN_WORDS = 15  # shorter texts share too many shingles by chance
_SIM_WORDS = 400
_PRIME = 4_294_967_311  # > 2**32, so (a*h + b) stays inside uint64


@functools.cache
def _hashes() -> tuple[Any, Any]:
    """The MinHash coefficients; numpy is imported on first need (it is a tenth of a
    second of every start, and a poll with nothing new needs no fingerprint)."""
    import numpy as np

    seeds = np.random.default_rng(20230724)
    return (
        seeds.integers(1, _PRIME, size=BANDS * ROWS, dtype=np.uint64),
        seeds.integers(0, _PRIME, size=BANDS * ROWS, dtype=np.uint64),
    )


_STOPWORDS = frozenset(
    """a an and are as at be but by for from had has have he her his i in is it its of on
    or our said she that the their they this to was we were which who will with would you
    """.split()
)


def minhash(text: str) -> tuple[int, ...] | None:
    """MinHash signature of the text's word 3-shingles, stop words left out (else "one of
    the" makes unrelated articles look alike); None for texts too short to judge."""
    words = [w for w in _WORDS.findall(text.lower()) if w not in _STOPWORDS][:_SIM_WORDS]
    if len(words) < _MIN_WORDS:
        return None
    import numpy as np

    mult, add = _hashes()
    shingles = np.fromiter(
        (
            zlib.crc32(f"{a} {b} {c}".encode())
            for a, b, c in zip(words, words[1:], words[2:], strict=False)
        ),
        dtype=np.uint64,
    )
    signature = ((mult[:, None] * shingles[None, :] + add[:, None]) % _PRIME).min(axis=1)
    return tuple(int(v) for v in signature)


def lsh_bands(signature: Sequence[int]) -> tuple[int, ...]:
    """One 31-bit key per band: texts that agree on a whole band become candidates."""
    return tuple(
        int.from_bytes(
            hashlib.blake2b(repr(signature[i : i + ROWS]).encode(), digest_size=4).digest(), "big"
        )
        & 0x7FFFFFFF
        for i in range(0, BANDS * ROWS, ROWS)
    )


def similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """Estimated Jaccard similarity: the share of signature values the texts agree on."""
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
