"""Early warning: surge alerts per product (and product x dispute type) and the recall
incidents opened from them.

:meth:`Surges.scan` runs from the SLA monitor's tick. It looks at every case surge
detection has not seen yet (``cases.surveyed_at`` empty), in the order the messages were
received, and for each one: joins it to the open recall incident or the recent alert of its
product, or runs the tests of :mod:`triage.surveillance` at the case's ``received_at``, so a
backfill raises the alerts its month would have raised. The signals of one moment make one
alert that names every test that fired.

One surge, one alert, also with several server processes on one PostgreSQL: a scan holds a
transaction-level advisory lock (a second process skips the tick; SQLite serialises writers
with ``BEGIN IMMEDIATE``), and a case belongs to at most one alert (primary key of
``surge_alert_cases``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from triage.clock import as_utc, iso
from triage.contexts.audit import AuditLog
from triage.contexts.core import ServiceCore
from triage.errors import Conflict, InvalidInput, NotFound
from triage.store.outbox import enqueue
from triage.store.tables import Case, Prediction, RecallIncident, SurgeAlert, SurgeAlertCase
from triage.surveillance import Complaint, Signal, detect

ALERT_STATUSES = ("open", "acknowledged", "dismissed", "recall")
ALERT_EVENTS = ("acknowledge", "dismiss", "open_recall")
INCIDENT_STATUSES = ("open", "recalling", "no_recall", "closed")
SURGE_LOCK = 74657202  # pg advisory lock key of the scan (the migrations use 74657201)


class AlertView(BaseModel):
    id: int
    product: str
    dispute_type: str | None
    scopes: list[str]
    batch: str | None
    window_start: datetime
    window_end: datetime
    count: int  # complaints in the window when the alert was raised
    expected: float  # the baseline's expectation for that window
    p_value: float
    alpha: float
    safety_count: int
    first_case_at: datetime
    last_case_at: datetime
    status: str
    reason: str | None
    detected_at: datetime
    updated_at: datetime
    case_ids: list[int]
    incident_id: int | None


class IncidentView(BaseModel):
    id: int
    alert_id: int
    product: str
    batch: str | None
    owner: str
    status: str
    due_at: datetime
    overdue: bool
    note: str | None
    created_at: datetime
    updated_at: datetime
    case_ids: list[int]


class DayCount(BaseModel):
    day: date  # a calendar day in the policy's clock timezone
    count: int  # complaints about the product received that day


class DailySeries(BaseModel):
    """Daily complaints about one product, with its alerts, for a chart (dashboard, API)."""
    product: str
    timezone: str
    days: list[DayCount]  # every day of the period, oldest first, zero days included
    alerts: list[AlertView]  # alerts of the product whose cases fall in the period


@dataclass
class SurveillanceReport:
    surveyed: int = 0
    raised: list[int] = field(default_factory=list)  # new alert ids
    joined: int = 0  # cases that joined an existing alert
    skipped: bool = False  # another process held the scan


def _is_safety(rules: list[Any] | None) -> bool:
    return any(isinstance(hit, dict) and hit.get("rule") == "safety" for hit in rules or [])


def _incident_snapshot(incident: RecallIncident) -> dict[str, Any]:
    return {"owner": incident.owner, "status": incident.status, "due_at": iso(incident.due_at), "note": incident.note}


class Surges:
    def __init__(self, core: ServiceCore, audit: AuditLog):
        self.core = core
        self.audit = audit

    # ------------------------------------------------------------------ detection

    def scan(self, now: datetime, actor: str = "sla-monitor", batch: int = 5000) -> SurveillanceReport:
        """Survey the cases not seen yet; raise, or join, surge alerts. Idempotent."""
        report = SurveillanceReport()
        db = self.core.db
        while True:
            with db.session(write=True) as session:
                if db.is_postgres and not session.execute(
                        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SURGE_LOCK}).scalar():
                    report.skipped = True
                    return report
                pending = session.execute(
                    select(Case.id, Case.product, Case.received_at).where(Case.surveyed_at.is_(None))
                    .order_by(Case.received_at, Case.id).limit(batch)
                ).all()
                if not pending:
                    return report
                by_product: dict[str, list[tuple[int, datetime]]] = defaultdict(list)
                for case_id, product, received_at in pending:
                    if product:
                        by_product[product].append((case_id, received_at))
                for product, items in by_product.items():
                    self._survey_product(session, product, items, now, actor, report)
                ids = [row[0] for row in pending]
                for start in range(0, len(ids), 500):  # a bulk UPDATE: neither version nor updated_at change
                    session.execute(update(Case).where(Case.id.in_(ids[start:start + 500]))
                                    .values(surveyed_at=now, updated_at=Case.updated_at)
                                    .execution_options(synchronize_session=False))
                report.surveyed += len(ids)
            if len(pending) < batch:
                return report

    def _survey_product(self, session: Session, product: str, items: list[tuple[int, datetime]], now: datetime,
                        actor: str, report: SurveillanceReport) -> None:
        spec = self.core.policy.spec.surveillance
        window = timedelta(hours=spec.window_hours)
        start = min(t for _, t in items) - window - timedelta(days=spec.baseline_days)
        end = max(t for _, t in items)
        rows = session.execute(
            select(Case.id, Case.received_at, Case.dispute_type, Case.batch, Prediction.rules, SurgeAlertCase.alert_id)
            .outerjoin(Prediction, Prediction.id == Case.prediction_id)
            .outerjoin(SurgeAlertCase, SurgeAlertCase.case_id == Case.id)
            .where(Case.product == product, Case.received_at >= start, Case.received_at <= end)
        ).all()
        complaints = [Complaint(r.id, r.received_at, r.dispute_type, _is_safety(r.rules), r.batch) for r in rows]
        info = {r.id: r for r in rows}
        member = {r.id: r.alert_id for r in rows if r.alert_id is not None}
        alerts = list(session.scalars(select(SurgeAlert).where(SurgeAlert.product == product)
                                      .order_by(SurgeAlert.id)))
        dismissed = {a.id for a in alerts if a.status == "dismissed"}
        # a dismissed alert's cases were judged no surge: they leave the window's count (not the baseline)
        discounted = {cid for cid, alert_id in member.items() if alert_id in dismissed}
        incidents = {i.alert_id: i for i in session.scalars(
            select(RecallIncident).where(RecallIncident.product == product, RecallIncident.status != "closed"))}
        for case_id, received_at in sorted(items, key=lambda x: (x[1], x[0])):
            if case_id in member:
                continue
            row = info[case_id]
            alert = self._alert_to_join(alerts, incidents, row, window)
            if alert is not None:
                self._join(session, alert, [case_id], {case_id: received_at}, now)
                member[case_id] = alert.id
                report.joined += 1
                continue
            signals = detect(complaints, spec, received_at, discounted)
            if not signals:
                continue
            ongoing = self._alert_to_join(alerts, {}, row, window, any_type=True)
            if ongoing is not None:  # e.g. the product-level test firing after a type-level one
                report.joined += self._widen(session, ongoing, signals, info, member, now, actor)
                continue
            alert = self._raise(session, product, signals, info, member, now, actor)
            alerts.append(alert)
            report.raised.append(alert.id)

    @staticmethod
    def _alert_to_join(alerts: list[SurgeAlert], incidents: dict[int, RecallIncident], row,
                       window: timedelta, any_type: bool = False) -> SurgeAlert | None:
        """An open recall incident of the product (its batch, if it has one) takes every new
        case; else the latest alert, not dismissed, whose surge is still going (a case within
        the window of its last one; of its type, for a type-level alert, unless ``any_type``).
        A dismissed alert takes no new case: a later one is tested afresh (see ``discounted``)."""
        for alert in reversed(alerts):
            incident = incidents.get(alert.id)
            if incident is not None and (incident.batch is None or incident.batch == row.batch) \
                    and row.received_at >= alert.first_case_at:
                return alert
        for alert in reversed(alerts):
            if alert.status == "dismissed":
                continue
            if not any_type and alert.dispute_type is not None and alert.dispute_type != row.dispute_type:
                continue
            if alert.first_case_at - window <= row.received_at <= alert.last_case_at + window:
                return alert
        return None

    def _join(self, session: Session, alert: SurgeAlert, case_ids: list[int], times: dict[int, datetime],
              now: datetime) -> None:
        for case_id in case_ids:
            session.add(SurgeAlertCase(case_id=case_id, alert_id=alert.id, joined_at=now))
        alert.last_case_at = max([alert.last_case_at, *times.values()])
        alert.first_case_at = min([alert.first_case_at, *times.values()])
        alert.updated_at = now
        session.flush()

    def _raise(self, session: Session, product: str, signals: list[Signal], info: dict, member: dict[int, int],
               now: datetime, actor: str) -> SurgeAlert:
        lead = next((s for s in signals if s.dispute_type is None), None) or min(signals, key=lambda s: s.p_value)
        type_level = {s.dispute_type for s in signals if s.dispute_type is not None}
        case_ids = sorted({cid for s in signals for cid in s.case_ids if cid not in member})
        times = {cid: info[cid].received_at for cid in case_ids}
        batches = {info[cid].batch for cid in case_ids}
        alert = SurgeAlert(
            product=product,
            dispute_type=None if lead.dispute_type is None or len(type_level) > 1 else lead.dispute_type,
            scopes=[s.scope for s in signals], batch=batches.pop() if len(batches) == 1 else None,
            window_start=lead.window_start, window_end=lead.window_end, count=lead.count, expected=lead.expected,
            p_value=lead.p_value, alpha=lead.alpha, safety_count=lead.safety_count,
            first_case_at=min(times.values()), last_case_at=max(times.values()), status="open", reason=None,
            detected_at=now, updated_at=now,
        )
        session.add(alert)
        session.flush()
        self._join(session, alert, case_ids, times, now)
        for cid in case_ids:
            member[cid] = alert.id
        tests = "; ".join(f"{s.scope}: {s.count} in window, expected {s.expected:.2f}, p={s.p_value:.2g}"
                          for s in signals)
        self.audit.write(session, actor, "alert.raised", "alert", alert.id, None,
                         {"product": product, "scopes": alert.scopes, "cases": case_ids}, tests)
        self._emit(session, alert, case_ids)
        return alert

    def _widen(self, session: Session, alert: SurgeAlert, signals: list[Signal], info: dict, member: dict[int, int],
               now: datetime, actor: str) -> int:
        """More tests fire on a surge that has its alert: the alert names them and takes their cases."""
        new_scopes = [s.scope for s in signals if s.scope not in alert.scopes]
        case_ids = sorted({cid for s in signals for cid in s.case_ids if cid not in member})
        if new_scopes:
            alert.scopes = [*alert.scopes, *new_scopes]
            types = {s.dispute_type for s in signals} | {alert.dispute_type}
            if None in types or len(types) > 1:
                alert.dispute_type = None
            self.audit.write(session, actor, "alert.widened", "alert", alert.id, None,
                             {"scopes": alert.scopes, "cases": case_ids}, None)
        self._join(session, alert, case_ids, {cid: info[cid].received_at for cid in case_ids}, now)
        for cid in case_ids:
            member[cid] = alert.id
        return len(case_ids)

    def _emit(self, session: Session, alert: SurgeAlert, case_ids: list[int]) -> None:
        core = self.core
        if not core.webhook_urls:
            return
        view = self._view(alert, case_ids, None)
        payload = {"event": "surge", "occurred_at": iso(core.now()), "alert": view.model_dump(mode="json")}
        for url in core.webhook_urls:
            enqueue(session, "surge", url, payload, case_id=None, now=core.now())

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _view(alert: SurgeAlert, case_ids: list[int], incident_id: int | None) -> AlertView:
        return AlertView(
            id=alert.id, product=alert.product, dispute_type=alert.dispute_type, scopes=list(alert.scopes),
            batch=alert.batch, window_start=alert.window_start, window_end=alert.window_end, count=alert.count,
            expected=alert.expected, p_value=alert.p_value, alpha=alert.alpha, safety_count=alert.safety_count,
            first_case_at=alert.first_case_at, last_case_at=alert.last_case_at, status=alert.status,
            reason=alert.reason, detected_at=alert.detected_at, updated_at=alert.updated_at,
            case_ids=sorted(case_ids), incident_id=incident_id,
        )

    def _views(self, session: Session, alerts: list[SurgeAlert]) -> list[AlertView]:
        ids = [a.id for a in alerts]
        cases: dict[int, list[int]] = defaultdict(list)
        incidents: dict[int, int] = {}
        if ids:
            for case_id, alert_id in session.execute(
                    select(SurgeAlertCase.case_id, SurgeAlertCase.alert_id).where(SurgeAlertCase.alert_id.in_(ids))):
                cases[alert_id].append(case_id)
            incidents = dict(session.execute(
                select(RecallIncident.alert_id, RecallIncident.id).where(RecallIncident.alert_id.in_(ids))).all())
        return [self._view(a, cases[a.id], incidents.get(a.id)) for a in alerts]

    def list_alerts(self, status: str | None = None, product: str | None = None, since: datetime | None = None,
                    limit: int = 100, after_id: int = 0) -> list[AlertView]:
        """Alerts matching every given filter, oldest first; ``since``: last case at or after it."""
        if status is not None and status not in ALERT_STATUSES:
            raise InvalidInput(f"status must be one of {list(ALERT_STATUSES)}, got {status!r}", field="status")
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000", field="limit")
        query = select(SurgeAlert).where(SurgeAlert.id > after_id)
        if status:
            query = query.where(SurgeAlert.status == status)
        if product:
            query = query.where(SurgeAlert.product == self.core.catalogue.resolve(product))
        if since is not None:
            if since.tzinfo is None:
                raise InvalidInput("since needs a timezone offset", field="since")
            query = query.where(SurgeAlert.last_case_at >= as_utc(since))
        with self.core.db.session() as session:
            return self._views(session, list(session.scalars(query.order_by(SurgeAlert.id).limit(limit))))

    def get_alert(self, alert_id: int) -> AlertView:
        with self.core.db.session() as session:
            alert = session.get(SurgeAlert, alert_id)
            if alert is None:
                raise NotFound(f"alert {alert_id} does not exist")
            return self._views(session, [alert])[0]

    def daily_series(self, product: str, days: int = 30, until: datetime | None = None) -> DailySeries:
        """Complaints per day about ``product`` (SKU, name or alias) for the ``days`` calendar days
        (policy timezone) ending with the day of ``until`` (default now), by ``received_at``, and
        the product's alerts whose cases fall in that period."""
        if not 1 <= days <= 366:
            raise InvalidInput("days must be between 1 and 366", field="days")
        if until is not None and until.tzinfo is None:
            raise InvalidInput("until needs a timezone offset", field="until")
        sku = self.core.catalogue.resolve(product)
        if not sku:
            raise InvalidInput("product is empty", field="product")
        zone = ZoneInfo(self.core.policy.spec.clock.timezone)
        last = as_utc(until or self.core.now()).astimezone(zone).date()
        first = last - timedelta(days=days - 1)
        start = as_utc(datetime.combine(first, datetime.min.time(), zone))
        end = as_utc(datetime.combine(last + timedelta(days=1), datetime.min.time(), zone))
        counts: dict[date, int] = defaultdict(int)
        with self.core.db.session() as session:
            for (received,) in session.execute(select(Case.received_at).where(
                    Case.product == sku, Case.received_at >= start, Case.received_at < end)):
                counts[as_utc(received).astimezone(zone).date()] += 1
            alerts = list(session.scalars(select(SurgeAlert).where(
                SurgeAlert.product == sku, SurgeAlert.last_case_at >= start, SurgeAlert.first_case_at < end)
                .order_by(SurgeAlert.id)))
            views = self._views(session, alerts)
        return DailySeries(product=sku, timezone=zone.key, alerts=views,
                           days=[DayCount(day=first + timedelta(days=i), count=counts[first + timedelta(days=i)])
                                 for i in range(days)])

    # ------------------------------------------------------------------ handling

    def alert_event(self, alert_id: int, event: str, actor: str, reason: str | None = None,
                    owner: str | None = None) -> AlertView:
        """acknowledge; dismiss (with a reason); open_recall (a recall incident, owner by default
        the policy's recall owner, decision due after the policy's decide_hours)."""
        if event not in ALERT_EVENTS:
            raise InvalidInput(f"event must be one of {list(ALERT_EVENTS)}, got {event!r}", field="event")
        if event == "dismiss" and not (reason and reason.strip()):
            raise InvalidInput("dismiss needs a reason", field="reason")
        if owner is not None and not owner.strip():
            raise InvalidInput("owner is empty", field="owner")
        now = self.core.now()
        with self.core.db.session(write=True) as session:
            query = select(SurgeAlert).where(SurgeAlert.id == alert_id)
            if self.core.db.is_postgres:
                query = query.with_for_update()
            alert = session.scalars(query).first()
            if alert is None:
                raise NotFound(f"alert {alert_id} does not exist")
            before = {"status": alert.status, "reason": alert.reason}
            if alert.status in ("dismissed", "recall"):
                raise Conflict(f"alert {alert_id} is {alert.status}; no further events")
            if event == "acknowledge":
                if alert.status == "acknowledged":
                    raise Conflict(f"alert {alert_id} is already acknowledged")
                alert.status = "acknowledged"
            elif event == "dismiss":
                alert.status, alert.reason = "dismissed", reason.strip()
            else:
                alert.status = "recall"
                recall = self.core.policy.spec.recall
                incident = RecallIncident(
                    alert_id=alert.id, product=alert.product, batch=alert.batch,
                    owner=(owner or recall.owner).strip(), status="open",
                    due_at=now + timedelta(hours=recall.decide_hours), note=reason, created_at=now, updated_at=now)
                session.add(incident)
                session.flush()
                self.audit.write(session, actor, "incident.opened", "incident", incident.id, None,
                                 _incident_snapshot(incident), f"from alert {alert.id}")
            alert.updated_at = now
            self.audit.write(session, actor, f"alert.{event}", "alert", alert.id, before,
                             {"status": alert.status, "reason": alert.reason}, reason)
            session.flush()
            return self._views(session, [alert])[0]

    def _incident_views(self, session: Session, incidents: list[RecallIncident]) -> list[IncidentView]:
        now = self.core.now()
        cases: dict[int, list[int]] = defaultdict(list)
        alert_ids = [i.alert_id for i in incidents]
        if alert_ids:
            for case_id, alert_id in session.execute(
                    select(SurgeAlertCase.case_id, SurgeAlertCase.alert_id)
                    .where(SurgeAlertCase.alert_id.in_(alert_ids))):
                cases[alert_id].append(case_id)
        return [IncidentView(
            id=i.id, alert_id=i.alert_id, product=i.product, batch=i.batch, owner=i.owner, status=i.status,
            due_at=i.due_at, overdue=i.status == "open" and i.due_at <= now, note=i.note, created_at=i.created_at,
            updated_at=i.updated_at, case_ids=sorted(cases[i.alert_id])) for i in incidents]

    def list_incidents(self, status: str | None = None, limit: int = 100, after_id: int = 0) -> list[IncidentView]:
        if status is not None and status not in INCIDENT_STATUSES:
            raise InvalidInput(f"status must be one of {list(INCIDENT_STATUSES)}, got {status!r}", field="status")
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000", field="limit")
        query = select(RecallIncident).where(RecallIncident.id > after_id)
        if status:
            query = query.where(RecallIncident.status == status)
        with self.core.db.session() as session:
            return self._incident_views(session, list(session.scalars(query.order_by(RecallIncident.id).limit(limit))))

    def get_incident(self, incident_id: int) -> IncidentView:
        with self.core.db.session() as session:
            incident = session.get(RecallIncident, incident_id)
            if incident is None:
                raise NotFound(f"incident {incident_id} does not exist")
            return self._incident_views(session, [incident])[0]

    def update_incident(self, incident_id: int, actor: str, owner: str | None = None, status: str | None = None,
                        note: str | None = None) -> IncidentView:
        """Change the owner, status or note of a recall incident; every change is audited."""
        if status is not None and status not in INCIDENT_STATUSES:
            raise InvalidInput(f"status must be one of {list(INCIDENT_STATUSES)}, got {status!r}", field="status")
        if owner is not None and not owner.strip():
            raise InvalidInput("owner is empty", field="owner")
        if owner is None and status is None and note is None:
            raise InvalidInput("nothing to change: give owner, status or note", field="body")
        with self.core.db.session(write=True) as session:
            query = select(RecallIncident).where(RecallIncident.id == incident_id)
            if self.core.db.is_postgres:
                query = query.with_for_update()
            incident = session.scalars(query).first()
            if incident is None:
                raise NotFound(f"incident {incident_id} does not exist")
            if incident.status == "closed":
                raise Conflict(f"incident {incident_id} is closed")
            before = _incident_snapshot(incident)
            if owner is not None:
                incident.owner = owner.strip()
            if status is not None:
                incident.status = status
            if note is not None:
                incident.note = note
            incident.updated_at = self.core.now()
            after = _incident_snapshot(incident)
            changed = [k for k in after if before[k] != after[k]]
            if changed:
                self.audit.write(session, actor, "incident.updated", "incident", incident.id,
                                 {k: before[k] for k in changed}, {k: after[k] for k in changed}, note)
            session.flush()
            return self._incident_views(session, [incident])[0]
