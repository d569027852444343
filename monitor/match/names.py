"""Person names in news style: a full name first, then the surname; the person's own
given name, initials or brackets before the surname ("Lloyd J. Austin"); a courtesy or
office title before it; a capitalised word glued to a surname makes another name of it,
unless it is an office ("Trump Administration") or the words stand in Title Case (a
headline, or link text in the body); another person named in the article with that
word claims a bare surname."""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass

from spacy.tokens import Doc, Token

from monitor.match.finds import Found, Role, Scan
from monitor.match.normal import fold, norm
from monitor.match.prior import DISTINCTIVE, common_word

# Courtesy and office titles that say a person is meant ("Mr Sunak", "Premier Li"): news
# style, not frequency, so a short list is the source.
HEAD_TITLES = frozenset(
    """mr mrs ms miss mx dr prof sir dame lord lady president premier minister secretary
    chancellor pm general gen admiral adm colonel col captain capt lieutenant marshal
    senator sen representative rep congressman congresswoman governor gov mayor
    ambassador envoy chairman chairwoman chair director commissioner judge justice king
    queen prince princess emperor pope cardinal bishop rev ayatollah sheikh emir imam
    rabbi spokesman spokeswoman leader""".split()
)
# Words that may stand before a name inside a title without making it another name.
TITLES = HEAD_TITLES | frozenset(
    """vice prime deputy chief state defense defence foreign treasury finance trade
    climate special supreme crown field interim acting""".split()
)
# Words before a title that make it another holder's ("former president").
_PAST = frozenset("former ex late then outgoing".split())  # as written: "later" is no "late"
# Capitalised by spelling, not as names: "On Saturday Young scored".
_CALENDAR = frozenset(n.lower() for n in (*calendar.day_name, *calendar.month_name) if n)
# The words Title Case leaves in lower case (articles, conjunctions, short prepositions:
# the AP and Chicago styles); any other word in lower case makes a headline sentence case.
_MINOR = frozenset(
    """a an the and but or nor for so yet as at by in of off on per to up via vs v with
    from into onto over upon than amid""".split()
)
# Offices and bodies named after their holder ("Trump Administration", "Starmer
# Government"): a capitalised one after a surname makes no other person's name.
OFFICES = frozenset(
    """administration government cabinet presidency regime ministry camp campaign team era
    doctrine""".split()
)
_OPENERS = frozenset(""". ! ? " “ : « „ ‘ ' ( [ — – |""".split())
# Clause marks that bound a run of words in the body for the Title Case test.
_CLAUSE_MARKS = _OPENERS | frozenset(""". ! ? ; ” » ) ]""".split())
# A Title Case run with no capitalised minor word is told from a list of names by its
# length: no one's name runs to this many capitalised words.
_TITLE_RUN = 6
_SUFFIXES = frozenset("jr jr. sr sr. ii iii iv".split())
_PARTICLES = frozenset(
    "da de di do dos das del della du la le van von der den bin bint ibn al el".split()
)


@dataclass(frozen=True)
class NameParts:
    family: str
    given: tuple[str, ...]


def name_parts(name: str) -> NameParts | None:
    """A person's family name (the last word, less "Jr." and the like) and given names
    (less initials and particles such as "da", "bin"); None for a one-word name."""
    words = name.split()
    while words and words[-1].lower() in _SUFFIXES:
        words.pop()
    if len(words) < 2:
        return None
    given = tuple(
        w
        for w in words[:-1]
        if w.lower() not in _PARTICLES and len(w.strip(".")) > 1 and not w.endswith(".")
    )
    return NameParts(words[-1], given)


def inside(f: Found, found: Iterable[Found], roles: tuple[Role, ...]) -> bool:
    """Whether another find of one of `roles` covers f ("Qin" inside "Qin dynasty")."""
    return any(
        o is not f
        and o.rule.role in roles
        and o.start <= f.start
        and f.end <= o.end
        and (o.rule.role == Role.EXCLUDE or (o.start, o.end) != (f.start, f.end))
        for o in found
    )


def name_earlier(f: Found, mine: Iterable[Found], title_len: int) -> bool:
    """News style names a person in full before using the surname; a headline may use
    the surname first."""
    names = [o for o in mine if o.rule.role in (Role.NAME, Role.ALT)]
    if f.start < title_len:
        return bool(names)
    return any(o.end <= f.start for o in names)


def other_name(
    scan: Scan, f: Found, mine: Iterable[Found], own: frozenset[str] = frozenset()
) -> tuple[Found, str] | None:
    """A bare short form in an article that names another person with the same word in
    full ("Robin Li ... Li said") means that person: the first find of the word that
    stands in another name, and that name. A name the watchlist excludes ("Melania
    Trump") is declared not to be the entity, and claims nothing."""
    word = fold(f.text)
    mine = list(mine)
    for earlier in mine:
        if (
            earlier.rule.role == Role.SHORT
            and fold(earlier.text) == word
            and not inside(earlier, mine, (Role.EXCLUDE,))
        ):
            vote, _ = shape_vote(scan, earlier, own)
            if vote < 0:
                return earlier, _glued_name(scan, earlier)
    return None


