"""The SLA monitor: turns passing time into warning and breach events.

Each case carries ``next_check_at``, the earliest moment something can happen to it (a
warning at the configured share of a deadline, or the deadline itself); the monitor looks
only at open cases whose moment has come, so a restart simply catches up on everything that
fell due while it was down (events carry the moment they happened on the clock, not the
moment they were noticed).

On breach the case moves one tier up; the second breach sends it to the top tier (the team
leader). Several server processes may run monitors against one PostgreSQL: each case is
locked with ``SELECT ... FOR UPDATE SKIP LOCKED`` (a case another process is handling is
skipped), SQLite serialises writers with ``BEGIN IMMEDIATE``, the case row has an optimistic
version counter, and ``sla_events`` is unique per (case, kind, deadline) — so a case is
warned and escalated once, not once per process.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.exc import StaleDataError

from triage.storage import Case, SlaEvent
from triage.service import TriageService, case_snapshot, diff, refresh_next_check

DEADLINES = ("respond", "resolve")


@dataclass
class MonitorReport:
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (case id, deadline)
    breaches: list[tuple[int, str]] = field(default_factory=list)
    skipped: int = 0  # cases another process held or changed meanwhile

    @property
    def events(self) -> int:
        return len(self.warnings) + len(self.breaches)


class SlaMonitor:
    """``run_once(now)`` processes what is due; ``start()`` runs it every ``interval_s``."""

    def __init__(self, service: TriageService, interval_s: float = 30.0, batch: int = 200,
                 actor: str = "sla-monitor", on_breach=None):
        self.service = service
        self.interval_s = interval_s
        self.batch = batch
        self.actor = actor
        self.on_breach = on_breach  # callback(case_id, deadline) e.g. a metrics counter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_run: datetime | None = None
        self.last_error: str | None = None

    def _due_ids(self, now: datetime, after_id: int) -> list[int]:
        with self.service.db.session() as session:
            return list(session.scalars(
                select(Case.id)
                .where(Case.status == "open", Case.next_check_at.is_not(None), Case.next_check_at <= now,
                       Case.id > after_id)
                .order_by(Case.id).limit(self.batch)
            ))

    def run_once(self, now: datetime | None = None) -> MonitorReport:
        now = now or self.service.now()
        report = MonitorReport()
        after_id = 0
        while True:
            ids = self._due_ids(now, after_id)
            if not ids:
                break
            for case_id in ids:
                try:
                    self._process(case_id, now, report)
                except (StaleDataError, IntegrityError):
                    report.skipped += 1  # another process won the race; it has recorded the event
            after_id = ids[-1]
        self.last_run = now
        return report

    def _process(self, case_id: int, now: datetime, report: MonitorReport) -> None:
        service = self.service
        policy = service.policy
        with service.db.session(write=True) as session:
            query = select(Case).where(Case.id == case_id).options(joinedload(Case.message), joinedload(Case.prediction))
            if service.db.is_postgres:
                query = query.with_for_update(skip_locked=True, of=Case)
            case = session.scalars(query).first()
            if case is None or case.status != "open" or case.next_check_at is None or case.next_check_at > now:
                report.skipped += case is None
                return  # locked by another monitor, or already handled
            before = case_snapshot(case)
            events: list[tuple[str, str, datetime]] = []  # (kind, deadline, occurred_at)
            for deadline in DEADLINES:
                met = case.first_response_at if deadline == "respond" else case.resolved_at
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
                service._audit(session, self.actor, "case.sla", "case", case.id, old, new, names or None)
            session.flush()
            for kind, deadline, _occurred_at in events:
                extra = {"deadline": deadline, "due_at": getattr(case, f"{deadline}_due_at").isoformat()}
                service._emit(session, "breached" if kind == "breach" else "warning", case, extra)
            if before["tier"] != case.tier:
                service._emit(session, "escalated", case, {"tier_before": before["tier"], "reason": "sla breach"})
        for kind, deadline, _ in events:
            if kind == "breach" and self.on_breach:
                self.on_breach(case_id, deadline)

    # ------------------------------------------------------------------ thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                self.last_error = None
            except Exception as exc:  # database down: report, keep going, catch up later
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                print(f"sla monitor: {self.last_error}", file=sys.stderr)
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="sla-monitor", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
