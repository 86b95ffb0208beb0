"""The ORM tables: messages, predictions, cases, SLA events, review decisions, the webhook
outbox, users, API keys and the append-only audit log.

Every datetime is stored as UTC and read back timezone-aware. The schema itself is created
and upgraded by the Alembic migrations in ``triage/store/migrations``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    LargeBinary,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

UTC = timezone.utc



class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (naive storage) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


JsonDoc = JSON()  # plain dicts and lists; json on PostgreSQL, text on SQLite
Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER keys


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JsonDoc, list[Any]: JsonDoc}


class Message(Base):
    """One complaint as received from a source system; (source, external_id) is its identity."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("source", "external_id", name="uq_messages_source_external_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(64))
    customer_ref: Mapped[str | None] = mapped_column(String(200))
    text_masked: Mapped[str] = mapped_column(Text)
    raw_text: Mapped[str | None] = mapped_column(Text)  # only with TRIAGE_STORE_RAW_TEXT=true
    received_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    predictions: Mapped[list["Prediction"]] = relationship(back_populates="message", order_by="Prediction.id")
    case: Mapped["Case | None"] = relationship(back_populates="message", uselist=False)


class Prediction(Base):
    """A model's output for a message; a message gains a new one when a new model re-triages it."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(100))
    dispute_type: Mapped[str] = mapped_column(String(32))
    urgency: Mapped[int] = mapped_column(Integer)
    emotion: Mapped[str] = mapped_column(String(16))
    escalation: Mapped[bool] = mapped_column(Boolean)
    vulnerable: Mapped[bool] = mapped_column(Boolean, default=False)
    confidence: Mapped[float] = mapped_column(Float)
    scores: Mapped[dict[str, Any]]
    explanation: Mapped[dict[str, Any]]
    rules: Mapped[list[Any]] = mapped_column(JsonDoc, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship(back_populates="predictions")


# The review queue: unreviewed open cases. Written as literal SQL so that the queue's query
# (triage/contexts/review.py) and its partial indexes below carry the very same predicate:
# SQLite and PostgreSQL use a partial index only for a query whose WHERE implies its own.
QUEUE_STATUSES = ("open", "pending")
QUEUE_WHERE = "labels_source = 'model' AND status IN ('open', 'pending')"
# The queue's running deadline (respond until the first response, then resolve).
RUNNING_DEADLINE = "CASE WHEN first_response_at IS NULL THEN respond_due_at ELSE resolve_due_at END"


def _queue_index(name: str, *expressions: str) -> Index:
    """A partial index over the review queue only: its size follows the queue, not history."""
    where = text(QUEUE_WHERE)
    return Index(name, *(text(e) for e in expressions), sqlite_where=where, postgresql_where=where)


class Case(Base):
    """The unit of work a helpdesk handles: current labels, owner tier, deadlines, status.

    ``version`` is an optimistic lock: an UPDATE that lost a race matches no row and fails
    (StaleDataError), so the SLA monitor in several processes escalates a case only once.
    """

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_status_respond_due", "status", "respond_due_at"),
        Index("ix_cases_status_resolve_due", "status", "resolve_due_at"),
        Index("ix_cases_status_id", "status", "id"),
        # the queue's two orders, NULLs last on both databases: (x IS NULL), x
        _queue_index("ix_cases_queue_deadline", f"(({RUNNING_DEADLINE}) IS NULL)", f"({RUNNING_DEADLINE})",
                     "priority_grade", "(confidence IS NULL)", "confidence", "id"),
        _queue_index("ix_cases_queue_uncertainty", "(confidence IS NULL)", "confidence", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id", ondelete="SET NULL"))
    # The confidence of that prediction, copied so the queue's uncertainty order is an index.
    confidence: Mapped[float | None] = mapped_column(Float)
    dispute_type: Mapped[str] = mapped_column(String(32), index=True)
    grade: Mapped[int] = mapped_column(Integer, index=True)  # the label: 1 一级 .. 3 三级
    priority_grade: Mapped[int] = mapped_column(Integer)  # grade the clock runs on (vulnerable bump)
    emotion: Mapped[str] = mapped_column(String(16))
    angry: Mapped[bool] = mapped_column(Boolean, default=False)
    escalation: Mapped[bool] = mapped_column(Boolean, default=False)
    vulnerable: Mapped[bool] = mapped_column(Boolean, default=False)
    labels_source: Mapped[str] = mapped_column(String(16), default="model")  # model | review
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    tier: Mapped[str] = mapped_column(String(32), index=True)
    teams: Mapped[list[Any]] = mapped_column(JsonDoc, default=list)
    hints: Mapped[list[Any]] = mapped_column(JsonDoc, default=list)
    actions: Mapped[list[Any]] = mapped_column(JsonDoc, default=list)
    received_at: Mapped[datetime]
    respond_due_at: Mapped[datetime | None]
    resolve_due_at: Mapped[datetime | None]
    respond_warn_at: Mapped[datetime | None]  # when the warning share of the deadline has run
    resolve_warn_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime | None] = mapped_column(index=True)  # next SLA event; None: clock stopped
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    pauses: Mapped[list[Any]] = mapped_column(JsonDoc, default=list)  # [[start iso, end iso|null], ...]
    respond_warned: Mapped[bool] = mapped_column(Boolean, default=False)
    resolve_warned: Mapped[bool] = mapped_column(Boolean, default=False)
    respond_breached: Mapped[bool] = mapped_column(Boolean, default=False)
    resolve_breached: Mapped[bool] = mapped_column(Boolean, default=False)
    breach_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    # Early warning: the product and batch complained about (from the message's fields or its
    # text: product_source "field" | "text"), and when surge detection looked at the case.
    product: Mapped[str | None] = mapped_column(String(200), index=True)
    batch: Mapped[str | None] = mapped_column(String(100))
    order_id: Mapped[str | None] = mapped_column(String(200))
    product_source: Mapped[str | None] = mapped_column(String(8))
    surveyed_at: Mapped[datetime | None] = mapped_column(index=True)
    # First-contact ownership and the follow-up call (回访) after resolution.
    owner: Mapped[str | None] = mapped_column(String(200))
    followup_due_at: Mapped[datetime | None]
    followup_warn_at: Mapped[datetime | None]
    followup_warned: Mapped[bool] = mapped_column(Boolean, default=False)
    followed_up_at: Mapped[datetime | None]
    satisfaction: Mapped[int | None] = mapped_column(Integer)
    followup_breached: Mapped[bool] = mapped_column(Boolean, default=False)

    __mapper_args__ = {"version_id_col": version}

    message: Mapped[Message] = relationship(back_populates="case")
    prediction: Mapped[Prediction | None] = relationship()

    @property
    def breached(self) -> bool:
        return self.respond_breached or self.resolve_breached


class SlaEvent(Base):
    """A warning or breach of one deadline of one case; unique per due time, so it happens once
    (a follow-up round after a reopening has its own due time)."""

    __tablename__ = "sla_events"
    __table_args__ = (UniqueConstraint("case_id", "kind", "deadline", "due_at", name="uq_sla_events_once_per_due"),
                      Index("ix_sla_events_kind_id", "kind", "id"),  # breach lists, paged by id
                      Index("ix_sla_events_kind_occurred", "kind", "occurred_at"),  # breaches since
                      Index("ix_sla_events_detected_at", "detected_at"))  # the dashboard's window

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # warning | breach
    deadline: Mapped[str] = mapped_column(String(16))  # respond | resolve | followup
    due_at: Mapped[datetime]
    occurred_at: Mapped[datetime]  # when it happened on the clock (the deadline for a breach)
    detected_at: Mapped[datetime] = mapped_column(default=utcnow)
    tier_before: Mapped[str | None] = mapped_column(String(32))
    tier_after: Mapped[str | None] = mapped_column(String(32))


class SurgeAlert(Base):
    """One surge of complaints about one product: the tests that fired (``scopes``), the
    window, count, baseline expectation and p-value at detection, and its handling status
    (open | acknowledged | dismissed | recall)."""

    __tablename__ = "surge_alerts"
    __table_args__ = (Index("ix_surge_alerts_product_status", "product", "status"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    product: Mapped[str] = mapped_column(String(200))
    dispute_type: Mapped[str | None] = mapped_column(String(32))  # set when only a type-level test fired
    scopes: Mapped[list[Any]] = mapped_column(JsonDoc)
    batch: Mapped[str | None] = mapped_column(String(100))  # when the cases share one
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer)
    expected: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float] = mapped_column(Float)
    alpha: Mapped[float] = mapped_column(Float)
    safety_count: Mapped[int] = mapped_column(Integer, default=0)
    first_case_at: Mapped[datetime]
    last_case_at: Mapped[datetime]  # received_at of the latest case that joined
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    detected_at: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SurgeAlertCase(Base):
    """A case in a surge; a case belongs to one alert at most (so a surge is raised once)."""

    __tablename__ = "surge_alert_cases"

    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("surge_alerts.id", ondelete="CASCADE"), index=True)
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecallIncident(Base):
    """A recall incident opened from one surge alert: its cases are the alert's (new cases
    joining the alert join it), an owner, a decision deadline, a status."""

    __tablename__ = "recall_incidents"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("surge_alerts.id", ondelete="CASCADE"), unique=True)
    product: Mapped[str] = mapped_column(String(200))
    batch: Mapped[str | None] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open | recalling | closed
    due_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewDecision(Base):
    """A reviewer's confirmation or correction of a case's labels (the learning loop's input)."""

    __tablename__ = "review_decisions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    labels: Mapped[dict[str, Any]]  # the confirmed labels
    previous: Mapped[dict[str, Any]]  # the labels before the decision
    changed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(100))  # model whose labels were reviewed
    trained_in_version: Mapped[str | None] = mapped_column(String(100))  # set by the learning loop
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # single (the only review), first / second (double review), adjudication (a supervisor's).
    stage: Mapped[str] = mapped_column(String(16), default="single")
    # Whether these labels are the case's final ones: only final decisions retrain the model.
    final: Mapped[bool] = mapped_column(Boolean, default=True)
    claimed_at: Mapped[datetime | None]  # when the reviewer claimed the case (throughput)


