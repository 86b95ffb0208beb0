"""Human review: the queue, reviewers' decisions, message history and the dashboard numbers.

Both adapters (the Gradio review UI and the HTTP API) call these functions; nothing here
knows about either. A correction goes through the labels context (:mod:`triage.contexts.labels`) so deadlines,
routing, audit entries and webhooks follow exactly the rules of ingestion. Decisions use
optimistic concurrency: the reviewer sends the case ``version`` they looked at, and if
someone else changed the case since, they get :class:`~triage.errors.Conflict` instead of
silently overwriting the other decision.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case as sql_case
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from triage.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from triage.store.database import Database
from triage.store.tables import AuditEntry, Case, Prediction, ReviewDecision, SlaEvent, utcnow
from triage.taxonomy import HEADS, validate_label

OPEN_STATUSES = ("open", "pending")
ORDERS = ("deadline", "uncertainty")
ACTIONS = ("confirm", "correct", "skip")
CASE_LABEL_FIELDS = {"dispute_type": "dispute_type", "urgency": "grade", "emotion": "emotion", "escalation": "escalation"}


@dataclass
class QueueFilters:
    """Which unreviewed cases to show; ``None`` means any."""

    dispute_type: str | None = None
    grade: int | None = None
    emotion: str | None = None
    status: str | None = None
    tier: str | None = None
    breached: bool | None = None
    exclude: list[int] = field(default_factory=list)  # case ids this reviewer skipped

    def validate(self) -> "QueueFilters":
        try:
            if self.dispute_type:
                validate_label("dispute_type", self.dispute_type)
            if self.grade is not None:
                self.grade = validate_label("urgency", self.grade)
            if self.emotion:
                validate_label("emotion", self.emotion)
        except ValueError as exc:
            raise InvalidInput(f"queue filter: {exc}") from None
        if self.status and self.status not in OPEN_STATUSES:
            raise InvalidInput(f"queue filter: status must be one of {list(OPEN_STATUSES)}, got {self.status!r}")
        return self


def case_labels(case: Case) -> dict[str, Any]:
    """The case's current labels, keyed by head."""
    return {head: getattr(case, column) for head, column in CASE_LABEL_FIELDS.items()}


def next_deadline(case: Case) -> datetime | None:
    """The deadline that runs now: respond until the first response, then resolve."""
    return case.respond_due_at if case.first_response_at is None else case.resolve_due_at


def queue_item(case: Case, now: datetime | None = None) -> dict[str, Any]:
    """Everything the review screen and the API show for one case."""
    now = now or utcnow()
    prediction = case.prediction
    deadline = next_deadline(case)
    return {
        "case_id": case.id,
        "version": case.version,
        "message_id": case.message_id,
        "text": case.message.text_masked,
        "labels": case_labels(case),
        "labels_source": case.labels_source,
        "vulnerable": case.vulnerable,
        "status": case.status,
        "tier": case.tier,
        "teams": list(case.teams or []),
        "hints": list(case.hints or []),
        "received_at": case.received_at.isoformat(),
        "respond_due_at": case.respond_due_at.isoformat() if case.respond_due_at else None,
        "resolve_due_at": case.resolve_due_at.isoformat() if case.resolve_due_at else None,
        "next_deadline": deadline.isoformat() if deadline else None,
        "seconds_left": round((deadline - now).total_seconds()) if deadline else None,
        "breached": case.breached,
        "confidence": prediction.confidence if prediction else None,
        "model_version": prediction.model_version if prediction else None,
        "prediction": (
            {head: getattr(prediction, head) for head in HEADS} if prediction else None
        ),
        "scores": prediction.scores if prediction else {},
        "explanation": prediction.explanation if prediction else {},
        "rules": prediction.rules if prediction else [],
    }