def _glued_name(scan: Scan, f: Found) -> str:
    doc = scan.doc
    start, end = f.tok_start, f.tok_end
    if start > 0 and _capital(doc[start - 1]):
        start -= 1
    if end < len(doc) and _capital(doc[end]):
        end += 1
    return doc[start:end].text


def title_case_headline(scan: Scan, f: Found) -> bool:
    """Title Case headlines capitalise every word but the minor ones, so capitals in them
    tell nothing; one other word in lower case ("Could Trump can AUKUS?") makes the
    headline sentence case, where a capital inside it marks a name. A word after a hyphen
    ("Trump-charming") or with a capital inside ("iPhone") says neither."""
    if f.start >= scan.title_len:
        return False
    if scan.title_case is None:
        capitals, sentence_case = 0, False
        for t in scan.doc:
            if t.idx >= scan.title_len:
                break
            if not t.is_alpha or (t.i > 0 and t.nbor(-1).text == "-"):
                continue
            if not t.is_lower:
                capitals += 1
            elif t.text not in _MINOR:
                sentence_case = True
                break
        scan.title_case = not sentence_case and capitals > 1
    return scan.title_case


def title_case(scan: Scan, f: Found) -> bool:
    """Whether the find stands in Title Case, where capitals tell nothing: a Title Case
    headline, or a run of the body written like one (link text such as "Read More:
    Starmer Breaks With Trump Over Greenland", a headline quoted on its own line)."""
    if f.start < scan.title_len:
        return title_case_headline(scan, f)
    return title_case_run(scan.doc, f.tok_start, f.tok_end)


def title_case_run(doc: Doc, start: int, end: int) -> bool:
    """Whether the clause holding tokens [start, end) (bounded by line breaks and clause
    marks) is written in Title Case: no word in lower case but the minor ones, and
    either a capitalised minor word after its first word ("With", "Over": sentence
    case never writes them so, and no name holds them) or at least _TITLE_RUN
    capitalised words (more than any name runs to)."""
    lo, hi = start, end
    while lo > 0 and not _clause_mark(doc[lo - 1]):
        lo -= 1
    while hi < len(doc) and not _clause_mark(doc[hi]):
        hi += 1
    capitals, minor_capital, first = 0, False, True
    for t in doc[lo:hi]:
        if not t.is_alpha or (t.i > 0 and t.nbor(-1).text == "-"):
            continue
        if t.is_lower:
            if t.text not in _MINOR:
                return False
        else:
            capitals += 1
            minor_capital |= not first and t.lower_ in _MINOR
        first = False
    return minor_capital or capitals >= _TITLE_RUN


def _clause_mark(t: Token) -> bool:
    return t.text in _CLAUSE_MARKS or (t.is_space and "\n" in t.text)


def not_a_name(word: str, own: frozenset[str]) -> bool:
    """Capitalised words that make no other person's name with a neighbour: titles, the
    entity's own words (`own`: norms of its names, context and titles), offices named
    after their holder ("Trump Administration"), days and months, minor words."""
    n, folded = norm(word), fold(word)
    return n in TITLES or n in own or n in OFFICES or folded in _CALENDAR or folded in _MINOR


def shape_vote(scan: Scan, f: Found, own: frozenset[str] = frozenset()) -> tuple[int, str]:
    """A capitalised word glued to the short form makes it part of another name; so
    does one glued to a double-barrelled name it stands in ("Neil Duncan-Jordan"), and
    initials ("A.L. Kennedy"). Titles, the entity's own words, offices and the names of
    days and months do not (`not_a_name`), nor capitals in Title Case. A hyphen that
    joins two names (`joined_names`) hides neither: a capital after the second belongs
    to it ("Modi-Xi Jinping")."""
    if title_case(scan, f):
        return 0, ""
    doc = scan.doc
    start, end = f.tok_start, f.tok_end
    if (
        start >= 2
        and doc[start - 1].text == "-"
        and _capital(doc[start - 2])
        and not joined_names(scan, start - 1)
    ):
        start -= 2
    after = doc[end] if end < len(doc) else None
    before = doc[start - 1] if start > 0 else None
    for neighbour in (after, before):
        if (
            neighbour is not None
            and (_capital(neighbour) or (neighbour is before and _initials(neighbour)))
            and not not_a_name(neighbour.text, own)
            and not (neighbour is before and sentence_initial(doc, start - 1))
        ):
            return -2, f"glued to {neighbour.text!r}, so part of another name"
    return 0, ""


