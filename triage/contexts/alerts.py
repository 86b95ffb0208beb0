"""SLA alerts: what passing time does to a case (a warning at the configured share of a
deadline, a breach at the deadline, one tier up per breach), with its SLA events, audit entry
and webhook events in one transaction.

The :class:`triage.jobs.sla_monitor.SlaMonitor` job decides when this runs; this module
decides what happens. Several server processes may run it against one PostgreSQL: each case
is locked with ``SELECT ... FOR UPDATE SKIP LOCKED`` (a case another process is handling is
skipped), SQLite serialises writers with ``BEGIN IMMEDIATE``, the case row has an optimistic
version counter, and ``sla_events`` is unique per (case, kind, deadline) — so a case is
warned and escalated once, not once per process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.exc import StaleDataError

from triage.contexts.audit import AuditLog, case_snapshot, diff
from triage.contexts.cases import Cases, refresh_next_check
from triage.contexts.core import ServiceCore
from triage.store.tables import Case, SlaEvent

DEADLINES = ("respond", "resolve")
WATCHED = ("open", "resolved")  # a resolved case is watched for its follow-up call (回访)


@dataclass
class MonitorReport:
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (case id, deadline)
    breaches: list[tuple[int, str]] = field(default_factory=list)
    skipped: int = 0  # cases another process held or changed meanwhile
    surges: list[int] = field(default_factory=list)  # surge alerts raised in the same tick (contexts.surges)

    @property
    def events(self) -> int:
        return len(self.warnings) + len(self.breaches)


class SlaAlerts:
    def __init__(self, core: ServiceCore, audit: AuditLog, cases: Cases):
        self.core = core
        self.audit = audit
        self.cases = cases

    def process_due(self, now: datetime, actor: str, batch: int = 200,
                    on_breach: Callable[[int, str], None] | None = None) -> MonitorReport:
        """Warn and breach every open case whose next check has come by ``now``."""
        report = MonitorReport()
        after_id = 0
        while True:
            ids = self._due_ids(now, after_id, batch)
            if not ids:
                break
            for case_id in ids:
                try:
                    self._process(case_id, now, report, actor, on_breach)
                except (StaleDataError, IntegrityError):
                    report.skipped += 1  # another process won the race; it has recorded the event
            after_id = ids[-1]
        return report

    def _due_ids(self, now: datetime, after_id: int, batch: int) -> list[int]:
        with self.core.db.session() as session:
            return list(session.scalars(
                select(Case.id)
                .where(Case.status.in_(WATCHED), Case.next_check_at.is_not(None), Case.next_check_at <= now,
                       Case.id > after_id)
                .order_by(Case.id).limit(batch)
            ))

    def _process(self, case_id: int, now: datetime, report: MonitorReport, actor: str, on_breach) -> None:
        db, policy = self.core.db, self.core.policy
        with db.session(write=True) as session:
            query = select(Case).where(Case.id == case_id).options(joinedload(Case.message), joinedload(Case.prediction))
            if db.is_postgres:
                query = query.with_for_update(skip_locked=True, of=Case)
            case = session.scalars(query).first()
            if case is None or case.status not in WATCHED or case.next_check_at is None or case.next_check_at > now:
                report.skipped += case is None
                return  # locked by another monitor, or already handled
            before = case_snapshot(case)
            events: list[tuple[str, str, datetime]] = []  # (kind, deadline, occurred_at)
            notify_tier = policy.next_tier(case.tier)  # the owner and the tier above the case's at the breach
            for deadline in DEADLINES if case.status == "open" else ("followup",):
                met = {"respond": case.first_response_at, "resolve": case.resolved_at,
                       "followup": case.followed_up_at}[deadline]
                due = getattr(case, f"{deadline}_due_at")
                warn_at = getattr(case, f"{deadline}_warn_at")
                if met is not None or due is None:
                    continue
                if not getattr(case, f"{deadline}_breached") and due <= now:
                    setattr(case, f"{deadline}_breached", True)
                    setattr(case, f"{deadline}_warned", True)  # a breach supersedes its warning
                    events.append(("breach", deadline, due))
                elif not getattr(case, f"{deadline}_warned") and warn_at is not None and warn_at <= now:
                    setattr(case, f"{deadline}_warned", True)
                    events.append(("warning", deadline, warn_at))
            for kind, deadline, occurred_at in sorted(events, key=lambda e: e[2]):
                tier_before = case.tier
                if kind == "breach":
                    case.breach_count += 1
                    case.tier = policy.escalated_tier(case.tier, case.breach_count)
                session.add(SlaEvent(case_id=case.id, kind=kind, deadline=deadline,
                                     due_at=getattr(case, f"{deadline}_due_at"), occurred_at=occurred_at,
                                     detected_at=now, tier_before=tier_before, tier_after=case.tier))
                if kind == "breach":
                    report.breaches.append((case.id, deadline))
                else:
                    report.warnings.append((case.id, deadline))
            refresh_next_check(case)
            case.updated_at = now
            old, new = diff(before, case_snapshot(case))
            if old or new:
                names = ", ".join(f"{deadline} {kind}" for kind, deadline, _ in events)
                if any(kind == "breach" for kind, _, _ in events):
                    names += f"; notify owner {case.owner or '-'}, next tier {notify_tier or '-'}"
                self.audit.write(session, actor, "case.sla", "case", case.id, old, new, names or None)
            session.flush()
            for kind, deadline, _occurred_at in events:
                extra = {"deadline": deadline, "due_at": getattr(case, f"{deadline}_due_at").isoformat()}
                if kind == "breach":
                    extra["notify"] = {"owner": case.owner, "next_tier": notify_tier}
                self.cases.emit(session, "breached" if kind == "breach" else "warning", case, extra)
            if before["tier"] != case.tier:
                self.cases.emit(session, "escalated", case, {"tier_before": before["tier"], "reason": "sla breach"})
        for kind, deadline, _ in events:
            if kind == "breach" and on_breach:
                on_breach(case_id, deadline)