class ReviewClaim(Base):
    """A reviewer holds a case for a few minutes; other reviewers' queues skip it. One row per
    case (the primary key makes two claims of one case impossible); an expired row is free."""

    __tablename__ = "review_claims"

    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(16))  # first | second | adjudication
    claimed_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class DoubleReview(Base):
    """A case picked for a second, blind review: ``stage`` second (waiting for another
    reviewer), adjudication (the two disagreed; a supervisor decides) or final. ``reason``
    sample | low_confidence."""

    __tablename__ = "double_reviews"

    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(String(16))
    first_reviewer: Mapped[str] = mapped_column(String(200))
    second_reviewer: Mapped[str | None] = mapped_column(String(200))
    adjudicator: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    finalised_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """The outbox: one event for one receiver, written in the same transaction as the change."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    event: Mapped[str] = mapped_column(String(32))  # triaged | escalated | warning | breached | reviewed
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    # A helpdesk write-back call (triage.contexts.writeback) instead of a signed event: the connector
    # whose API token authorises it at delivery time, and the HTTP method; None for webhooks.
    connector: Mapped[str | None] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(8))

    attempts_log: Mapped[list["WebhookAttempt"]] = relationship(order_by="WebhookAttempt.id")


class ConnectorRef(Base):
    """Where a message came from in a connected helpdesk (account, conversation or ticket,
    contact), kept for write-back. ``thread`` is the conversation or ticket the helpdesk
    labels; (source, external_id) is the message's identity, as in ``messages``."""

    __tablename__ = "connector_refs"
    __table_args__ = (UniqueConstraint("source", "external_id", name="uq_connector_refs_source_external_id"),
                      Index("ix_connector_refs_thread", "source", "thread"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(200))
    thread: Mapped[str | None] = mapped_column(String(200))
    refs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookAttempt(Base):
    """Every delivery attempt, successful or not."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(32), default="agent")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Review desk log-in (argon2 hash; None: the user cannot log in to the review UI) and
    # the language the user chose there ("zh", "en"; None: the browser's Accept-Language).
    password_hash: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(8))

    api_keys: Mapped[list["ApiKey"]] = relationship(back_populates="user")


class ApiKey(Base):
    """An API key, stored as its SHA-256; ``prefix`` finds the row without the secret."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]] = mapped_column(JsonDoc)
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="api_keys")


