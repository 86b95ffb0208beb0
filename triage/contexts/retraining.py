"""The retrain ledger: the confirmed examples a retrain learns from, the claims that
make sure one retrain runs at a time across every server process, and how background model
jobs (a retrain, the re-grade after a promotion) ended.

Claims and outcomes live in the audit log, so every process and every restart counts the
same confirmations since the latest retrain, and an API process shows the outcome of a job
that a worker ran.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from triage.clock import as_utc
from triage.contexts.audit import AuditLog
from triage.contexts.core import ServiceCore
from triage.errors import Conflict
from triage.store.tables import AuditEntry, Message, ReviewDecision

# A retrain claimed in the audit log that has not ended after this long is taken as crashed,
# so its confirmations count again for the next automatic retrain.
RETRAIN_LEASE = timedelta(hours=2)
_RETRAIN_LOCK_KEY = 74657202  # PostgreSQL advisory lock: one retrain claim at a time


class Retraining:
    def __init__(self, core: ServiceCore, audit: AuditLog):
        self.core = core
        self.audit = audit

    def confirmed_examples(self) -> list[dict[str, Any]]:
        """The latest final review decision per case with its masked text (for retraining); a
        double review's first and second decisions count only once they are final."""
        with self.core.db.session() as session:
            latest = (select(func.max(ReviewDecision.id)).where(ReviewDecision.final)
                      .group_by(ReviewDecision.case_id)).scalar_subquery()
            rows = session.execute(
                select(ReviewDecision, Message.text_masked).join(Message, Message.id == ReviewDecision.message_id)
                .where(ReviewDecision.id.in_(latest)).order_by(ReviewDecision.id)
            ).all()
            return [{"case_id": d.case_id, "text": text, "labels": d.labels, "reviewer": d.reviewer,
                     "decided_at": d.created_at} for d, text in rows]

    def message_history(self, limit: int) -> list[str]:
        """The masked texts of the newest ``limit`` stored messages: the installation's own
        traffic, unlabeled, for self-training. Read here, used in memory, never exported."""
        if limit <= 0:
            return []
        with self.core.db.session() as session:
            return list(session.scalars(select(Message.text_masked).order_by(Message.id.desc()).limit(limit)))

    def _cutoff(self, session: Session) -> tuple[int, dict[str, Any] | None]:
        """(id of the newest review decision the latest retrain claimed, the claim of a retrain
        still running somewhere or None).

        Derived from the audit log, so every server process and every restart sees the same
        count: a claim counts once it has ended, or while it is younger than the lease.
        """
        entries = session.execute(
            select(AuditEntry.at, AuditEntry.action, AuditEntry.after)
            .where(AuditEntry.entity == "model", AuditEntry.entity_id == "retrain")
            .order_by(AuditEntry.id.desc()).limit(200)
        ).all()
        ended = {(after or {}).get("job") for _, action, after in entries if action == "model.retrain_ended"}
        fresh_after = self.core.now() - RETRAIN_LEASE
        for at, action, after in entries:
            if action != "model.retrain_started":
                continue
            finished = after.get("job") in ended
            if finished or as_utc(at) > as_utc(fresh_after):
                return int(after.get("confirmed_up_to") or 0), (None if finished else after)
        return 0, None

    def confirmations_since_retrain(self) -> int:
        """Final review decisions recorded after the data cut-off of the latest retrain."""
        with self.core.db.session() as session:
            cutoff, _ = self._cutoff(session)
            return session.scalar(select(func.count(ReviewDecision.id))
                                  .where(ReviewDecision.id > cutoff, ReviewDecision.final)) or 0

    def claim_retrain(self, job: str, actor: str, trigger: str, min_new: int = 0) -> int | None:
        """Record that retrain ``job`` starts on the decisions recorded so far; returns the id of
        the newest one (the data cut-off), or None when fewer than ``min_new`` are new.

        One claim at a time across processes (SQLite's write lock, a PostgreSQL advisory
        lock); Conflict while another retrain's claim is open, so several servers never each
        start one.
        """
        db = self.core.db
        with db.session(write=True) as session:
            if db.is_postgres:
                session.execute(sql_text(f"SELECT pg_advisory_xact_lock({_RETRAIN_LOCK_KEY})"))
            cutoff, running = self._cutoff(session)
            if running is not None:
                raise Conflict(f"a retrain is already running (job {running.get('job')}, "
                               f"{running.get('trigger')}, started by {running.get('actor')})")
            newest = session.scalar(select(func.max(ReviewDecision.id)).where(ReviewDecision.final)) or 0
            pending = session.scalar(select(func.count(ReviewDecision.id))
                                     .where(ReviewDecision.id > cutoff, ReviewDecision.final)) or 0
            if pending < min_new:
                return None
            self.audit.write(session, actor, "model.retrain_started", "model", "retrain", None,
                             {"job": job, "trigger": trigger, "actor": actor, "confirmed_up_to": newest,
                              "new_confirmations": pending})
            return newest

    def end_retrain(self, job: str, actor: str, outcome: dict[str, Any]) -> None:
        """Close the claim of ``job`` (done or failed), so the next retrain may start."""
        self.audit.record("model.retrain_ended", actor, {"job": job, **outcome}, entity="model", entity_id="retrain")

    def job_outcome(self, kind: str, job: str) -> dict[str, Any] | None:
        """How background model job ``job`` ended (``kind``: ``retrain`` or ``regrade``), as
        recorded by whichever process ran it, with ``finished_at``; None while it has not."""
        with self.core.db.session() as session:
            rows = session.execute(
                select(AuditEntry.at, AuditEntry.after)
                .where(AuditEntry.entity == "model", AuditEntry.entity_id == kind,
                       AuditEntry.action == f"model.{kind}_ended")
                .order_by(AuditEntry.id.desc()).limit(500)
            ).all()
        for at, after in rows:
            if (after or {}).get("job") == job:
                return {**after, "finished_at": as_utc(at).isoformat(timespec="seconds")}
        return None

    def regrade_missing(self, version: str, grace: timedelta) -> bool:
        """Whether ``version`` was made current (promoted or rolled back to) more than ``grace``
        ago and no re-grade with it has ended since: its task was lost (a broker restarted
        empty), so the open cases still carry the previous version's labels."""
        with self.core.db.session() as session:
            switched = session.scalar(
                select(AuditEntry.at).where(AuditEntry.entity == "model", AuditEntry.entity_id == version,
                                            AuditEntry.action.in_(("model.promoted", "model.rolled_back")))
                .order_by(AuditEntry.id.desc()).limit(1))
            if switched is None or as_utc(switched) > as_utc(self.core.now() - grace):
                return False
            ended = session.execute(
                select(AuditEntry.at, AuditEntry.after)
                .where(AuditEntry.entity == "model", AuditEntry.entity_id == "regrade",
                       AuditEntry.action == "model.regrade_ended", AuditEntry.at >= switched)
                .order_by(AuditEntry.id.desc()).limit(200)).all()
        return not any((after or {}).get("version") == version for _, after in ended)

    def end_regrade(self, job: str, actor: str, outcome: dict[str, Any]) -> None:
        """Record how the re-grade ``job`` after a promotion or rollback ended."""
        self.audit.record("model.regrade_ended", actor, {"job": job, **outcome}, entity="model", entity_id="regrade")
