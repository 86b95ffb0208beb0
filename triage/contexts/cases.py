"""Cases and their messages: the views adapters get, reading and filtering, helpdesk events
(first response, pending, resumed, resolved, closed), and the policy decision applied to a
case (labels, routing, deadlines and when the SLA monitor must look next).

Changes queue their webhook events into the outbox in the same transaction (:meth:`Cases.emit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, joinedload

from triage.clock import MAX_CLOCK_SKEW, as_utc, input_time_utc, iso
from triage.contexts.audit import AuditLog, case_snapshot, diff
from triage.contexts.core import ServiceCore
from triage.contexts.writeback import enqueue_writeback
from triage.errors import Conflict, InvalidInput, NotFound
from triage.policy import Decision, Labels
from triage.store.outbox import enqueue
from triage.store.tables import Case, Message, Prediction as PredictionRow, SlaEvent

CASE_EVENTS = ("first_response", "pending", "resumed", "resolved", "closed", "followed_up", "transferred")


# ----------------------------------------------------------------------------- views


class PredictionView(BaseModel):
    model_version: str
    dispute_type: str
    urgency: int
    emotion: str
    escalation: bool
    vulnerable: bool
    confidence: float
    scores: dict[str, Any]
    explanation: dict[str, Any]
    rules: list[Any]
    created_at: datetime


class CaseView(BaseModel):
    id: int
    message_id: int
    source: str
    external_id: str
    dispute_type: str
    grade: int
    priority_grade: int
    emotion: str
    angry: bool
    escalation: bool
    vulnerable: bool
    labels_source: str
    status: str
    tier: str
    teams: list[str]
    hints: list[str]
    actions: list[str]
    received_at: datetime
    respond_due_at: datetime | None
    resolve_due_at: datetime | None
    respond_warn_at: datetime | None
    resolve_warn_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    respond_warned: bool
    resolve_warned: bool
    respond_breached: bool
    resolve_breached: bool
    breached: bool
    breach_count: int
    model_version: str | None
    confidence: float | None
    updated_at: datetime
    product: str | None = None
    product_source: str | None = Field(default=None, description="'field' (given) or 'text' (found in the text)")
    batch: str | None = None
    order_id: str | None = None
    owner: str | None = Field(default=None, description="the first agent who responded (首接负责制)")
    followup_due_at: datetime | None = None
    followed_up_at: datetime | None = None
    satisfaction: int | None = None
    followup_breached: bool = False


class MessageView(BaseModel):
    id: int
    source: str
    external_id: str
    channel: str | None
    customer_ref: str | None
    text: str  # masked
    received_at: datetime
    created_at: datetime
    case: CaseView | None
    prediction: PredictionView | None


class SlaEventView(BaseModel):
    id: int
    case_id: int
    kind: str
    deadline: str
    due_at: datetime
    occurred_at: datetime
    detected_at: datetime
    tier_before: str | None
    tier_after: str | None


class CaseFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["open", "pending", "resolved", "closed"] | None = None
    tier: str | None = None
    grade: int | None = Field(default=None, ge=1, le=3)
    dispute_type: Literal["quality", "service", "advertising", "refund", "other"] | None = None
    breached: bool | None = None
    due_before: datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    after_id: int = Field(default=0, ge=0, description="return cases with a larger id (paging)")


def case_view(case: Case) -> CaseView:
    prediction = case.prediction
    return CaseView(
        id=case.id,
        message_id=case.message_id,
        source=case.message.source,
        external_id=case.message.external_id,
        dispute_type=case.dispute_type,
        grade=case.grade,
        priority_grade=case.priority_grade,
        emotion=case.emotion,
        angry=case.angry,
        escalation=case.escalation,
        vulnerable=case.vulnerable,
        labels_source=case.labels_source,
        status=case.status,
        tier=case.tier,
        teams=list(case.teams or []),
        hints=list(case.hints or []),
        actions=list(case.actions or []),
        received_at=case.received_at,
        respond_due_at=case.respond_due_at,
        resolve_due_at=case.resolve_due_at,
        respond_warn_at=case.respond_warn_at,
        resolve_warn_at=case.resolve_warn_at,
        first_response_at=case.first_response_at,
        resolved_at=case.resolved_at,
        closed_at=case.closed_at,
        respond_warned=case.respond_warned,
        resolve_warned=case.resolve_warned,
        respond_breached=case.respond_breached,
        resolve_breached=case.resolve_breached,
        breached=case.breached,
        breach_count=case.breach_count,
        model_version=prediction.model_version if prediction else None,
        confidence=prediction.confidence if prediction else None,
        updated_at=case.updated_at,
        product=case.product,
        product_source=case.product_source,
        batch=case.batch,
        order_id=case.order_id,
        owner=case.owner,
        followup_due_at=case.followup_due_at,
        followed_up_at=case.followed_up_at,
        satisfaction=case.satisfaction,
        followup_breached=bool(case.followup_breached),
    )


def prediction_view(row: PredictionRow) -> PredictionView:
    return PredictionView(
        model_version=row.model_version,
        dispute_type=row.dispute_type,
        urgency=row.urgency,
        emotion=row.emotion,
        escalation=row.escalation,
        vulnerable=row.vulnerable,
        confidence=row.confidence,
        scores=row.scores,
        explanation=row.explanation,
        rules=row.rules or [],
        created_at=row.created_at,
    )


def prediction_row(prediction, now: datetime) -> PredictionRow:
    """A Prediction (pydantic) as a row; one model_dump turns numpy values into plain JSON."""
    data = prediction.model_dump(mode="json") if isinstance(prediction, BaseModel) else _jsonable(vars(prediction))
    return PredictionRow(
        model_version=data["model_version"], dispute_type=data["dispute_type"], urgency=int(data["urgency"]),
        emotion=data["emotion"], escalation=bool(data["escalation"]), vulnerable=bool(data.get("vulnerable", False)),
        confidence=float(data["confidence"]), scores=data["scores"], explanation=data["explanation"],
        rules=data.get("rules") or [], created_at=now,
    )


def _jsonable(value):
    """Explanations carry tuples and RuleHit objects; store plain JSON."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def labels_of(case: Case) -> Labels:
    return Labels(case.dispute_type, case.grade, case.emotion, case.escalation, case.vulnerable)


