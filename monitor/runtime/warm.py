"""Imported by the pass workers' fork server alone (passes._PRELOAD), never by the
service: fills once, before any worker is forked, the caches each worker's first matcher
build would otherwise fill for itself (spaCy's registry of languages and the English
tokenizer's exceptions, wordfreq's English frequency table) and the packaged meaning
model (senses, and the gists of alerting articles that may join a story), so the workers
share them and start matching sooner, and the model's weights are in memory once, not
once per worker.

When the pool hands over what its matcher is built from (passes.HANDOVER: a pickled
passes.Handover, written by passes.PassPool before its first worker starts; no secrets), the
fork server also builds that matcher (its phrase tables read back from the data directory
when an earlier process kept them for the same watchlists: match/stored.py, 1 s instead
of 7 for 50,000 entities) and loads the English NER model: built once, shared
copy-on-write by every worker forked after, instead of once per worker (a minute and a
gigabyte each for a watchlist of 50,000 entities), and the watchlists themselves, which
a worker then takes from here instead of unpickling its own copy. A worker whose config
differs (a reload: another digest) is sent its watchlists and builds its own matcher.
"""

from __future__ import annotations

import gc
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import spacy

from monitor.config import Watchlist
from monitor.heap import collector_paused
from monitor.match.matcher import default_meaning
from monitor.match.prior import common_word
from monitor.runtime.passes import HANDOVER, Handover

if TYPE_CHECKING:
    from monitor.match import Matcher

spacy.blank("en")
common_word("the")
default_meaning()


def _prebuilt() -> tuple[Handover, Matcher] | None:
    """The handed-over matcher, built here; None without a handover."""
    path = os.environ.get(HANDOVER)
    if not path:
        return None
    try:
        handover = pickle.loads(Path(path).read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        return None  # a fork server restarted after its pool's handover was removed
    finally:  # read once: a service killed outright leaves nothing behind in the temp dir
        Path(path).unlink(missing_ok=True)
    if not isinstance(handover, Handover):
        return None
    from monitor.meaning import load, locate
    from monitor.service import load_ner, matcher_for

    chosen = handover.meaning
    try:
        model = load(locate(chosen.model, chosen.sha256, handover.root))
        matcher = matcher_for(handover.watchlists, lambda: model, tables=handover.tables)
    except Exception:  # noqa: BLE001 - each worker then builds its own, and says why not
        return None
    load_ner()
    return handover, matcher


with collector_paused():  # the handover unpickled, the matcher built: heap.py
    PREBUILT = _prebuilt()
# What is here now stays as it is in every worker: the collector never visits it, so
# it writes to none of its pages, which stay shared instead of copied into each worker.
gc.freeze()


def shared(digest: str) -> tuple[tuple[Watchlist, ...], Matcher] | None:
    """The fork server's watchlists and the matcher built from them, if `digest` is theirs
    (passes.digest: the same watchlists, model and root); None for any other."""
    if PREBUILT is None or PREBUILT[0].digest != digest:
        return None
    handover, matcher = PREBUILT
    return handover.watchlists, matcher
