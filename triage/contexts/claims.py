"""Review claims: a reviewer who opens a case holds it for a few minutes, so another
reviewer's queue skips it. A claim ends on the reviewer's decision, on a skip, or when it
expires.

One row per case in ``review_claims``; taking a claim is one ``INSERT ... ON CONFLICT DO
UPDATE ... WHERE (expired or mine) RETURNING`` statement, so of two reviewers racing for one
case exactly one gets it, on SQLite and on PostgreSQL, across processes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case as sql_case
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from triage.store.database import Database
from triage.store.tables import ReviewClaim


def claim_view(claim: ReviewClaim | None) -> dict[str, Any] | None:
    if claim is None:
        return None
    return {"reviewer": claim.reviewer, "stage": claim.stage, "claimed_at": claim.claimed_at.isoformat(),
            "expires_at": claim.expires_at.isoformat()}


class ReviewClaims:
    def __init__(self, db: Database):
        self.db = db

    def take(self, case_id: int, reviewer: str, stage: str, now: datetime, minutes: float) -> bool:
        """Claim ``case_id`` for ``reviewer`` until ``now + minutes``; False when another
        reviewer holds an unexpired claim. Taking one's own claim again extends it and keeps
        its start (the throughput clock runs from the first opening)."""
        table = ReviewClaim.__table__
        insert = pg_insert if self.db.is_postgres else sqlite_insert
        statement = insert(table).values(case_id=case_id, reviewer=reviewer, stage=stage, claimed_at=now,
                                         expires_at=now + timedelta(minutes=minutes))
        mine_live = (table.c.reviewer == reviewer) & (table.c.expires_at > now)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.case_id],
            set_={"reviewer": statement.excluded.reviewer, "stage": statement.excluded.stage,
                  "expires_at": statement.excluded.expires_at,
                  "claimed_at": sql_case((mine_live, table.c.claimed_at), else_=statement.excluded.claimed_at)},
            where=(table.c.expires_at <= now) | (table.c.reviewer == reviewer),
        ).returning(table.c.reviewer)
        with self.db.session(write=True) as session:
            return session.execute(statement).first() is not None

    def holder(self, case_id: int, now: datetime) -> ReviewClaim | None:
        """The unexpired claim on ``case_id``, or None."""
        with self.db.session() as session:
            claim = session.get(ReviewClaim, case_id)
            if claim is None or claim.expires_at <= now:
                return None
            session.expunge(claim)
            return claim

    def held_by(self, reviewer: str, now: datetime) -> list[int]:
        """Case ids ``reviewer`` holds now, oldest claim first."""
        with self.db.session() as session:
            return list(session.scalars(
                select(ReviewClaim.case_id).where(ReviewClaim.reviewer == reviewer, ReviewClaim.expires_at > now)
                .order_by(ReviewClaim.claimed_at, ReviewClaim.case_id)))

    def release(self, case_id: int, reviewer: str, session=None) -> bool:
        """End ``reviewer``'s claim on ``case_id`` (decision or skip); False if they held none."""
        statement = delete(ReviewClaim).where(ReviewClaim.case_id == case_id, ReviewClaim.reviewer == reviewer)
        if session is not None:
            return session.execute(statement).rowcount > 0
        with self.db.session(write=True) as own:
            return own.execute(statement).rowcount > 0

    @staticmethod
    def held_by_others(reviewer: str | None, now: datetime):
        """A subquery of the case ids someone else (anyone, without ``reviewer``) holds now."""
        query = select(ReviewClaim.case_id).where(ReviewClaim.expires_at > now)
        if reviewer:
            query = query.where(ReviewClaim.reviewer != reviewer)
        return query