class UiSession(Base):
    """A review desk log-in: the cookie holds the token, the table only its SHA-256."""

    __tablename__ = "ui_sessions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class LoginAttempt(Base):
    """Every review desk log-in attempt (for the per-user and per-address backoff)."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_user_at", "user_name", "at"), Index("ix_login_attempts_ip_at", "ip", "at"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    user_name: Mapped[str] = mapped_column(String(200))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)


class AuditEntry(Base):
    """Append-only: who changed what, when, from what to what (a DB trigger forbids edits)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity", "entity_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    after: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    reason: Mapped[str | None] = mapped_column(Text)


class ModelFile(Base):
    """One file of a model version in the database model store (``TRIAGE_MODEL_STORE=db``):
    the manifest, its signature and the backend's files, read by every host (models/db_store.py)."""

    __tablename__ = "model_files"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(String(500), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelPointer(Base):
    """The database model store's current version: one row (id 1); every server process
    reads it at most every TRIAGE_MODEL_CHECK_INTERVAL_S to follow promotions and rollbacks."""

    __tablename__ = "model_pointer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


@event.listens_for(Session, "before_flush")
def _audit_is_append_only(session, flush_context, instances):
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEntry) and (obj in session.deleted or session.is_modified(obj)):
            raise RuntimeError("audit_log is append-only")