def _parse_pauses(raw: Sequence[Sequence[str | None]]) -> list[tuple[datetime, datetime | None]]:
    return [
        (datetime.fromisoformat(a), datetime.fromisoformat(b) if b else None) for a, b in (raw or [])
    ]


def refresh_next_check(case: Case) -> None:
    """When the SLA monitor must look at ``case`` next: its earliest unmet warning or deadline.

    None while the clock is stopped (pending) or nothing is left to watch."""
    moments = []
    if case.status == "open":
        if case.first_response_at is None:
            if not case.respond_warned and case.respond_warn_at:
                moments.append(case.respond_warn_at)
            if not case.respond_breached and case.respond_due_at:
                moments.append(case.respond_due_at)
        if case.resolved_at is None:
            if not case.resolve_warned and case.resolve_warn_at:
                moments.append(case.resolve_warn_at)
            if not case.resolve_breached and case.resolve_due_at:
                moments.append(case.resolve_due_at)
    elif case.status == "resolved" and case.followed_up_at is None and case.followup_due_at:
        if not case.followup_warned and case.followup_warn_at:
            moments.append(case.followup_warn_at)
        if not case.followup_breached:
            moments.append(case.followup_due_at)
    case.next_check_at = min(moments) if moments else None


def _close_pause(case: Case, moment: datetime) -> list:
    pauses = [list(p) for p in case.pauses or []]
    if pauses and pauses[-1][1] is None:
        start = datetime.fromisoformat(pauses[-1][0])
        pauses[-1][1] = iso(max(moment, start))
    return pauses


