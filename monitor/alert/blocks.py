"""Slack messages as pure functions: Block Kit built from slack-sdk's typed blocks (which
check Slack's limits), apart from the client that sends them (slack.py), so a message
can be rendered, tested and re-rendered (after a click) without any network.

Every piece of feed text is escaped for mrkdwn as it is placed in a message, so a
headline can never ping `<!channel>`, mention someone or fake a link; text is clipped
before it is escaped and links are never cut. Mentions come only from the watchlist's
`notify`. Each message carries its delivery's tag in Slack message metadata, so a send
whose answer was lost can be found again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from monitor import feedback
from monitor.digests import DIGEST_PART
from monitor.errors import AlertError
from monitor.feedback import Verdict
from monitor.models import DeliveryKind, Outgoing, Story, Strength

EVENT_TYPE = "monitor_alert"
SECTION_MAX = 3000  # characters in a section's text (the SDK checks it too)
HEADER_MAX = 150  # characters in a header (the SDK checks it too)
BLOCKS_MAX = 50  # blocks in a message
CONTEXT_MAX = 300  # characters we allow one context element: a line, not a page
TEXT_MAX = 3000  # characters of the notification fallback `text`
TITLE_MAX = 500  # characters of a headline, before escaping
SNIPPET_MAX = 1000
# alerts in one page of a digest's or flood's thread: each a section, its buttons and,
# once clicked, who did what: 1 + 15 * 3 blocks of Slack's 50
PAGE = 15
# The buttons under every alert and follow-up, and under each alert a digest's or flood's
# thread lists: (action_id, visible text) by verdict. The button's value is the match id;
# the block ids (with ":<match id>") find a match's blocks again in a message.
BUTTONS = {
    Verdict.NOT_RELEVANT: ("monitor_not_relevant", "Not relevant"),
    Verdict.MUTE_STORY: ("monitor_mute_story", "Mute story"),
}
ACTIONS_BLOCK = "monitor_feedback"
MARKS_BLOCK = "monitor_marks"
_DONE = {Verdict.NOT_RELEVANT: "Not relevant", Verdict.MUTE_STORY: "Muted"}
_WIDTH = {"&": 5, "<": 4, ">": 4}  # what escaping makes of Slack's control characters


def escape(text: str) -> str:
    """Slack's three control characters; everything else is literal in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# A message's text is put together from pieces, then fitted to a limit: plain text is
# clipped before it is escaped (never `&am…`), our own markup and links are whole or
# absent (never `<https://news.example/aaa…`). A link that does not fit leaves its
# label, as plain text.


@dataclass(frozen=True)
class Plain:
    """Text from a feed, escaped when it is placed; clipped if it must be."""

    text: str
    bold: bool = False


@dataclass(frozen=True)
class Mark:
    """Our own markup (mentions, quote marks, separators), or a bare escaped URL: whole."""

    text: str


@dataclass(frozen=True)
class Link:
    url: str | None  # escaped, as _safe_url gives it; None for no link
    label: str
    bold: bool = False


Piece = Plain | Mark | Link


def _clip_escaped(text: str, room: int) -> str:
    """The longest start of `text` whose escaped form and an ellipsis fit `room`, for a
    text whose escaped form does not."""
    used = 0
    for end, char in enumerate(text):
        used += _WIDTH.get(char, 1)
        if used + 1 > room:
            return escape(text[:end].rstrip()) + "…"
    return escape(text)


def fit(pieces: Sequence[Piece], limit: int) -> str:
    """The pieces as mrkdwn, at most `limit` characters; what does not fit is left off
    (plain text clipped with an ellipsis)."""
    out: list[str] = []
    used = 0
    for piece in pieces:
        room = limit - used
        if isinstance(piece, Link) and piece.url:
            label = f"<{piece.url}|{escape(piece.label)}>"
            text = f"*{label}*" if piece.bold else label
            if len(text) <= room:
                out.append(text)
                used += len(text)
                continue
            piece = Plain(piece.label, piece.bold)  # the link is dropped, the label stays
        elif isinstance(piece, Link):
            piece = Plain(piece.label, piece.bold)
        if isinstance(piece, Mark):
            if len(piece.text) > room:
                break
            out.append(piece.text)
            used += len(piece.text)
            continue
        stars = "*" if piece.bold and piece.text.strip() else ""
        whole = escape(piece.text)
        if len(whole) + 2 * len(stars) <= room:
            out.append(f"{stars}{whole}{stars}")
            used += len(whole) + 2 * len(stars)
            continue
        if room > 2 * len(stars) + 1:
            out.append(f"{stars}{_clip_escaped(piece.text, room - 2 * len(stars))}{stars}")
        break
    return "".join(out).rstrip()