class ReviewService:
    """Queue, decisions, history and dashboard over one database.

    ``service`` is the :class:`triage.service.TriageService` (for corrections and
    re-grading); ``learning`` the optional :class:`models.learning.LearningLoop` told about
    confirmations so it can retrain after enough of them.
    """

    def __init__(self, db: Database, service=None, learning=None):
        self.db = db
        self.service = service
        self.learning = learning

    # ----------------------------------------------------------------- queue

    def _queue_query(self, filters: QueueFilters, order: str):
        if order not in ORDERS:
            raise InvalidInput(f"order must be one of {list(ORDERS)}, got {order!r}")
        filters.validate()
        query = (
            select(Case)
            .outerjoin(Prediction, Case.prediction_id == Prediction.id)
            .where(Case.labels_source == "model", Case.status.in_(OPEN_STATUSES))
        )
        if filters.dispute_type:
            query = query.where(Case.dispute_type == filters.dispute_type)
        if filters.grade is not None:
            query = query.where(Case.grade == filters.grade)
        if filters.emotion:
            query = query.where(Case.emotion == filters.emotion)
        if filters.status:
            query = query.where(Case.status == filters.status)
        if filters.tier:
            query = query.where(Case.tier == filters.tier)
        if filters.breached is not None:
            breached = Case.respond_breached | Case.resolve_breached
            query = query.where(breached if filters.breached else ~breached)
        if filters.exclude:
            query = query.where(Case.id.not_in(filters.exclude))
        return query

    def queue(
        self, filters: QueueFilters | None = None, order: str = "deadline", limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Unreviewed open cases: by running deadline, then grade, then model uncertainty;
        or purely by uncertainty (lowest confidence first) for labeling sessions."""
        if not 1 <= limit <= 1000:
            raise InvalidInput(f"limit must be between 1 and 1000, got {limit}")
        if offset < 0:
            raise InvalidInput(f"offset must be >= 0, got {offset}")
        query = self._queue_query(filters or QueueFilters(), order)
        uncertainty = Prediction.confidence.asc().nulls_last()
        if order == "deadline":
            deadline = sql_case((Case.first_response_at.is_(None), Case.respond_due_at), else_=Case.resolve_due_at)
            query = query.order_by(deadline.asc().nulls_last(), Case.priority_grade.asc(), uncertainty, Case.id)
        else:
            query = query.order_by(uncertainty, Case.id)
        query = query.options(joinedload(Case.message), joinedload(Case.prediction)).limit(limit).offset(offset)
        now = utcnow()
        with self.db.session() as session:
            return [queue_item(case, now) for case in session.scalars(query).unique()]

    def queue_size(self, filters: QueueFilters | None = None) -> int:
        query = self._queue_query(filters or QueueFilters(), "deadline")
        with self.db.session() as session:
            return session.scalar(select(func.count()).select_from(query.subquery())) or 0

    def item(self, case_id: int) -> dict[str, Any]:
        with self.db.session() as session:
            case = session.get(Case, case_id, options=[joinedload(Case.message), joinedload(Case.prediction)])
            if case is None:
                raise NotFound(f"case {case_id} does not exist")
            return queue_item(case)

    # ----------------------------------------------------------------- decisions

    def decide(
        self,
        case_id: int,
        action: str,
        reviewer: str,
        expected_version: int | None,
        labels: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Confirm the case's labels, correct some heads, or skip it; a note goes to the audit log.

        Returns the case after the decision (``queue_item`` shape) plus ``"action"``.
        """
        if action not in ACTIONS:
            raise InvalidInput(f"action must be one of {list(ACTIONS)}, got {action!r}", field="action")
        if not reviewer:
            raise InvalidInput("a reviewer name is required", field="reviewer")
        note = (note or "").strip() or None
        if note and len(note) > 2000:
            raise InvalidInput("a note may have at most 2000 characters", field="note")
        if action == "skip":
            if note:
                self.add_note(case_id, reviewer, note)
            return {**self.item(case_id), "action": "skip"}
        if expected_version is None:
            raise InvalidInput("expected_version (the case version you reviewed) is required", field="expected_version")
        current = self.item(case_id)
        self._check_version(current, expected_version)
        if action == "correct":
            new_labels = self._validated_labels(labels)
            if all(current["labels"][head] == value for head, value in new_labels.items()):
                raise InvalidInput("the correction changes no label; use confirm instead", field="labels")
            merged = {**current["labels"], **new_labels}
        else:
            if labels:
                raise InvalidInput("confirm takes no labels; use correct to change them", field="labels")
            merged = dict(current["labels"])
        self.service.apply_labels(
            case_id,
            merged,
            actor=reviewer,
            reason=note or action,
            expected_version=expected_version,
            review=True,
        )
        if self.learning is not None:
            self.learning.note_confirmations(1, actor=f"auto:{reviewer}")
        return {**self.item(case_id), "action": action}

    @staticmethod
    def _check_version(current: dict[str, Any], expected_version: int) -> None:
        if current["labels_source"] != "model" and current["version"] != expected_version:
            raise Conflict(
                f"case {current['case_id']} was already reviewed since you opened it "
                f"(version {expected_version} -> {current['version']}); reload it to see that decision"
            )
        if current["version"] != expected_version:
            raise Conflict(
                f"case {current['case_id']} changed since you opened it (version {expected_version} -> "
                f"{current['version']}); reload it and decide again"
            )

    @staticmethod
    def _validated_labels(labels: dict[str, Any] | None) -> dict[str, Any]:
        if not labels:
            raise InvalidInput("a correction needs at least one head's label", field="labels")
        out = {}
        for head, value in labels.items():
            try:
                out[head] = validate_label(head, value)
            except ValueError as exc:
                raise InvalidInput(str(exc), field=f"labels.{head}") from None
        return out

    def add_note(self, case_id: int, reviewer: str, note: str) -> None:
        with self.db.session(write=True) as session:
            if session.get(Case, case_id) is None:
                raise NotFound(f"case {case_id} does not exist")
            session.add(
                AuditEntry(actor=reviewer, action="case.note", entity="case", entity_id=str(case_id), reason=note)
            )

    def bulk_confirm(
        self, min_confidence: float, reviewer: str, filters: QueueFilters | None = None, limit: int = 200
    ) -> dict[str, Any]:
        """Confirm every queued case whose model confidence is at least ``min_confidence``.

        Cases another reviewer decides meanwhile are counted as conflicts and left alone.
        """
        if not 0.0 <= min_confidence <= 1.0:
            raise InvalidInput(f"min_confidence must be between 0 and 1, got {min_confidence}", field="min_confidence")
        query = self._queue_query(filters or QueueFilters(), "deadline").where(Prediction.confidence >= min_confidence)
        with self.db.session() as session:
            targets = [(c.id, c.version) for c in session.scalars(query.order_by(Case.id).limit(limit))]
        confirmed, conflicts = [], []
        for case_id, version in targets:
            try:
                self.decide(case_id, "confirm", reviewer, version, note=f"bulk confirm (confidence >= {min_confidence:.2f})")
                confirmed.append(case_id)
            except Conflict:
                conflicts.append(case_id)
        return {"confirmed": confirmed, "conflicts": conflicts}

    # ----------------------------------------------------------------- history

    def history(self, case_id: int) -> list[dict[str, Any]]:
        """Predictions, reviews, SLA events and audited changes of a case, oldest first."""
        with self.db.session() as session:
            case = session.get(Case, case_id)
            if case is None:
                raise NotFound(f"case {case_id} does not exist")
            events: list[dict[str, Any]] = []
            for p in session.scalars(select(Prediction).where(Prediction.message_id == case.message_id)):
                events.append({
                    "at": p.created_at, "kind": "prediction", "actor": f"model:{p.model_version}",
                    "summary": f"{p.dispute_type} / grade {p.urgency} / {p.emotion}"
                    f"{' / escalation' if p.escalation else ''} (confidence {p.confidence:.2f})",
                })
            for r in session.scalars(select(ReviewDecision).where(ReviewDecision.case_id == case_id)):
                changes = [f"{h}: {r.previous.get(h)} -> {r.labels.get(h)}" for h in HEADS if r.previous.get(h) != r.labels.get(h)]
                events.append({
                    "at": r.created_at, "kind": "review", "actor": r.reviewer,
                    "summary": ("corrected " + ", ".join(changes)) if r.changed else "confirmed",
                    "note": r.reason,
                })
            for e in session.scalars(select(SlaEvent).where(SlaEvent.case_id == case_id)):
                tier = f", tier {e.tier_before} -> {e.tier_after}" if e.tier_before != e.tier_after else ""
                events.append({"at": e.detected_at, "kind": f"sla.{e.kind}", "actor": "sla-monitor",
                               "summary": f"{e.deadline} deadline {e.kind} (due {e.due_at.isoformat(timespec='minutes')}){tier}"})
            for a in session.scalars(
                select(AuditEntry).where(AuditEntry.entity == "case", AuditEntry.entity_id == str(case_id))
            ):
                events.append({"at": a.at, "kind": a.action, "actor": a.actor, "summary": _audit_summary(a), "note": a.reason})
        events.sort(key=lambda e: e["at"])
        return [{**e, "at": e["at"].isoformat(timespec="seconds")} for e in events]

    # ----------------------------------------------------------------- dashboard

    def dashboard(self, days: int = 30, now: datetime | None = None) -> dict[str, Any]:
        """Numbers for the dashboard: queue, reviews/day, agreement/head/day, confusion, SLA."""
        now = now or utcnow()
        since = now - timedelta(days=days)
        with self.db.session() as session:
            decisions = list(session.scalars(select(ReviewDecision).where(ReviewDecision.created_at >= since)))
            sla_events = list(session.scalars(select(SlaEvent).where(SlaEvent.detected_at >= since)))
            open_cases = session.execute(
                select(Case.respond_breached, Case.resolve_breached, Case.respond_warned, Case.resolve_warned)
                .where(Case.status.in_(OPEN_STATUSES))
            ).all()
        reviews_per_day: Counter[str] = Counter()
        agree: dict[str, dict[str, list[int]]] = {head: defaultdict(lambda: [0, 0]) for head in HEADS}
        confusion: dict[str, Counter] = {head: Counter() for head in HEADS}
        for d in decisions:
            day = d.created_at.date().isoformat()
            reviews_per_day[day] += 1
            for head in HEADS:
                model_label, confirmed = d.previous.get(head), d.labels.get(head)
                agree[head][day][0] += int(model_label == confirmed)
                agree[head][day][1] += 1
                confusion[head][(str(model_label), str(confirmed))] += 1
        sla_per_day: dict[str, Counter] = defaultdict(Counter)
        for e in sla_events:
            sla_per_day[e.detected_at.date().isoformat()][e.kind] += 1
        return {
            "queue_size": self.queue_size(),
            "reviews_total": len(decisions),
            "reviews_per_day": dict(sorted(reviews_per_day.items())),
            "agreement": {
                head: {day: round(a / n, 4) for day, (a, n) in sorted(per_day.items())} for head, per_day in agree.items()
            },
            "agreement_overall": {
                head: round(sum(a for a, _ in per_day.values()) / max(1, sum(n for _, n in per_day.values())), 4)
                for head, per_day in agree.items()
            },
            "confusion": {
                head: [{"model": m, "confirmed": c, "count": n} for (m, c), n in sorted(counts.items())]
                for head, counts in confusion.items()
            },
            "sla_per_day": {day: dict(counts) for day, counts in sorted(sla_per_day.items())},
            "open_breached": sum(1 for r in open_cases if r[0] or r[1]),
            "open_warned": sum(1 for r in open_cases if (r[2] or r[3]) and not (r[0] or r[1])),
            "open_cases": len(open_cases),
        }


SUMMARY_FIELDS = ("dispute_type", "grade", "emotion", "escalation", "tier", "respond_due_at", "resolve_due_at", "status")


def _audit_summary(entry: AuditEntry) -> str:
    """'tier: frontline -> supervisor; ...' from an audit entry's before/after (a creation
    lists the main fields only)."""
    before, after = entry.before or {}, entry.after or {}
    if not before and after and entry.action.endswith("created"):
        return ", ".join(f"{k} {after[k]}" for k in SUMMARY_FIELDS if k in after) or entry.action
    changes = [f"{k}: {before.get(k)} -> {after.get(k)}" for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return "; ".join(changes) or entry.action


# --------------------------------------------------------------------------- wiring


REVIEW_ROLES = ("reviewer", "admin")  # the roles that may open the review queue


class ReviewContext:
    """The review service, learning loop and model store of one running TriageService.

    Built once per process (the API routes, the review UI and the CLI share it), so the
    retrain job, its progress and the model swap are the same object everywhere.
    """

    def __init__(self, service, store=None, settings=None, **loop_options):
        from models.learning import loop_for_service
        from models.store import ModelStore

        self.service = service
        self.settings = settings or service.settings
        self.store = store or ModelStore(self.settings.effective_model_dir)
        self.learning = loop_for_service(service, self.store, self.settings, **loop_options)
        self.review = ReviewService(service.db, service, self.learning)

    def models_overview(self) -> dict[str, Any]:
        """Every model version (oldest first) with status, gate reason and metrics, and the
        latest retrain job."""
        job = self.learning.job()
        return {
            "current": self.store.current_version(),
            "versions": self.store.list_versions(),
            "retrain": job.as_dict() if job else None,
        }

    def require_reviewer(self, name: str | None, admin: bool = False) -> str:
        """``name`` if that user may review (roles reviewer, admin) or, with ``admin``, change
        models; else Unauthorized/Forbidden.

        A review UI session (password log-in, :meth:`Accounts.desk_session`) has no key, so
        model changes there need the admin role and an unrevoked key with the admin scope: the
        same scope the API asks of the request's key for promote, rollback and retrain.
        """
        if not name:
            raise Unauthorized("log in first")
        role = self.service.active_user_role(name)
        allowed = ("admin",) if admin else REVIEW_ROLES
        if role not in allowed:
            raise Forbidden(f"user {name!r} (role {role}) may not do this; it needs the role {' or '.join(allowed)}")
        if admin and not self.service.user_holds_scope(name, "admin"):
            raise Forbidden(f"user {name!r} holds no active API key with the admin scope; "
                            f"create one with `triage keys create {name} --scope admin`")
        return name