def another_persons_name(
    scan: Scan, f: Found, parts: NameParts, own: frozenset[str] = frozenset()
) -> str | None:
    """The full name of someone else that a short form stands in, on the side where the
    rest of the entity's name would stand: another given name before its family name
    ("Ziaur Rahman" for Tarique Rahman), another surname after its given name ("Prime
    Minister Donald Tusk" for Donald Trump). That mention is another person's even
    where the entity is named in full elsewhere. Titles, offices and the entity's own
    words (`not_a_name`) are no name, nor capitals in Title Case; a word that opens a
    sentence is capitalised anyway, so there only a word rare in English ("Mustafizur",
    not "Yesterday") is read as a given name."""
    doc, word = scan.doc, norm(f.text)
    if word == norm(parts.family):
        i = f.tok_start - 1
        if i < 0 or (sentence_initial(doc, i) and common_word(doc[i].lower_) >= DISTINCTIVE):
            return None
    elif word in {norm(g) for g in parts.given}:
        i = f.tok_end
        if i >= len(doc):
            return None
    else:
        return None
    t = doc[i]
    if not _capital(t) or not_a_name(t.text, own) or title_case(scan, f):
        return None
    return doc[min(i, f.tok_start) : max(i + 1, f.tok_end)].text


def joined_names(scan: Scan, hyphen: int) -> bool:
    """Whether the hyphen at token `hyphen` joins two names ("Xi Jinping-Modi talks")
    rather than the halves of one double-barrelled surname ("Neil Duncan-Jordan"): a
    full name the watchlists know ends at it. A capital after a hyphenated pair always
    belongs to its second half, since a double-barrelled surname is never followed by
    its given name, so only the word before the hyphen needs this test."""
    return any(
        o.tok_end == hyphen and o.rule.role in (Role.NAME, Role.ALT)
        for found in scan.found.values()
        for o in found
    )


def _initials(t: Token) -> bool:
    return (
        t.text.endswith(".")
        and t.text.replace(".", "").isalpha()
        and t.text[0].isupper()
        and len(t.text.replace(".", "")) <= 3
    )


def _capital(t: Token) -> bool:
    return t.is_alpha and t.text[0].isupper() and not t.is_upper


def title_before(doc: Doc, i: int) -> str | None:
    """The courtesy or office title right before token i ("President", "Mr"), if any."""
    if i == 0:
        return None
    prev = doc[i - 1]
    word = prev.norm_.rstrip(".")
    if word in HEAD_TITLES and (i < 2 or fold(doc[i - 2].text) not in _PAST):
        return prev.text
    return None


def past_holder(doc: Doc, i: int) -> bool:
    """Whether the title starting at token i is a former holder's ("former president",
    "ex-president")."""
    j = i - 1
    while j >= 0 and doc[j].text == "-":
        j -= 1
    return j >= 0 and fold(doc[j].text) in _PAST


def proper_noun(scan: Scan, f: Found) -> bool:
    """Written as a name is: capitalised inside a sentence (not at its start, not in a
    Title Case headline), so not the common word ("Rice" of "Rice prices rose")."""
    doc = scan.doc
    return (
        f.text[:1].isupper()
        and not f.text.isupper()
        and not sentence_initial(doc, f.tok_start)
        and not title_case(scan, f)
    )


def sentence_initial(doc: Doc, i: int) -> bool:
    """Capitals at the start of a sentence or a line say nothing about names."""
    if i == 0:
        return True
    prev = doc[i - 1]
    return prev.text in _OPENERS or (prev.is_space and "\n" in prev.text)


def own_name_before(doc: Doc, i: int, given: Iterable[str]) -> str | None:
    """The entity's own given name written before the family name at token i, as news
    writes it: with initials, a middle name or brackets between ("Lloyd J. Austin",
    "[Donald] Trump"), a given name left out ("Tayyip Erdogan" for Recep Tayyip Erdogan)
    or spelt another way ("Massoud" for Masoud, "Vladmir" for Vladimir). The words from
    that given name on, or None."""
    own = [fold(g) for g in given]
    j, middle = i - 1, 0
    while j >= 0 and i - j <= 5:
        t = doc[j]
        if t.text in ("[", "]", "(", ")") or (len(t.text.rstrip(".")) == 1 and t.text[0].isupper()):
            j -= 1
            continue
        if not _capital(t):
            return None
        if any(_close(fold(t.text), g) for g in own):
            return doc[j:i].text
        middle += 1
        if middle > 1:
            return None
        j -= 1
    return None


def _close(a: str, b: str) -> bool:
    """The same name in another spelling: at most one edit apart (two for long names)."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 2 or min(len(a), len(b)) < 4:
        return False
    allowed = 2 if min(len(a), len(b)) >= 7 else 1
    row = list(range(len(b) + 1))
    for x, ca in enumerate(a, 1):
        prev, row[0] = row[0], x
        for y, cb in enumerate(b, 1):
            prev, row[y] = row[y], min(row[y] + 1, row[y - 1] + 1, prev + (ca != cb))
    return row[-1] <= allowed
