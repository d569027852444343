"""Match stage: decides which watchlists an entry is really about.

One PhraseMatcher holds every phrase of every watchlist, keyed on a cheap normal form
of each word (lower case, plural folded), so a pass costs about the same for ten terms
as for ten thousand, and "military dialogues" meets "military dialogue". A prefilter
skips, without spaCy, the articles that hold none of the phrases' keys.

Full names and full alternatives count wherever they stand on token boundaries. A
short form (a surname, an acronym) is weighed on evidence, because "Li" is half of
China and "Kerry" is also a county. The English NER model runs only for articles where
such a vote is needed, in one batch per call.

One file per concern, in the order an article meets them:

    normal.py     text normal forms (the stem each word is compared as)
    prefilter.py  articles that cannot match, told apart without spaCy
    phrases.py    the rules built from the watchlists, and their finds in an article
    names.py      person names in news style (full name first, glued names)
    evidence.py   votes on a short form: NER, shape, context
    topics.py     any phrase, all_of groups, near pairs, none_of vetoes
    snippet.py    what an alert quotes, and how strongly an article is about its terms
    matcher.py    the Matcher, which puts them together
"""

from monitor.match.matcher import Matcher, NerLoader, Verdict
from monitor.match.normal import scan_text, stem

__all__ = ["Matcher", "NerLoader", "Verdict", "scan_text", "stem"]
