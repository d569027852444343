"""What was stored, read back: matches for people (`monitor matches`), articles for a
backtest, and retention's pruning."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlmodel import col

from monitor.db import CHUNK, Database
from monitor.models import (
    ArticleRow,
    DeliveryKind,
    DeliveryRow,
    DeliveryStatus,
    Entry,
    FeedbackRow,
    FeedRow,
    Item,
    MatchRow,
    RenderRow,
    RenderStatus,
    iso,
)

# a delivery in these states no longer needs its match
_SETTLED = (
    DeliveryStatus.SENT,
    DeliveryStatus.DEAD,
    DeliveryStatus.DIGESTED,
    DeliveryStatus.MUTED,
)


class Archive(Database):
    def matches(
        self,
        watchlist: str | None,
        since: datetime | None,
    ) -> list[dict[str, Any]]:
        with self._session() as s:
            stmt = (
                select(MatchRow, ArticleRow, FeedRow, DeliveryRow)
                .join(ArticleRow, col(ArticleRow.id) == MatchRow.article_id)
                .join(FeedRow, col(FeedRow.id) == ArticleRow.feed_id)
                .outerjoin(DeliveryRow, col(DeliveryRow.match_id) == MatchRow.id)
                .order_by(col(MatchRow.created_at).desc(), col(MatchRow.id).desc())
            )
            if watchlist:
                stmt = stmt.where(col(MatchRow.watchlist) == watchlist)
            if since:
                stmt = stmt.where(col(MatchRow.created_at) >= since)
            return [
                {
                    "watchlist": m.watchlist,
                    "title": a.title,
                    "url": a.url,
                    "feed": f.name,
                    "matched": list(m.matched),
                    "snippet": m.snippet,
                    "strength": m.strength,
                    "published_at": iso(a.published_at),
                    "created_at": iso(m.created_at),
                    "delivery": d.status if d else None,
                    "slack_ts": d.slack_ts if d else None,
                    "joined": m.joined,  # why it went into another outlet's story
                    "held": m.held,  # suppressed or muted by the desk's feedback: not posted
                    "held_why": m.held_why,
                }
                for m, a, f, d in s.execute(stmt)
            ]

    def prune(self, older_than: datetime, *, dry_run: bool = False) -> dict[str, int]:
        """Deletes what retention no longer needs: matches and their sent or dead
        deliveries older than the cut-off, then articles nothing refers to, and the
        records of message updates settled (shown or given up) before it. Each feed's
        newest articles are kept, whatever their age, so items still in a feed are never
        taken for new; pending deliveries and what they refer to, and updates still owed,
        are never touched."""
        with self._session() as s:
            old_matches = select(col(MatchRow.id)).where(col(MatchRow.created_at) < older_than)
            live = select(col(DeliveryRow.match_id)).where(
                col(DeliveryRow.status).notin_(_SETTLED),
                col(DeliveryRow.match_id).is_not(None),
            )
            taught = select(col(FeedbackRow.match_id))  # the desk's feedback keeps its match
            old_matches = old_matches.where(col(MatchRow.id).notin_(taught))
            matches = [
                m for m in s.execute(old_matches.where(col(MatchRow.id).notin_(live))).scalars()
            ]
            keep = select(col(ArticleRow.id)).where(col(ArticleRow.seen_at) >= older_than)
            newest = select(func.max(ArticleRow.id)).group_by(col(ArticleRow.feed_id))
            referenced = select(col(MatchRow.article_id)).where(col(MatchRow.id).notin_(matches))
            articles = [
                a
                for a in s.execute(
                    select(col(ArticleRow.id)).where(
                        col(ArticleRow.id).notin_(keep),
                        col(ArticleRow.id).notin_(newest),
                        col(ArticleRow.id).notin_(referenced),
                    )
                ).scalars()
            ]
            settled = (
                col(RenderRow.status).in_((RenderStatus.DONE, RenderStatus.DEAD)),
                col(RenderRow.owed_at) < older_than,
            )
            renders = s.execute(select(func.count()).select_from(RenderRow).where(*settled))
            counts = {
                "matches": len(matches),
                "articles": len(articles),
                "renders": int(renders.scalar_one()),
            }
            if dry_run:
                return counts
            for i in range(0, len(matches), CHUNK):
                chunk = matches[i : i + CHUNK]
                s.execute(delete(DeliveryRow).where(col(DeliveryRow.match_id).in_(chunk)))
                s.execute(delete(MatchRow).where(col(MatchRow.id).in_(chunk)))
            still_listed = select(col(DeliveryRow.digest_id)).where(
                col(DeliveryRow.digest_id).is_not(None)
            )
            s.execute(
                delete(DeliveryRow).where(
                    col(DeliveryRow.kind).in_((DeliveryKind.DIGEST, DeliveryKind.FLOOD)),
                    col(DeliveryRow.status) == DeliveryStatus.SENT,
                    col(DeliveryRow.id).notin_(still_listed),
                )
            )
            for i in range(0, len(articles), CHUNK):
                s.execute(delete(ArticleRow).where(col(ArticleRow.id).in_(articles[i : i + CHUNK])))
            # one statement: a click that owes a message again meanwhile keeps its row
            s.execute(delete(RenderRow).where(*settled))
            return counts

    def count_articles(self, since: datetime) -> int:
        with self._session() as s:
            stmt = (
                select(func.count()).select_from(ArticleRow).where(col(ArticleRow.seen_at) >= since)
            )
            return int(s.execute(stmt).scalar_one())

    def iter_articles(self, since: datetime, batch: int = 500) -> Iterator[list[tuple[str, Entry]]]:
        """Stored articles as (feed name, entry), oldest first, a batch at a time."""
        last_id = 0
        while True:
            with self._session() as s:
                stmt = (
                    select(ArticleRow, col(FeedRow.name))
                    .join(FeedRow, col(FeedRow.id) == ArticleRow.feed_id)
                    .where(col(ArticleRow.seen_at) >= since, col(ArticleRow.id) > last_id)
                    .order_by(col(ArticleRow.id))
                    .limit(batch)
                )
                rows = list(s.execute(stmt))
            if not rows:
                return
            last_id = rows[-1][0].id or last_id
            yield [(name, _entry(a)) for a, name in rows]


def item_of(a: ArticleRow) -> Item:
    """A stored article as the matcher reads it (backtests, and `why` from Slack)."""
    return Item(
        title=a.title,
        link=a.url,
        guid=None,
        summary=a.body,
        content="",
        published=a.published_at,
        article=a.page_text or "",
    )


def _entry(a: ArticleRow) -> Entry:
    return Entry(item=item_of(a), key=a.key, story_key=a.story_key, link=a.url)
