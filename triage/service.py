"""The service layer every adapter calls (HTTP API, review UI, CLI, SLA monitor).

One place for the rules of the product: ingestion (idempotent on source + external id,
safe under concurrency), the SLA and routing policy applied to cases, case events, label
changes with recomputed deadlines, users and API keys, and the append-only audit log. Every
change of label, grade, deadline, tier and status writes an audit entry in the same
transaction as the change, and outbound webhook events go into the outbox in that same
transaction (the dispatcher sends them later, so a dead receiver never blocks ingestion).

Functions take and return plain pydantic views, never ORM objects, so adapters cannot
lazy-load outside a session.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import queue
import secrets
import threading
import time
from concurrent.futures import Future
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from triage.clock import as_utc, utcnow
from triage.errors import Conflict, Forbidden, InvalidInput, ModelError, NotFound, Unauthorized, Unavailable
from triage.policy import Decision, Labels, Policy
from triage.storage import (
    ApiKey,
    AuditEntry,
    Case,
    Database,
    Message,
    Prediction as PredictionRow,
    ReviewDecision,
    SlaEvent,
    User,
)
from triage.taxonomy import HEADS, validate_label

SCOPES = ("ingest", "review", "admin")
ROLES = ("agent", "reviewer", "supervisor", "team_leader", "admin", "integration")
CASE_EVENTS = ("first_response", "pending", "resumed", "resolved", "closed")
MAX_BATCH = 1000
MAX_CLOCK_SKEW = timedelta(minutes=5)  # received_at may be this far in the future (clock drift)
KEY_PREFIX = "tri_"
# A retrain claimed in the audit log that has not ended after this long is taken as crashed,
# so its confirmations count again for the next automatic retrain.
RETRAIN_LEASE = timedelta(hours=2)
_RETRAIN_LOCK_KEY = 74657202  # PostgreSQL advisory lock: one retrain claim at a time
# A verified key is trusted this long without a database read; revoking a key or deactivating
# a user clears this process's cache at once, other server processes follow within this time.
AUTH_CACHE_S = 5.0


# ----------------------------------------------------------------------------- views


class MessageIn(BaseModel):
    """One complaint pushed by a helpdesk. Unknown fields are refused, so typos are not lost."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=64, description="the sending system, e.g. 'zendesk'")
    external_id: str = Field(min_length=1, max_length=200, description="the message's id in that system")
    text: str = Field(description="the customer's words; masked before storage")
    channel: str | None = Field(default=None, max_length=64, description="e.g. 'hotline', 'live_room', 'email'")
    customer_ref: str | None = Field(default=None, max_length=200, description="the customer's id upstream")
    received_at: datetime | None = Field(default=None, description="when the customer sent it (with offset); default now")


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


class IngestResult(BaseModel):
    """Outcome of one message: its case (new or the one a retry finds), or an error."""

    index: int = 0
    created: bool = False
    case: CaseView | None = None
    error: dict[str, Any] | None = None  # {"field": ..., "message": ...}


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


class AuditView(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None


class UserView(BaseModel):
    id: int
    name: str
    role: str
    active: bool
    created_at: datetime


class ApiKeyView(BaseModel):
    id: int
    user: str
    prefix: str
    scopes: list[str]
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class Principal(BaseModel):
    """Who is calling, with which scopes (admin implies every scope)."""

    user: str
    role: str
    scopes: list[str]
    key_id: int | None = None

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, *any_of: str) -> None:
        if not any(self.has(scope) for scope in any_of):
            raise Forbidden(
                f"API key of {self.user!r} has scopes {self.scopes}; this needs one of {list(any_of)}"
            )


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


# ----------------------------------------------------------------------------- helpers


class _StaticModels:
    """Adapts a bare Triager to the ``.triager`` / ``.loaded`` shape of models.learning.ModelHolder."""

    def __init__(self, triager):
        self._triager = triager

    @property
    def triager(self):
        from triage.errors import ModelError

        if self._triager is None:
            raise ModelError("no model is loaded; train one with `triage ensure-model`")
        return self._triager

    @property
    def loaded(self) -> bool:
        return self._triager is not None

    def swap(self, triager) -> None:
        self._triager = triager


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else as_utc(moment).isoformat()


def _parse_pauses(raw: Sequence[Sequence[str | None]]) -> list[tuple[datetime, datetime | None]]:
    return [
        (datetime.fromisoformat(a), datetime.fromisoformat(b) if b else None) for a, b in (raw or [])
    ]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def mask_text(text: str) -> str:
    """Normalise and mask personal data the way the triage pipeline does (what gets stored)."""
    from triage.text import mask_personal_data, normalise

    return mask_personal_data(normalise(text)).text


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


# Fields whose change the audit log records for a case.
AUDITED_CASE_FIELDS = (
    "dispute_type", "grade", "priority_grade", "emotion", "escalation", "vulnerable", "status",
    "tier", "teams", "respond_due_at", "resolve_due_at", "first_response_at", "resolved_at",
    "closed_at", "respond_warned", "resolve_warned", "respond_breached", "resolve_breached", "breach_count",
)


def case_snapshot(case: Case) -> dict[str, Any]:
    out = {}
    for name in AUDITED_CASE_FIELDS:
        value = getattr(case, name)
        out[name] = _iso(value) if isinstance(value, datetime) else (list(value) if isinstance(value, list) else value)
    return out


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
    case.next_check_at = min(moments) if moments else None


def diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    changed = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in changed}, {k: after[k] for k in changed}


# ----------------------------------------------------------------------------- the service


