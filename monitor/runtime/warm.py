"""Imported by the pass workers' fork server alone (passes._PRELOAD), never by the
service: fills once, before any worker is forked, the caches each worker's first matcher
build would otherwise fill for itself (spaCy's registry of languages and the English
tokenizer's exceptions, wordfreq's English frequency table), so the workers share them
and start matching sooner."""

from __future__ import annotations

import spacy

from monitor.match.prior import common_word

spacy.blank("en")
common_word("the")