def _safe_url(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return escape(url).replace("|", "%7C")


def _plain_clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _title(story: Story) -> str:
    return _plain_clip(" ".join(story.title.split()) or "(untitled)", TITLE_MAX)


def _link(story: Story, bold: bool = False) -> Link:
    return Link(_safe_url(story.url), _title(story), bold)


def _when(story: Story) -> str:
    return story.published.strftime("%Y-%m-%d %H:%M UTC") if story.published else "undated"


def _bold_hits(snippet: str, highlights: list[tuple[int, int]]) -> list[Piece]:
    out: list[Piece] = []
    pos = 0
    for start, end in sorted(highlights):
        if start < pos or end > len(snippet):
            continue
        out += [Plain(snippet[pos:start]), Plain(snippet[start:end], bold=True)]
        pos = end
    out.append(Plain(snippet[pos:]))
    return [p for p in out if not isinstance(p, Plain) or p.text]


def _mentions(ids: list[str]) -> str:
    """Slack's mention syntax for the watchlist's own notify list (never feed text)."""
    parts = []
    for ident in ids:
        if ident in ("here", "channel"):
            parts.append(f"<!{ident}>")
        elif ident.startswith("S"):
            parts.append(f"<!subteam^{ident}>")
        else:
            parts.append(f"<@{ident}>")
    return " ".join(parts)


def _section(*pieces: Piece) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=fit(pieces, SECTION_MAX)))


def _context(*elements: tuple[Sequence[Piece], int]) -> ContextBlock:
    return ContextBlock(
        elements=[MarkdownTextObject(text=fit(pieces, limit)) for pieces, limit in elements]
    )


def _text(*stories: tuple[Sequence[Piece], Story]) -> str:
    """The notification fallback: each story's title and bare URL after its lead."""
    pieces: list[Piece] = []
    for lead, story in stories:
        if pieces:
            pieces.append(Mark("; "))
        pieces += [*lead, Plain(_title(story))]
        if url := _safe_url(story.url):
            pieces.append(Mark(f" {url}"))
    return fit(pieces, TEXT_MAX)


def render(out: Outgoing) -> tuple[str, list[dict[str, Any]]]:
    """The notification fallback `text` (always title and URL) and the Block Kit
    `blocks`, built as slack-sdk's typed blocks, which check Slack's limits."""
    text, blocks = _render(out)
    return text, as_json(blocks)


