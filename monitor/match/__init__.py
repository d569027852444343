"""Match stage: decides which watchlists an entry is really about.

One table holds every phrase of every watchlist, keyed on spaCy's normal form of each
word (folded letters, the lemma), so a pass costs about the same for ten terms as for
ten thousand, and "military dialogues" meets "military dialogue", "Erdoğan" meets
"Erdogan". A prefilter skips, without spaCy, the articles that hold none of the
phrases' keys.

Full names and full alternatives count wherever they stand on token boundaries. A
short form (a surname, an acronym, a title on its own) is weighed on the evidence a
reader uses: titles, compounds, the headline, NER, context, against a frequency prior,
because "Li" is half of China and "Kerry" is also a county. The English NER model runs
only for articles where such a vote is needed, in one batch per call.

One file per concern, in the order an article meets them:

    normal.py     text normal forms (clean text, folded letters, lemmas)
    prefilter.py  articles that cannot match, told apart without spaCy
    phrases.py    the rules built from the watchlists, and their finds in an article
    scripts.py    unspaced scripts (Chinese, Japanese, Korean) and Cyrillic endings
    finds.py      the rules, finds and scans the other files pass around
    names.py      person names in news style (name forms, titles, glued names)
    prior.py      how ambiguous a word is, from wordfreq
    evidence.py   votes on a short form: titles, NER, shape, context, the prior
    topics.py     any phrase, all_of groups, near pairs, none_of vetoes
    senses.py     about/not_about: a hit read in context by the meaning model (meaning.py)
    lessons.py    hits like ones the desk marked Not relevant, held back (feedback.py)
    snippet.py    what an alert quotes, and how strongly an article is about its terms
    matcher.py    the Matcher, which puts them together, and takes each alert's gist
                  (headline, lead, names) for events.py (one story per event across
                  outlets); the store reads its vector only where a story may join
"""

from monitor.match.matcher import Matcher, NerLoader, Verdict
from monitor.match.normal import scan_text, stem

__all__ = ["Matcher", "NerLoader", "Verdict", "scan_text", "stem"]