class BackfillJob(Base):
    """One archive triaged by ``triage backfill``: loaded as chunks, each chunk a task.

    ``fingerprint`` (the archive's SHA-256 and chunk size) finds the job again when the same
    command runs after a crash, so it resumes instead of starting over."""

    __tablename__ = "backfill_jobs"
    __table_args__ = (UniqueConstraint("fingerprint", name="uq_backfill_jobs_fingerprint"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(500))  # the archive's file name, for people
    fingerprint: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="loading")  # loading | running | done
    chunk_size: Mapped[int] = mapped_column(Integer)
    total_chunks: Mapped[int] = mapped_column(Integer, default=0)
    total_messages: Mapped[int] = mapped_column(Integer, default=0)
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class BackfillChunk(Base):
    """Up to ``chunk_size`` messages of a backfill and their progress: the database, not the
    broker, says what is left, so a task lost with a worker or with Redis is queued again."""

    __tablename__ = "backfill_chunks"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_backfill_chunks_job_seq"),
                      Index("ix_backfill_chunks_todo", "job_id", "done_at"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("backfill_jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    messages: Mapped[list[Any]]
    queued_until: Mapped[datetime | None]  # a task for it is in the queue until then (a lease)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)  # new cases
    existing: Mapped[int] = mapped_column(Integer, default=0)  # source + external id already stored
    failed: Mapped[int] = mapped_column(Integer, default=0)  # refused messages (errors kept below)
    errors: Mapped[list[Any] | None]
    done_at: Mapped[datetime | None]
