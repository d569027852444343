"""Imported by the pass workers' fork server alone (passes._PRELOAD), never by the
service: fills once, before any worker is forked, the caches each worker's first matcher
build would otherwise fill for itself (spaCy's registry of languages and the English
tokenizer's exceptions, wordfreq's English frequency table) and the packaged meaning
model (every alerting article's gist is read by it), so the workers share them and start
matching sooner, and the model's weights are in memory once, not once per worker."""

from __future__ import annotations

import spacy

from monitor.match.matcher import default_meaning
from monitor.match.prior import common_word

spacy.blank("en")
common_word("the")
default_meaning()