class TriageService:
    """The product's operations over one database, one policy and the current model."""

    def __init__(
        self,
        db: Database,
        policy: Policy,
        models=None,
        settings=None,
        *,
        now: Callable[[], datetime] = utcnow,
        webhook_urls: Sequence[str] | None = None,
    ):
        from triage.settings import get_settings

        self.db = db
        self.policy = policy
        self.settings = settings or get_settings()
        # models: a models.learning.ModelHolder (``.triager``, ``.loaded``) or a bare Triager.
        self.models = models if hasattr(models, "loaded") else _StaticModels(models)
        self.now = now
        if webhook_urls is None:
            raw = self.settings.webhook_url or ""
            webhook_urls = [u.strip() for u in raw.split(",") if u.strip()]
        self.webhook_urls = list(webhook_urls)
        self._coalescer: IngestCoalescer | None = None
        self._auth_cache: dict[str, tuple[float, Principal]] = {}
        self.warning_share = float(self.settings.sla_warning_share)
        if not 0 < self.warning_share < 1:
            raise InvalidInput(f"TRIAGE_SLA_WARNING_SHARE must be between 0 and 1, got {self.warning_share}")

    @classmethod
    def from_settings(cls, settings, models=None, *, upgrade: bool = True) -> "TriageService":
        db = Database.from_settings(settings)
        if upgrade:
            db.upgrade()
        return cls(db, Policy.from_settings(settings), models, settings)

    @property
    def triager(self):
        return self.models.triager

    # ------------------------------------------------------------------ audit & outbox

    def _audit(self, session: Session, actor: str, action: str, entity: str, entity_id, before=None,
               after=None, reason: str | None = None) -> None:
        session.add(AuditEntry(
            at=self.now(), actor=actor, action=action, entity=entity, entity_id=str(entity_id),
            before=before, after=after, reason=reason,
        ))

    def audit(self, action: str, actor: str, details: dict[str, Any], entity: str = "system",
              entity_id: str = "-") -> None:
        """Write one audit entry on its own (model promotions, retrains, settings changes)."""
        with self.db.session(write=True) as session:
            self._audit(session, actor, action, entity, entity_id, after=details)

    def _emit(self, session: Session, event: str, case: Case, extra: dict[str, Any] | None = None) -> None:
        """Queue ``event`` for every webhook receiver, in the caller's transaction."""
        if not self.webhook_urls:
            return
        from triage.webhooks import enqueue

        if case.id is None:
            session.flush()
        payload = {"event": event, "occurred_at": _iso(self.now()),
                   "case": case_view(case).model_dump(mode="json"), **(extra or {})}
        for url in self.webhook_urls:
            enqueue(session, event, url, payload, case_id=case.id, now=self.now())

    def _write_back(self, session: Session, cases: Sequence[Case], before: dict[int, dict] | None = None) -> None:
        """Queue helpdesk write-back (tags, priority) for connector cases, in the caller's transaction."""
        if any(self.settings.writeback_enabled(c) for c in ("chatwoot", "zammad")):
            from triage.writeback import enqueue_writeback

            enqueue_writeback(session, self.settings, cases, self.now(), before)

    def ingest_connector(self, message: dict[str, Any], thread: str | None, refs: dict[str, Any],
                         actor: str) -> IngestResult:
        """Ingest a helpdesk connector's message (``triage.connectors``), keeping its
        conversation/ticket references for write-back; a replay finds both again.

        A helpdesk does not read error bodies, so what the API would refuse is adapted and
        kept instead: text over the limit is cut to it, a send time in the future (a
        helpdesk clock ahead of ours) is replaced by the time of receipt."""
        message = dict(message)
        if isinstance(message.get("text"), str) and len(message["text"]) > self.settings.max_text_chars:
            message["text"] = message["text"][: self.settings.max_text_chars]
        try:
            msg = self._validate(message)
        except InvalidInput as exc:
            if exc.field != "received_at":
                raise
            msg = self._validate({k: v for k, v in message.items() if k != "received_at"})
        from triage.writeback import remember_refs

        remember_refs(self.db, msg.source, msg.external_id, thread, refs, self.now())
        return self.ingest(msg, actor)

    # ------------------------------------------------------------------ policy on a case

    def _apply_decision(self, case: Case, labels: Labels, decision: Decision) -> None:
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
            base_tier = self.policy.escalated_tier(base_tier, n)
        case.tier = base_tier
        case.teams = decision.teams
        case.hints = decision.hints
        case.actions = decision.actions
        self._schedule(case, decision)

    def _schedule(self, case: Case, decision: Decision | None = None) -> None:
        if decision is None:
            decision = self.policy.decide(self._labels_of(case), case.message.text_masked if case.message else "")
        now = self.now()
        # A pause still running counts as ending now: the deadline shown is "if resumed now".
        pauses = [(a, b or max(now, a)) for a, b in _parse_pauses(case.pauses)]
        clock = self.policy.clock
        start, share = case.received_at, self.warning_share
        case.respond_due_at = clock.deadline(start, decision.respond, pauses)
        case.respond_warn_at = clock.deadline(start, decision.respond * share, pauses)
        if decision.resolve:
            case.resolve_due_at = clock.deadline(start, decision.resolve, pauses)
            case.resolve_warn_at = clock.deadline(start, decision.resolve * share, pauses)
        else:
            case.resolve_due_at = case.resolve_warn_at = None
        refresh_next_check(case)

    @staticmethod
    def _labels_of(case: Case) -> Labels:
        return Labels(case.dispute_type, case.grade, case.emotion, case.escalation, case.vulnerable)

    # ------------------------------------------------------------------ ingestion

    def _validate(self, raw: MessageIn | dict[str, Any]) -> MessageIn:
        if isinstance(raw, MessageIn):
            msg = raw
        else:
            if not isinstance(raw, dict):
                raise InvalidInput(f"a message must be a JSON object, got {type(raw).__name__}", field="body")
            try:
                msg = MessageIn.model_validate(raw)
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err["loc"]) or "body"
                raise InvalidInput(f"{field}: {err['msg']}", field=field) from None
        if not msg.text or not msg.text.strip():
            raise InvalidInput("text is empty or only whitespace", field="text")
        limit = self.settings.max_text_chars
        if len(msg.text) > limit:
            raise InvalidInput(f"text has {len(msg.text)} characters; the limit is {limit}", field="text")
        if not msg.source.strip() or not msg.external_id.strip():
            field = "source" if not msg.source.strip() else "external_id"
            raise InvalidInput(f"{field} is empty or only whitespace", field=field)
        if msg.received_at is not None:
            if msg.received_at.tzinfo is None:
                raise InvalidInput("received_at needs a timezone offset, e.g. 2026-05-01T10:00:00+08:00",
                                   field="received_at")
            if as_utc(msg.received_at) > self.now() + MAX_CLOCK_SKEW:
                raise InvalidInput("received_at is in the future", field="received_at")
        return msg

    def _existing_cases(self, session: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Case]:
        keys = list(set(keys))
        found: dict[tuple[str, str], Case] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            by_source: dict[str, list[str]] = {}
            for source, external_id in chunk:
                by_source.setdefault(source, []).append(external_id)
            conditions = [and_(Message.source == s, Message.external_id.in_(ids)) for s, ids in by_source.items()]
            rows = session.scalars(
                select(Case).join(Case.message).where(or_(*conditions))
                .options(joinedload(Case.message), joinedload(Case.prediction))
            ).all()
            for case in rows:
                found[(case.message.source, case.message.external_id)] = case
        return found

    def _create_many(self, session: Session, entries: Sequence[tuple[MessageIn, Any, str, str]]) -> list[Case]:
        """Insert messages, predictions, cases and their audit entries as bulk INSERTs (one
        statement per table, ids back through RETURNING), then queue "triaged" events.

        The ORM objects are built, routed and scheduled as usual but never enter the session's
        unit of work: at hundreds of messages a second its bookkeeping costs more than the
        database does."""
        now = self.now()
        cases = []
        for msg, prediction, _actor, masked in entries:
            received = as_utc(msg.received_at) if msg.received_at else now
            message = Message(
                source=msg.source, external_id=msg.external_id, channel=msg.channel,
                customer_ref=msg.customer_ref, text_masked=masked,
                raw_text=msg.text if self.settings.store_raw_text else None,
                received_at=received, created_at=now,
            )
            row = _prediction_row(prediction, now)
            labels = Labels(row.dispute_type, row.urgency, row.emotion, row.escalation, row.vulnerable)
            decision = self.policy.decide(labels, message.text_masked, {hit["rule"] for hit in row.rules})
            case = Case(status="open", received_at=received, pauses=[], labels_source="model", created_at=now,
                        updated_at=now, breach_count=0, respond_warned=False, resolve_warned=False,
                        respond_breached=False, resolve_breached=False, first_response_at=None, resolved_at=None,
                        closed_at=None, version=1)
            case.message, case.prediction = message, row
            self._apply_decision(case, labels, decision)
            cases.append(case)
        messages = [c.message for c in cases]
        for message, new_id in zip(messages, _insert_returning_ids(session, Message, messages)):
            message.id = new_id
        for case in cases:
            case.message_id = case.prediction.message_id = case.message.id
        predictions = [c.prediction for c in cases]
        for row, new_id in zip(predictions, _insert_returning_ids(session, PredictionRow, predictions)):
            row.id = new_id
        for case in cases:
            case.prediction_id = case.prediction.id
        for case, new_id in zip(cases, _insert_returning_ids(session, Case, cases)):
            case.id = new_id
        session.connection().execute(insert(AuditEntry.__table__), [
            {"at": now, "actor": actor, "action": "case.created", "entity": "case", "entity_id": str(case.id),
             "before": None, "after": case_snapshot(case), "reason": f"triaged by model {case.prediction.model_version}"}
            for case, (_msg, _prediction, actor, _masked) in zip(cases, entries)
        ])
        for case in cases:
            self._emit(session, "triaged", case)
        self._write_back(session, cases)
        return cases

    def ingest(self, raw: MessageIn | dict[str, Any], actor: str = "api") -> IngestResult:
        """Triage one message into a case; a retry with the same source + external id returns
        the existing case (``created`` False), also when 20 retries race each other.

        With :meth:`start_coalescing`, messages arriving together share one model call and
        one transaction (what makes 50 concurrent clients cheap)."""
        msg = self._validate(raw)
        coalescer = self._coalescer
        if coalescer is not None and coalescer.running:
            return coalescer.submit(msg, actor)
        return self._ingest_valid([(0, msg)], actor)[0]

    async def ingest_async(self, raw: MessageIn | dict[str, Any], actor: str = "api") -> IngestResult:
        """:meth:`ingest` for an event loop: waits on the coalescer without holding a thread."""
        msg = self._validate(raw)
        coalescer = self._coalescer
        if coalescer is not None and coalescer.running:
            return await asyncio.wrap_future(coalescer.submit_nowait(msg, actor))
        return (await asyncio.to_thread(self._ingest_valid, [(0, msg)], actor))[0]

    def warm_up(self) -> None:
        """Load lazily built parts of the pipeline (segmenter, lexicons) before the first
        request instead of during it (about a second)."""
        if self.models.loaded:
            self._predict(["预热：摄像头开不了机"])

    def authenticate_cached(self, secret: str | None) -> Principal | None:
        """The principal if this key was verified moments ago (no I/O), else None."""
        if not secret:
            return None
        cached = self._auth_cache.get(hash_key(secret))
        return cached[1] if cached is not None and cached[0] > time.monotonic() else None

    def start_coalescing(self, max_batch: int = 64) -> None:
        if self._coalescer is None or not self._coalescer.running:
            self._coalescer = IngestCoalescer(self, max_batch=max_batch)
            self._coalescer.start()

    def stop_coalescing(self) -> None:
        if self._coalescer is not None:
            self._coalescer.stop()
            self._coalescer = None

    def ingest_many(self, raws: Sequence[MessageIn | dict[str, Any]], actor: str = "api") -> list[IngestResult]:
        """Triage up to 1,000 messages; each item succeeds or fails on its own."""
        if len(raws) > MAX_BATCH:
            raise InvalidInput(f"a batch holds at most {MAX_BATCH} messages, got {len(raws)}", field="messages")
        if not raws:
            raise InvalidInput("the batch is empty", field="messages")
        results: dict[int, IngestResult] = {}
        valid: list[tuple[int, MessageIn]] = []
        for index, raw in enumerate(raws):
            try:
                valid.append((index, self._validate(raw)))
            except InvalidInput as exc:
                results[index] = IngestResult(index=index, error={"field": exc.field, "message": str(exc)})
        if valid:
            for result in self._ingest_valid(valid, actor):
                results[result.index] = result
        return [results[i] for i in range(len(raws))]

    def _ingest_valid(self, items: list[tuple[int, MessageIn]], actor: str | Sequence[str]) -> list[IngestResult]:
        actors = [actor] * len(items) if isinstance(actor, str) else list(actor)
        actor_of = {index: a for (index, _), a in zip(items, actors)}
        keys = [(m.source, m.external_id) for _, m in items]
        with self.db.session() as session:
            existing = {k: case_view(c) for k, c in self._existing_cases(session, keys).items()}
        # The first occurrence of a key in this batch creates it; later ones repeat its result.
        first: dict[tuple[str, str], int] = {}
        fresh: list[tuple[int, MessageIn]] = []
        for index, msg in items:
            key = (msg.source, msg.external_id)
            if key not in existing and key not in first:
                first[key] = index
                fresh.append((index, msg))
        created: dict[tuple[str, str], CaseView] = {}
        if fresh:
            predictions, masked = self._predict([m.text for _, m in fresh])
            created = self._store_new([(m, p, actor_of[i], t) for (i, m), p, t in zip(fresh, predictions, masked)])
            missing = [k for k in first if k not in created]
            if missing:  # lost a race to a concurrent request: theirs is the case
                with self.db.session() as session:
                    existing.update({k: case_view(c) for k, c in self._existing_cases(session, missing).items()})
        results = []
        for index, msg in items:
            key = (msg.source, msg.external_id)
            if key in created and first.get(key) == index:
                results.append(IngestResult(index=index, created=True, case=created[key]))
            elif key in created:
                results.append(IngestResult(index=index, created=False, case=created[key]))
            elif key in existing:
                results.append(IngestResult(index=index, created=False, case=existing[key]))
            else:  # pragma: no cover - the unique key guarantees one of the above
                raise Conflict(f"message {key} could neither be stored nor found; retry")
        return results

    def _predict(self, texts: list[str]) -> tuple[list[Any], list[str]]:
        """Predictions and the masked texts to store, from one pass of the text pipeline when
        the triager exposes it (the stored text is exactly what the model saw)."""
        triager = self.triager
        if hasattr(triager, "predict_prepared") and hasattr(triager, "lexicon_dir"):
            from triage.text import prepare

            for index, text_ in enumerate(texts):
                triager.validate(text_, index)
            prepared = [prepare(text_, triager.lexicon_dir) for text_ in texts]
            return triager.predict_prepared(prepared), [p.text for p in prepared]
        return triager.predict_many(texts), [mask_text(text_) for text_ in texts]

    def _store_new(self, entries: list[tuple[MessageIn, Any, str, str]]) -> dict[tuple[str, str], CaseView]:
        """Insert all in one transaction; if a key was taken meanwhile, insert one by one."""
        try:
            with self.db.session(write=True) as session:
                cases = self._create_many(session, entries)
                return {(c.message.source, c.message.external_id): case_view(c) for c in cases}
        except IntegrityError:
            if len(entries) == 1:
                return {}
        out = {}
        for entry in entries:
            try:
                with self.db.session(write=True) as session:
                    [case] = self._create_many(session, [entry])
                    out[(case.message.source, case.message.external_id)] = case_view(case)
            except IntegrityError:
                continue
        return out

    # ------------------------------------------------------------------ reading

    def _case(self, session: Session, case_id: int, lock: bool = False) -> Case:
        query = select(Case).where(Case.id == case_id).options(joinedload(Case.message), joinedload(Case.prediction))
        if lock and self.db.is_postgres:
            query = query.with_for_update(of=Case)
        case = session.scalars(query).first()
        if case is None:
            raise NotFound(f"case {case_id} does not exist")
        return case

    def get_case(self, case_id: int) -> CaseView:
        with self.db.session() as session:
            return case_view(self._case(session, case_id))

    def get_message(self, message_id: int) -> MessageView:
        with self.db.session() as session:
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
            if f.tier not in self.policy.tiers:
                raise InvalidInput(f"tier must be one of {self.policy.tiers}, got {f.tier!r}", field="tier")
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
        with self.db.session() as session:
            return [case_view(c) for c in session.scalars(query).unique().all()]

    def list_breaches(self, since: datetime | None = None, limit: int = 100, after_id: int = 0) -> list[SlaEventView]:
        """Breach events, oldest first (the deadline that passed, when it was noticed, tiers)."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000", field="limit")
        query = select(SlaEvent).where(SlaEvent.kind == "breach", SlaEvent.id > after_id)
        if since is not None:
            if since.tzinfo is None:
                raise InvalidInput("since needs a timezone offset", field="since")
            query = query.where(SlaEvent.occurred_at >= as_utc(since))
        with self.db.session() as session:
            rows = session.scalars(query.order_by(SlaEvent.id).limit(limit)).all()
            return [SlaEventView.model_validate(r, from_attributes=True) for r in rows]

    def list_audit(self, entity: str | None = None, entity_id: Any = None, limit: int = 1000) -> list[AuditView]:
        query = select(AuditEntry)
        if entity:
            query = query.where(AuditEntry.entity == entity)
        if entity_id is not None:
            query = query.where(AuditEntry.entity_id == str(entity_id))
        with self.db.session() as session:
            rows = session.scalars(query.order_by(AuditEntry.id).limit(limit)).all()
            return [AuditView.model_validate(r, from_attributes=True) for r in rows]

    def counts(self) -> dict[str, Any]:
        """Totals for /metrics: cases per status, breaches per deadline."""
        with self.db.session() as session:
            by_status = dict(session.execute(select(Case.status, func.count()).group_by(Case.status)).all())
            breaches = dict(session.execute(
                select(SlaEvent.deadline, func.count()).where(SlaEvent.kind == "breach").group_by(SlaEvent.deadline)
            ).all())
        return {"cases": by_status, "breaches": breaches}

    # ------------------------------------------------------------------ case events

    def record_case_event(self, case_id: int, event: str, actor: str, at: datetime | None = None,
                          note: str | None = None) -> CaseView:
        """Apply a helpdesk event (first_response, pending, resumed, resolved, closed).

        pending stops the SLA clock, resumed restarts it and moves the deadlines by the pause.
        """
        if event not in CASE_EVENTS:
            raise InvalidInput(f"event must be one of {list(CASE_EVENTS)}, got {event!r}", field="event")
        now = self.now()
        if at is not None and at.tzinfo is None:
            raise InvalidInput("at needs a timezone offset", field="at")
        moment = as_utc(at) if at else now
        if moment > now + MAX_CLOCK_SKEW:
            raise InvalidInput("at is in the future", field="at")
        with self.db.session(write=True) as session:
            case = self._case(session, case_id, lock=True)
            if moment < case.received_at:
                raise InvalidInput("at is before the message was received", field="at")
            before = case_snapshot(case)
            status = case.status
            if status == "closed":
                raise Conflict(f"case {case_id} is closed; no further events")
            if event == "first_response":
                if case.first_response_at is not None:
                    raise Conflict(f"case {case_id} already has a first response at {_iso(case.first_response_at)}")
                case.first_response_at = moment
            elif event == "pending":
                if status != "open":
                    raise Conflict(f"case {case_id} is {status}; only an open case can become pending")
                case.status = "pending"
                case.pauses = [*(case.pauses or []), [_iso(moment), None]]
            elif event == "resumed":
                if status != "pending":
                    raise Conflict(f"case {case_id} is {status}; only a pending case can be resumed")
                case.status = "open"
                case.pauses = self._close_pause(case, moment)
                self._schedule(case)
            elif event == "resolved":
                if status not in ("open", "pending"):
                    raise Conflict(f"case {case_id} is {status}; only an open or pending case can be resolved")
                if status == "pending":
                    case.pauses = self._close_pause(case, moment)
                case.status = "resolved"
                case.resolved_at = moment
            elif event == "closed":
                if status == "pending":
                    case.pauses = self._close_pause(case, moment)
                case.status = "closed"
                case.closed_at = moment
                if case.resolved_at is None:
                    case.resolved_at = moment
            case.updated_at = now
            refresh_next_check(case)
            old, new = diff(before, case_snapshot(case))
            self._audit(session, actor, f"case.{event}", "case", case.id, old, new, note)
            session.flush()
            return case_view(case)

    @staticmethod
    def _close_pause(case: Case, moment: datetime) -> list:
        pauses = [list(p) for p in case.pauses or []]
        if pauses and pauses[-1][1] is None:
            start = datetime.fromisoformat(pauses[-1][0])
            pauses[-1][1] = _iso(max(moment, start))
        return pauses

    # ------------------------------------------------------------------ labels

    def apply_labels(self, case_id: int, labels: dict[str, Any], actor: str, reason: str | None = None,
                     *, review: bool = True, expected_version: int | None = None) -> CaseView:
        """Set a case's labels (a reviewer's decision, or a retrained model's with review=False).

        Deadlines are recomputed from the original receipt time and routing is re-run; the
        audit log gets the before/after of every field that changed. With ``review`` a
        ReviewDecision is stored (also for a confirmation that changes nothing) and a
        ``reviewed`` webhook event is queued. ``expected_version`` (the case version the
        reviewer looked at) turns a concurrent change into Conflict instead of an overwrite.
        """
        clean: dict[str, Any] = {}
        for head, value in labels.items():
            if head == "vulnerable":
                if not isinstance(value, bool):
                    raise InvalidInput(f"vulnerable must be true or false, got {value!r}", field="vulnerable")
                clean[head] = value
                continue
            if head not in HEADS:
                raise InvalidInput(f"unknown label {head!r}; expected {list(HEADS)} or vulnerable", field=head)
            try:
                clean[head] = validate_label(head, value)
            except ValueError as exc:
                raise InvalidInput(str(exc), field=head) from None
        if not actor or not str(actor).strip():
            raise InvalidInput("actor is required", field="actor")
        with self.db.session(write=True) as session:
            case = self._case(session, case_id, lock=True)
            if expected_version is not None and case.version != expected_version:
                raise Conflict(f"case {case_id} changed since version {expected_version} (now {case.version}); "
                               "reload it and decide again")
            current = self._labels_of(case)
            merged = {**current.as_dict(), **clean}
            new_labels = Labels(**merged)
            before = case_snapshot(case)
            previous_labels = {**current.as_dict()}
            rule_hits = {hit.get("rule") for hit in (case.prediction.rules if case.prediction else []) or []}
            decision = self.policy.decide(new_labels, case.message.text_masked, rule_hits)
            self._apply_decision(case, new_labels, decision)
            if review:
                case.labels_source = "review"
            after = case_snapshot(case)
            old, new = diff(before, after)
            changed = new_labels.as_dict() != previous_labels
            if old or new:
                case.updated_at = self.now()
                self._audit(session, actor, "case.labels_changed" if review else "case.regraded", "case",
                            case.id, old, new, reason)
            if review:
                session.add(ReviewDecision(
                    case_id=case.id, message_id=case.message_id, reviewer=actor,
                    labels={k: new_labels.as_dict()[k] for k in (*HEADS, "vulnerable")},
                    previous=previous_labels, changed=changed, reason=reason,
                    model_version=case.prediction.model_version if case.prediction else None,
                    created_at=self.now(),
                ))
                self._audit(session, actor, "review.confirmed" if not changed else "review.corrected", "case",
                            case.id, previous_labels, new_labels.as_dict(), reason)
            session.flush()
            if review:
                self._emit(session, "reviewed", case, {"changed": changed, "reviewer": actor})
            if changed:
                self._write_back(session, [case], before={case.id: before})
            if before["tier"] != after["tier"] and self.policy.tiers.index(after["tier"]) > self.policy.tiers.index(before["tier"]):
                self._emit(session, "escalated", case, {"reason": "labels changed", "tier_before": before["tier"]})
            return case_view(case)

    def regrade_open_cases(self, triager, actor: str, batch: int = 200) -> int:
        """Re-predict open/pending cases no reviewer has confirmed (after a new model is promoted).

        Every re-scored case gets the new model's prediction (probabilities, confidence,
        version), so the uncertainty-ordered review queue ranks by the serving model; only
        cases whose labels change are re-graded (deadlines, routing, audit). Returns how many
        cases changed labels.
        """
        changed = 0
        last_id = 0
        while True:
            with self.db.session() as session:
                rows = session.execute(
                    select(Case.id, Message.text_masked, Case.dispute_type, Case.grade, Case.emotion, Case.escalation,
                           Case.vulnerable)
                    .join(Case.message)
                    .where(Case.id > last_id, Case.status.in_(("open", "pending")), Case.labels_source == "model")
                    .order_by(Case.id).limit(batch)
                ).all()
            if not rows:
                return changed
            last_id = rows[-1][0]
            predictions = triager.predict_many([r[1] for r in rows])
            versions = self._store_predictions([(row[0], p) for row, p in zip(rows, predictions, strict=True)])
            for row, p in zip(rows, predictions, strict=True):
                if row[0] not in versions:
                    continue  # reviewed or closed meanwhile: the reviewer's labels stand
                new = {"dispute_type": p.dispute_type, "urgency": int(p.urgency), "emotion": p.emotion,
                       "escalation": bool(p.escalation), "vulnerable": bool(getattr(p, "vulnerable", False))}
                old = {"dispute_type": row[2], "urgency": row[3], "emotion": row[4], "escalation": row[5],
                       "vulnerable": row[6]}
                if new == old:
                    continue
                try:
                    self.apply_labels(row[0], new, actor, reason=f"re-triaged by model {p.model_version}",
                                      review=False, expected_version=versions[row[0]])
                except Conflict:
                    continue  # a reviewer decided it since; never overwrite a decision
                changed += 1

    def _store_predictions(self, scored: Sequence[tuple[int, Any]]) -> dict[int, int]:
        """Attach new predictions to the cases that are still open and unconfirmed, in one
        transaction; returns case id -> case version for those.

        The case's ``version`` is left alone on purpose (a Core UPDATE, not the ORM): a new
        score does not change the labels a reviewer is looking at, so it must not turn their
        pending decision into a Conflict.
        """
        if not scored:
            return {}
        by_case = dict(scored)
        now = self.now()
        with self.db.session(write=True) as session:
            query = select(Case.id, Case.message_id, Case.version).where(
                Case.id.in_(list(by_case)), Case.labels_source == "model", Case.status.in_(("open", "pending")))
            if self.db.is_postgres:
                query = query.with_for_update(of=Case)
            live = session.execute(query).all()
            if not live:
                return {}
            rows = []
            for case_id, message_id, _version in live:
                row = _prediction_row(by_case[case_id], now)
                row.message_id = message_id
                rows.append(row)
            ids = _insert_returning_ids(session, PredictionRow, rows)
            table = Case.__table__
            for (case_id, _message_id, _version), prediction_id in zip(live, ids, strict=True):
                session.execute(table.update().where(table.c.id == case_id).values(prediction_id=prediction_id))
            return {case_id: version for case_id, _message_id, version in live}

    def confirmed_examples(self) -> list[dict[str, Any]]:
        """The latest review decision per case with its masked text (for retraining)."""
        with self.db.session() as session:
            latest = (select(func.max(ReviewDecision.id)).group_by(ReviewDecision.case_id)).scalar_subquery()
            rows = session.execute(
                select(ReviewDecision, Message.text_masked).join(Message, Message.id == ReviewDecision.message_id)
                .where(ReviewDecision.id.in_(latest)).order_by(ReviewDecision.id)
            ).all()
            return [{"case_id": d.case_id, "text": text, "labels": d.labels, "reviewer": d.reviewer,
                     "decided_at": d.created_at} for d, text in rows]

    # ------------------------------------------------------------------ retrain ledger

    def _retrain_cutoff(self, session: Session) -> tuple[int, dict[str, Any] | None]:
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
        fresh_after = self.now() - RETRAIN_LEASE
        for at, action, after in entries:
            if action != "model.retrain_started":
                continue
            finished = after.get("job") in ended
            if finished or as_utc(at) > as_utc(fresh_after):
                return int(after.get("confirmed_up_to") or 0), (None if finished else after)
        return 0, None

    def confirmations_since_retrain(self) -> int:
        """Review decisions recorded after the data cut-off of the latest retrain."""
        with self.db.session() as session:
            cutoff, _ = self._retrain_cutoff(session)
            return session.scalar(select(func.count(ReviewDecision.id)).where(ReviewDecision.id > cutoff)) or 0

    def claim_retrain(self, job: str, actor: str, trigger: str, min_new: int = 0) -> int | None:
        """Record that retrain ``job`` starts on the decisions recorded so far; returns the id of
        the newest one (the data cut-off), or None when fewer than ``min_new`` are new.

        One claim at a time across processes (SQLite's write lock, a PostgreSQL advisory
        lock); Conflict while another retrain's claim is open, so several servers never each
        start one.
        """
        with self.db.session(write=True) as session:
            if self.db.is_postgres:
                session.execute(sql_text(f"SELECT pg_advisory_xact_lock({_RETRAIN_LOCK_KEY})"))
            cutoff, running = self._retrain_cutoff(session)
            if running is not None:
                raise Conflict(f"a retrain is already running (job {running.get('job')}, "
                               f"{running.get('trigger')}, started by {running.get('actor')})")
            newest = session.scalar(select(func.max(ReviewDecision.id))) or 0
            pending = session.scalar(select(func.count(ReviewDecision.id)).where(ReviewDecision.id > cutoff)) or 0
            if pending < min_new:
                return None
            self._audit(session, actor, "model.retrain_started", "model", "retrain", None,
                        {"job": job, "trigger": trigger, "actor": actor, "confirmed_up_to": newest,
                         "new_confirmations": pending})
            return newest

    def end_retrain(self, job: str, actor: str, outcome: dict[str, Any]) -> None:
        """Close the claim of ``job`` (done or failed), so the next retrain may start."""
        self.audit("model.retrain_ended", actor, {"job": job, **outcome}, entity="model", entity_id="retrain")

    # ------------------------------------------------------------------ users & API keys

    def create_user(self, name: str, role: str = "agent", actor: str = "cli") -> UserView:
        name = (name or "").strip()
        if not name:
            raise InvalidInput("user name is empty", field="name")
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {list(ROLES)}, got {role!r}", field="role")
        try:
            with self.db.session(write=True) as session:
                user = User(name=name, role=role, active=True, created_at=self.now())
                session.add(user)
                session.flush()
                self._audit(session, actor, "user.created", "user", user.id, None, {"name": name, "role": role})
                return UserView.model_validate(user, from_attributes=True)
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists") from None

    def list_users(self) -> list[UserView]:
        with self.db.session() as session:
            return [UserView.model_validate(u, from_attributes=True) for u in session.scalars(select(User).order_by(User.id))]

    def active_user_role(self, name: str) -> str | None:
        """The role of an active user; None for unknown or deactivated users."""
        with self.db.session() as session:
            return session.scalars(select(User.role).where(User.name == name, User.active)).first()

    def user_holds_scope(self, name: str, scope: str) -> bool:
        """Whether an active user holds an unrevoked key with ``scope`` (``admin`` implies all)."""
        with self.db.session() as session:
            held = session.scalars(
                select(ApiKey.scopes).join(User, ApiKey.user_id == User.id)
                .where(User.name == name, User.active, ApiKey.revoked_at.is_(None))
            ).all()
        return any(scope in scopes or "admin" in scopes for scopes in held)

    def set_user_active(self, name: str, active: bool, actor: str = "cli") -> UserView:
        with self.db.session(write=True) as session:
            user = session.scalars(select(User).where(User.name == name)).first()
            if user is None:
                raise NotFound(f"user {name!r} does not exist")
            if user.active != active:
                self._audit(session, actor, "user.activated" if active else "user.deactivated", "user", user.id,
                            {"active": user.active}, {"active": active})
                user.active = active
            view = UserView.model_validate(user, from_attributes=True)
        self._auth_cache.clear()  # after the commit, so no request re-caches the old row
        return view

    def create_api_key(self, user_name: str, scopes: Sequence[str], label: str | None = None,
                       actor: str = "cli") -> tuple[ApiKeyView, str]:
        """A new key for ``user_name``; the secret is returned once and only its hash is kept."""
        scopes = sorted(set(scopes))
        if not scopes:
            raise InvalidInput(f"give at least one scope of {list(SCOPES)}", field="scopes")
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise InvalidInput(f"unknown scopes {unknown}; expected {list(SCOPES)}", field="scopes")
        prefix = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        with self.db.session(write=True) as session:
            user = session.scalars(select(User).where(User.name == user_name)).first()
            if user is None:
                raise NotFound(f"user {user_name!r} does not exist; create it with `triage users add`")
            key = ApiKey(user=user, prefix=prefix, key_hash=hash_key(secret), scopes=scopes, label=label,
                         created_at=self.now())
            session.add(key)
            session.flush()
            self._audit(session, actor, "api_key.created", "api_key", key.id, None,
                        {"user": user.name, "prefix": prefix, "scopes": scopes, "label": label})
            return self._key_view(key), secret

    @staticmethod
    def _key_view(key: ApiKey) -> ApiKeyView:
        return ApiKeyView(id=key.id, user=key.user.name, prefix=key.prefix, scopes=list(key.scopes), label=key.label,
                          created_at=key.created_at, last_used_at=key.last_used_at, revoked_at=key.revoked_at)

    def list_api_keys(self, user_name: str | None = None) -> list[ApiKeyView]:
        query = select(ApiKey).join(ApiKey.user).options(joinedload(ApiKey.user)).order_by(ApiKey.id)
        if user_name:
            query = query.where(User.name == user_name)
        with self.db.session() as session:
            return [self._key_view(k) for k in session.scalars(query)]

    def revoke_api_key(self, key_id_or_prefix: str | int, actor: str = "cli") -> ApiKeyView:
        with self.db.session(write=True) as session:
            ref = str(key_id_or_prefix)
            query = select(ApiKey).options(joinedload(ApiKey.user))
            query = query.where(ApiKey.id == int(ref)) if ref.isdigit() else query.where(ApiKey.prefix == ref)
            key = session.scalars(query).first()
            if key is None:
                raise NotFound(f"API key {ref!r} does not exist")
            if key.revoked_at is None:
                key.revoked_at = self.now()
                self._audit(session, actor, "api_key.revoked", "api_key", key.id, {"revoked_at": None},
                            {"revoked_at": _iso(key.revoked_at)})
            view = self._key_view(key)
        self._auth_cache.clear()  # after the commit, so no request re-caches the old row
        return view

    def authenticate(self, secret: str | None) -> Principal:
        """The principal behind an API key, or Unauthorized with a reason the caller can act on."""
        if not secret:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        digest = hash_key(secret)
        cached = self._auth_cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        parts = secret.split("_")
        if not secret.startswith(KEY_PREFIX) or len(parts) < 3:
            raise Unauthorized("malformed API key")
        prefix = parts[1]
        now = self.now()
        with self.db.session() as session:
            key = session.scalars(select(ApiKey).options(joinedload(ApiKey.user)).where(ApiKey.prefix == prefix)).first()
            if key is None or not hmac.compare_digest(key.key_hash, digest):
                raise Unauthorized("unknown API key")
            if key.revoked_at is not None:
                raise Unauthorized("API key was revoked")
            if not key.user.active:
                raise Unauthorized(f"user {key.user.name!r} is deactivated")
            principal = Principal(user=key.user.name, role=key.user.role, scopes=list(key.scopes), key_id=key.id)
            stale = key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1)
        if stale:  # at most one write a minute per key: reads stay cheap under load
            try:
                with self.db.session(write=True) as session:
                    session.execute(ApiKey.__table__.update().where(ApiKey.id == principal.key_id).values(last_used_at=now))
            except Exception:
                pass  # best effort; never fail a request over a usage timestamp
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[digest] = (time.monotonic() + AUTH_CACHE_S, principal)
        return principal


def _insert_returning_ids(session: Session, model, objects: Sequence[Any]) -> list[int]:
    """Bulk INSERT the column values of transient ``objects``; their new ids, in order."""
    table = model.__table__
    columns = [c.key for c in table.columns if c.key != "id"]
    rows = [{name: getattr(obj, name) for name in columns} for obj in objects]
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.connection().execute(statement, rows).scalars())


def _prediction_row(prediction, now: datetime) -> PredictionRow:
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


class IngestCoalescer:
    """One thread that ingests the single messages waiting at the same moment as one batch.

    Under load, requests queue while a batch is being triaged and stored; the next batch
    takes all of them (up to ``max_batch``): one model call, one existence query and one
    transaction instead of one each per message. Idle, a message is processed alone at
    once, so no latency is added. A batch that fails is retried item by item, so one bad
    message fails only its own request.
    """

    def __init__(self, service: TriageService, max_batch: int = 64, timeout_s: float = 60.0):
        self.service = service
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def submit(self, msg: MessageIn, actor: str) -> IngestResult:
        return self.submit_nowait(msg, actor).result(timeout=self.timeout_s)

    def submit_nowait(self, msg: MessageIn, actor: str) -> Future:
        future: Future = Future()
        self._queue.put((msg, actor, future))
        return future

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="ingest-coalescer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._process(batch)
                    return
                batch.append(more)
            self._process(batch)
        # drain what arrived before the stop: never leave a caller waiting
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._process([item])

    def _process(self, batch: list) -> None:
        try:
            results = self.service._ingest_valid([(i, msg) for i, (msg, _, _) in enumerate(batch)],
                                                 [actor for _, actor, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, (Unavailable, ModelError)):
                for _, _, future in batch:  # the database or the model is down: every message fails alike
                    future.set_exception(exc)
                return
            for entry in batch:  # isolate the failing message
                self._process([entry])
            return
        for (_, _, future), result in zip(batch, results):
            future.set_result(result.model_copy(update={"index": 0}))
