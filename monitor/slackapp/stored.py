"""What a question from Slack is about, read back from the database: the match a message
stands for, and an article as the matcher reads it again to explain itself."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from monitor.archive import item_of
from monitor.models import ArticleRow, DeliveryKind, DeliveryRow, FeedRow, Item, MatchRow


@dataclass(frozen=True)
class Stored:
    """An article as it was stored, and the watchlists it matched."""

    item: Item
    feed: str
    watchlists: tuple[str, ...]


def match_of_message(engine: Engine, channel_id: str, ts: str) -> int | None:
    """The match an alert or follow-up message (channel, ts) was sent for."""
    with Session(engine) as s:
        found = s.execute(
            select(col(DeliveryRow.match_id)).where(
                col(DeliveryRow.channel_id) == channel_id,
                col(DeliveryRow.slack_ts) == ts,
                col(DeliveryRow.kind).in_([DeliveryKind.ALERT, DeliveryKind.FOLLOWUP]),
            )
        ).scalar()
    return found


def by_match(engine: Engine, match_id: int) -> Stored | None:
    with Session(engine) as s:
        match = s.get(MatchRow, match_id)
        return None if match is None else _stored(s, match.article_id, match.watchlist)


def by_link(engine: Engine, url: str) -> Stored | None:
    """The newest stored article at `url`, with every watchlist it matched."""
    with Session(engine) as s:
        found = s.execute(
            select(col(ArticleRow.id))
            .where(col(ArticleRow.url) == url)
            .order_by(col(ArticleRow.id).desc())
        ).scalar()
        return None if found is None else _stored(s, found, None)


def _stored(s: Session, article_id: int, watchlist: str | None) -> Stored | None:
    article = s.get(ArticleRow, article_id)
    if article is None:
        return None
    feed = s.get(FeedRow, article.feed_id)
    if watchlist is None:
        names = s.execute(
            select(col(MatchRow.watchlist)).where(col(MatchRow.article_id) == article_id)
        ).scalars()
        watchlists = tuple(sorted(names))
    else:
        watchlists = (watchlist,)
    return Stored(item_of(article), feed.name if feed else "", watchlists)