def as_json(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    """The blocks as Slack takes them, checked by slack-sdk against Slack's limits: a
    message Slack would refuse is a permanent failure, never sent to be refused."""
    if len(blocks) > BLOCKS_MAX:
        raise AlertError(f"cannot build the message: {len(blocks)} blocks", permanent=True)
    try:
        return [block.to_dict() for block in blocks]
    except SlackObjectFormationError as exc:
        raise AlertError(f"cannot build the message: {exc}", permanent=True) from exc


def _render(out: Outgoing) -> tuple[str, list[Block]]:
    if out.kind in (DeliveryKind.DIGEST, DeliveryKind.FLOOD):
        return _render_listing(out)
    if out.kind == DeliveryKind.NOTICE:
        return fit([Plain(out.label)], TEXT_MAX), [_section(Mark(":warning: "), Plain(out.label))]
    [story] = out.stories[:1] or [Story("(story unavailable)", None, "", None, [], "", [])]
    if out.kind == DeliveryKind.FOLLOWUP:
        also: list[Piece] = [
            Mark("Also reported by "),
            Plain(story.feed, bold=True),
            Mark(f" · {_when(story)}: "),
            _link(story),
        ]
        by: list[Piece] = [Mark("Also reported by "), Plain(story.feed), Mark(": ")]
        return _text((by, story)), [_context((also, SECTION_MAX)), *_buttons(story)]
    ping = _mentions(out.mentions)
    lead: list[Piece] = [Mark(f"{ping} ")] if ping else []
    what = "About" if story.strength == Strength.ABOUT else "Mentions"
    terms: list[Piece] = [Mark(f"{what}: ")]
    for i, term in enumerate(story.matched):
        terms += [Mark(", ")] if i else []
        terms.append(Plain(term, bold=True))
    blocks: list[Block] = [
        _section(*lead, _link(story, bold=True)),
        _context(([Plain(f"{story.feed} · {_when(story)}")], CONTEXT_MAX), (terms, CONTEXT_MAX)),
    ]
    if story.snippet:
        snippet = _plain_clip(story.snippet, SNIPPET_MAX).replace("\n", " ")
        blocks.append(_section(Mark("> "), *_bold_hits(snippet, story.highlights)))
    return _text((lead, story)), [*blocks, *_buttons(story)]


def _buttons(story: Story) -> list[Block]:
    """`Not relevant` and `Mute story`, for a stored match (a sample story has none)."""
    return [] if story.match_id is None else [actions(story.match_id, ())]


def actions(match_id: int, marks: Sequence[feedback.Mark]) -> ActionsBlock:
    """The two buttons; one already pressed is highlighted, and pressing it again undoes."""
    on = {mark.verdict for mark in marks}
    return ActionsBlock(
        block_id=f"{ACTIONS_BLOCK}:{match_id}",
        elements=[
            ButtonElement(
                text=label,
                action_id=action_id,
                value=str(match_id),
                style="primary" if verdict in on else None,
            )
            for verdict, (action_id, label) in BUTTONS.items()
        ],
    )


def who_did_what(marks: Sequence[feedback.Mark]) -> str:
    """ "Not relevant by @ana · Muted by @bo": names escaped, never mentions (no pings)."""
    parts = []
    for verdict, done in _DONE.items():
        names = [f"@{escape(m.user_name or m.user_id)}" for m in marks if m.verdict == verdict]
        if names:
            parts.append(f"{done} by {', '.join(dict.fromkeys(names))}")
    return " · ".join(parts)


def plain(text: str) -> list[dict[str, Any]]:
    """A message's fallback text as its one section (Slack's text is already mrkdwn)."""
    if not text:
        return []
    return as_json([SectionBlock(text=MarkdownTextObject(text=text[:SECTION_MAX]))])


def marked(
    blocks: Sequence[dict[str, Any]], match_id: int, marks: Sequence[feedback.Mark]
) -> list[dict[str, Any]]:
    """The message's blocks as chat.update takes them after a click: the message as it
    was posted, with who did what and the buttons showing what is on where the match's
    buttons were (at the end if they are not found). Built from the stored marks, so
    the same state always renders the same message."""
    buttons, said = f"{ACTIONS_BLOCK}:{match_id}", f"{MARKS_BLOCK}:{match_id}"
    kept = [b for b in blocks if b.get("block_id") != said]
    extra: list[Block] = []
    if line := who_did_what(marks):
        extra.append(ContextBlock(block_id=said, elements=[MarkdownTextObject(text=line)]))
    extra.append(actions(match_id, marks))
    at = next((i for i, b in enumerate(kept) if b.get("block_id") == buttons), None)
    if at is None:
        return [*kept[: BLOCKS_MAX - len(extra)], *as_json(extra)]
    return [*kept[:at], *as_json(extra), *kept[at + 1 :]][:BLOCKS_MAX]


def _lines(lines: Sequence[str]) -> list[Block]:
    """Lines of a list packed into as few sections as Slack's limit allows."""
    blocks: list[Block] = []
    text = ""
    for line in lines:
        if text and len(text) + len(line) + 1 > SECTION_MAX:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
            text = ""
        text = f"{text}\n{line}" if text else line
    if text:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
    return blocks


def _entry(story: Story) -> str:
    return fit([Mark("• "), _link(story), Plain(f" — {story.feed}, {_when(story)}")], SECTION_MAX)


def _render_listing(out: Outgoing) -> tuple[str, list[Block]]:
    """A digest (the period's stories by entity or topic) or a flood (its count, then
    the first ones, and where to find them all)."""
    if out.kind == DeliveryKind.FLOOD:
        title = f"{out.watchlist}: {out.label}"
        listed = "`monitor matches`"
        if ", " not in out.watchlist:  # one watchlist (a flood may span a channel's several)
            listed = f"`monitor matches --watchlist {out.watchlist}`"
        shown = out.stories[:DIGEST_PART]
        note = (
            f"The first {len(shown)} of them; all are listed in the thread, "
            f"and why they matched: {listed}"
        )
        blocks: list[Block] = [
            HeaderBlock(text=PlainTextObject(text=_plain_clip(title, HEADER_MAX))),
            _context(([Mark(note)], CONTEXT_MAX)),
            *_lines([_entry(story) for story in shown]),
        ]
    else:
        count = len(out.stories)
        title = f"{out.watchlist}: {count} {'story' if count == 1 else 'stories'} {out.label}"
        groups: dict[str, list[Story]] = defaultdict(list)
        for story in out.stories:
            groups[story.matched[0] if story.matched else "other"].append(story)
        blocks = [HeaderBlock(text=PlainTextObject(text=_plain_clip(title, HEADER_MAX)))]
        for term, stories in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            heading = fit([Plain(term, bold=True), Mark(f" ({len(stories)})")], SECTION_MAX)
            blocks += _lines([heading, *(_entry(story) for story in stories)])
    if len(blocks) > BLOCKS_MAX:
        blocks = [*blocks[: BLOCKS_MAX - 1], _section(Mark("… all of them in the thread"))]
    if not out.stories:
        return fit([Plain(title)], TEXT_MAX), blocks
    first: list[Piece] = [Plain(title), Mark(": ")]
    listed_here = out.stories[:DIGEST_PART] if out.kind == DeliveryKind.FLOOD else out.stories
    return _text(*((first if i == 0 else [], s) for i, s in enumerate(listed_here))), blocks


def pages(stories: Sequence[Story]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every story of a digest or flood, as thread replies of at most PAGE stories, each
    with its own buttons: an alert that came in a flood can be marked like any other."""
    out = []
    for first in range(0, len(stories), PAGE):
        part = stories[first : first + PAGE]
        head = f"Alerts {first + 1}–{first + len(part)} of {len(stories)}"
        blocks: list[Block] = [_context(([Mark(head)], CONTEXT_MAX))]
        for story in part:
            entry = SectionBlock(text=MarkdownTextObject(text=_entry(story)))
            blocks += [entry, *_buttons(story)]
        out.append((head, as_json(blocks)))
    return out


def explanation(text: str) -> list[dict[str, Any]]:
    """`monitor explain`'s text as ephemeral blocks: preformatted, escaped, in sections
    within Slack's limits (what does not fit is said to be left off)."""
    room = SECTION_MAX - 8  # the ``` fences and their newlines
    chunks: list[str] = []
    chunk = ""
    for raw in text.splitlines():
        line = _clip_escaped(raw, room) if len(escape(raw)) > room else escape(raw)
        if chunk and len(chunk) + len(line) + 1 > room:
            chunks.append(chunk)
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    if chunk:
        chunks.append(chunk)
    blocks: list[Block] = [_section(Mark(f"```\n{c}\n```")) for c in chunks[:BLOCKS_MAX]]
    if len(chunks) > BLOCKS_MAX:
        blocks[-1] = _section(Mark("… the rest is left off: run `monitor explain` for it"))
    return as_json(blocks)


def message(out: Outgoing) -> dict[str, Any]:
    """The chat.postMessage arguments for `out`, tagged so a lost send can be found."""
    text, blocks = render(out)
    payload: dict[str, Any] = {
        "channel": out.channel,
        "text": text,
        "blocks": blocks,
        "unfurl_links": False,
        "unfurl_media": False,
        "metadata": {"event_type": EVENT_TYPE, "event_payload": {"tag": out.tag}},
    }
    if out.thread_ts:
        payload["thread_ts"] = out.thread_ts
    return payload