class Cases:
    def __init__(self, core: ServiceCore, audit: AuditLog):
        self.core = core
        self.audit = audit

    # ------------------------------------------------------------------ outbox

    def emit(self, session: Session, event: str, case: Case, extra: dict[str, Any] | None = None) -> None:
        """Queue ``event`` for every webhook receiver, in the caller's transaction."""
        core = self.core
        if not core.webhook_urls:
            return
        if case.id is None:
            session.flush()
        payload = {"event": event, "occurred_at": iso(core.now()),
                   "case": case_view(case).model_dump(mode="json"), **(extra or {})}
        for url in core.webhook_urls:
            enqueue(session, event, url, payload, case_id=case.id, now=core.now())

    def write_back(self, session: Session, cases: Sequence[Case], before: dict[int, dict] | None = None) -> None:
        """Queue helpdesk write-back (tags, priority) for connector cases, in the caller's transaction
        (:mod:`triage.contexts.writeback`)."""
        settings = self.core.settings
        if any(settings.writeback_enabled(c) for c in ("chatwoot", "zammad")):
            enqueue_writeback(session, settings, cases, self.core.now(), before)

    # ------------------------------------------------------------------ policy on a case

    def apply_decision(self, case: Case, labels: Labels, decision: Decision) -> None:
        """Set labels, routing and deadlines (from the original receipt time) on ``case``."""
        case.dispute_type = labels.dispute_type
        case.grade = labels.urgency
        case.priority_grade = decision.priority_grade
        case.emotion = labels.emotion
        case.angry = labels.emotion == "angry"
        case.escalation = labels.escalation
        case.vulnerable = labels.vulnerable
        base_tier = decision.tier
        # Escalations already earned by breaches keep their effect on the new routing.
        for n in range(1, (case.breach_count or 0) + 1):
            base_tier = self.core.policy.escalated_tier(base_tier, n)
        case.tier = base_tier
        case.teams = decision.teams
        case.hints = decision.hints
        case.actions = decision.actions
        self.schedule(case, decision)

    def schedule(self, case: Case, decision: Decision | None = None) -> None:
        policy = self.core.policy
        if decision is None:
            decision = policy.decide(labels_of(case), case.message.text_masked if case.message else "")
        now = self.core.now()
        # A pause still running counts as ending now: the deadline shown is "if resumed now".
        pauses = [(a, b or max(now, a)) for a, b in _parse_pauses(case.pauses)]
        clock = policy.clock
        start, share = case.received_at, self.core.warning_share
        case.respond_due_at = clock.deadline(start, decision.respond, pauses)
        case.respond_warn_at = clock.deadline(start, decision.respond * share, pauses)
        if decision.resolve:
            case.resolve_due_at = clock.deadline(start, decision.resolve, pauses)
            case.resolve_warn_at = clock.deadline(start, decision.resolve * share, pauses)
        else:
            case.resolve_due_at = case.resolve_warn_at = None
        refresh_next_check(case)

    # ------------------------------------------------------------------ reading

    def load(self, session: Session, case_id: int, lock: bool = False) -> Case:
        """The case row with its message and prediction; with ``lock``, locked for update."""
        query = select(Case).where(Case.id == case_id).options(joinedload(Case.message), joinedload(Case.prediction))
        if lock and self.core.db.is_postgres:
            query = query.with_for_update(of=Case)
        case = session.scalars(query).first()
        if case is None:
            raise NotFound(f"case {case_id} does not exist")
        return case

    def get_case(self, case_id: int) -> CaseView:
        with self.core.db.session() as session:
            return case_view(self.load(session, case_id))

    def get_message(self, message_id: int) -> MessageView:
        with self.core.db.session() as session:
            message = session.get(Message, message_id, options=[joinedload(Message.case).joinedload(Case.prediction)])
            if message is None:
                raise NotFound(f"message {message_id} does not exist")
            latest = session.scalars(
                select(PredictionRow).where(PredictionRow.message_id == message_id).order_by(PredictionRow.id.desc())
            ).first()
            return MessageView(
                id=message.id, source=message.source, external_id=message.external_id, channel=message.channel,
                customer_ref=message.customer_ref, text=message.text_masked, received_at=message.received_at,
                created_at=message.created_at,
                case=case_view(message.case) if message.case else None,
                prediction=prediction_view(latest) if latest else None,
            )

    def list_cases(self, filters: CaseFilter | None = None, **kwargs) -> list[CaseView]:
        """Cases matching every given filter, oldest first, paged by ``after_id``."""
        f = filters or CaseFilter(**kwargs)
        query = select(Case).options(joinedload(Case.message), joinedload(Case.prediction)).where(Case.id > f.after_id)
        if f.status:
            query = query.where(Case.status == f.status)
        if f.tier:
            tiers = self.core.policy.tiers
            if f.tier not in tiers:
                raise InvalidInput(f"tier must be one of {tiers}, got {f.tier!r}", field="tier")
            query = query.where(Case.tier == f.tier)
        if f.grade:
            query = query.where(Case.grade == f.grade)
        if f.dispute_type:
            query = query.where(Case.dispute_type == f.dispute_type)
        if f.breached is not None:
            either = or_(Case.respond_breached.is_(True), Case.resolve_breached.is_(True))
            query = query.where(either if f.breached else ~either)
        if f.due_before is not None:
            if f.due_before.tzinfo is None:
                raise InvalidInput("due_before needs a timezone offset", field="due_before")
            due = as_utc(f.due_before)
            query = query.where(or_(
                and_(Case.first_response_at.is_(None), Case.respond_due_at < due),
                and_(Case.resolved_at.is_(None), Case.resolve_due_at < due),
            ))
        query = query.order_by(Case.id).limit(f.limit)
        with self.core.db.session() as session:
            return [case_view(c) for c in session.scalars(query).unique().all()]

    def list_breaches(self, since: datetime | None = None, limit: int = 100, after_id: int = 0) -> list[SlaEventView]:
        """Breach events, oldest first (the deadline that passed, when it was noticed, tiers)."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000", field="limit")
        if since is not None and since.tzinfo is None:
            raise InvalidInput("since needs a timezone offset", field="since")
        with self.core.db.session() as session:
            after = after_id
            if since is not None:
                # The first breach on or after ``since``, found through the (kind, occurred_at)
                # index, so the id-ordered scan starts there instead of walking all history (one
                # lower bound on id: SQLite uses only one for the range). OFFSET 0 keeps
                # PostgreSQL from turning min(id) into a walk of the primary key.
                window = (select(SlaEvent.id).where(SlaEvent.kind == "breach", SlaEvent.occurred_at >= as_utc(since))
                          .offset(0).subquery())
                first = session.scalar(select(func.min(window.c.id)))
                if first is None:
                    return []
                after = max(after_id, first - 1)
            query = select(SlaEvent).where(SlaEvent.kind == "breach", SlaEvent.id > after)
            if since is not None:
                query = query.where(SlaEvent.occurred_at >= as_utc(since))
            rows = session.scalars(query.order_by(SlaEvent.id).limit(limit)).all()
            return [SlaEventView.model_validate(r, from_attributes=True) for r in rows]

    def counts(self) -> dict[str, Any]:
        """Totals for /metrics: cases per status, breaches per deadline."""
        with self.core.db.session() as session:
            by_status = dict(session.execute(select(Case.status, func.count()).group_by(Case.status)).all())
            breaches = dict(session.execute(
                select(SlaEvent.deadline, func.count()).where(SlaEvent.kind == "breach").group_by(SlaEvent.deadline)
            ).all())
        return {"cases": by_status, "breaches": breaches}

    def followup_stats(self) -> list[dict[str, Any]]:
        """Follow-up calls (回访) per dispute type and tier: calls due so far, made on time, made
        late or missed (breached), and the mean satisfaction of the calls made."""
        now = self.core.now()
        query = select(Case.dispute_type, Case.tier, Case.followup_due_at, Case.followed_up_at, Case.satisfaction,
                       Case.followup_breached).where(Case.followup_due_at.is_not(None))
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        with self.core.db.session() as session:
            for dispute_type, tier, due, done, score, breached in session.execute(query):
                g = groups.setdefault((dispute_type, tier), {"dispute_type": dispute_type, "tier": tier, "due": 0,
                                                             "on_time": 0, "missed": 0, "scores": []})
                if done is None and due > now:
                    continue  # not due yet
                g["due"] += 1
                if done is not None and done <= due:
                    g["on_time"] += 1
                if breached:
                    g["missed"] += 1
                if score is not None:
                    g["scores"].append(score)
        out = []
        for key in sorted(groups):
            g = groups[key]
            scores = g.pop("scores")
            g["satisfaction"] = round(sum(scores) / len(scores), 2) if scores else None
            out.append(g)
        return out

    # ------------------------------------------------------------------ case events

    def record_event(self, case_id: int, event: str, actor: str, at: datetime | None = None,
                     note: str | None = None, *, agent: str | None = None,
                     satisfaction: int | None = None) -> CaseView:
        """Apply a helpdesk event (first_response, pending, resumed, resolved, closed,
        followed_up, transferred).

        pending stops the SLA clock, resumed restarts it and moves the deadlines by the pause.
        The ``agent`` of the first response owns the case (首接负责制); only ``transferred``
        (with the new ``agent``) changes the owner. resolved starts the follow-up deadline;
        followed_up records the call's ``satisfaction`` (1-5), and a score at or below the
        policy's ``low_satisfaction`` reopens the case to its owner.
        """
        if event not in CASE_EVENTS:
            raise InvalidInput(f"event must be one of {list(CASE_EVENTS)}, got {event!r}", field="event")
        if agent is not None and not agent.strip():
            raise InvalidInput("agent is empty or only whitespace", field="agent")
        if event == "followed_up":
            if satisfaction is None:
                raise InvalidInput("followed_up needs satisfaction (1-5)", field="satisfaction")
            if isinstance(satisfaction, bool) or not isinstance(satisfaction, int) or not 1 <= satisfaction <= 5:
                raise InvalidInput(f"satisfaction must be an integer from 1 to 5, got {satisfaction!r}",
                                   field="satisfaction")
        elif satisfaction is not None:
            raise InvalidInput("satisfaction belongs to a followed_up event", field="satisfaction")
        if event == "transferred" and agent is None:
            raise InvalidInput("transferred needs the agent who takes the case over", field="agent")
        now = self.core.now()
        moment = input_time_utc(at, "at") if at else now
        if note is not None and "\x00" in note:
            raise InvalidInput("note contains a NUL character", field="note")
        if moment > now + MAX_CLOCK_SKEW:
            raise InvalidInput("at is in the future", field="at")
        with self.core.db.session(write=True) as session:
            case = self.load(session, case_id, lock=True)
            if moment < case.received_at:
                raise InvalidInput("at is before the message was received", field="at")
            before = case_snapshot(case)
            status = case.status
            if status == "closed":
                raise Conflict(f"case {case_id} is closed; no further events")
            reopened = False
            if event == "first_response":
                if case.first_response_at is not None:
                    raise Conflict(f"case {case_id} already has a first response at {iso(case.first_response_at)}")
                case.first_response_at = moment
                if case.owner is None:
                    case.owner = (agent or actor.removeprefix("api:")).strip()
            elif event == "transferred":
                if case.owner == agent.strip():
                    raise Conflict(f"case {case_id} is already owned by {case.owner}")
                case.owner = agent.strip()
            elif event == "followed_up":
                if status != "resolved":
                    raise Conflict(f"case {case_id} is {status}; only a resolved case gets a follow-up call")
                if moment < case.resolved_at:
                    raise InvalidInput("at is before the case was resolved", field="at")
                case.followed_up_at = moment
                case.satisfaction = satisfaction
                if satisfaction <= self.core.policy.spec.followup.low_satisfaction:
                    case.status = "open"  # back to its owner, the resolution clock runs on
                    case.resolved_at = None
                    reopened = True
            elif event == "pending":
                if status != "open":
                    raise Conflict(f"case {case_id} is {status}; only an open case can become pending")
                case.status = "pending"
                case.pauses = [*(case.pauses or []), [iso(moment), None]]
            elif event == "resumed":
                if status != "pending":
                    raise Conflict(f"case {case_id} is {status}; only a pending case can be resumed")
                case.status = "open"
                case.pauses = _close_pause(case, moment)
                self.schedule(case)
            elif event == "resolved":
                if status not in ("open", "pending"):
                    raise Conflict(f"case {case_id} is {status}; only an open or pending case can be resolved")
                if status == "pending":
                    case.pauses = _close_pause(case, moment)
                case.status = "resolved"
                case.resolved_at = moment
                self._schedule_followup(case, moment)
            elif event == "closed":
                if status == "pending":
                    case.pauses = _close_pause(case, moment)
                case.status = "closed"
                case.closed_at = moment
                if case.resolved_at is None:
                    case.resolved_at = moment
            case.updated_at = now
            refresh_next_check(case)
            old, new = diff(before, case_snapshot(case))
            notify = {"owner": case.owner, "next_tier": self.core.policy.next_tier(case.tier)}
            reason = note
            if reopened:  # the owner and the tier above the case's are told (webhook and audit)
                told = f"notify owner {notify['owner'] or '-'}, next tier {notify['next_tier'] or '-'}"
                reason = f"{note}; {told}" if note else told
            self.audit.write(session, actor, f"case.{event}", "case", case.id, old, new, reason)
            session.flush()
            if reopened:
                self.emit(session, "reopened", case, {"satisfaction": satisfaction, "owner": case.owner,
                                                      "note": note, "notify": notify})
            return case_view(case)

    def _schedule_followup(self, case: Case, resolved_at: datetime) -> None:
        """The follow-up call is due ``followup.due_hours`` after the resolution (the plans: 24 h);
        it warns at the same share of that time as the other deadlines. Each resolution starts
        a new round: after a reopening, the new follow-up can warn and breach again."""
        from datetime import timedelta

        policy = self.core.policy
        due = timedelta(hours=policy.spec.followup.due_hours)
        case.followed_up_at = None
        case.followup_due_at = policy.clock.deadline(resolved_at, due, [])
        case.followup_warn_at = policy.clock.deadline(resolved_at, due * self.core.warning_share, [])
        case.followup_warned = False
        case.followup_breached = False
