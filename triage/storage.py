"""Persistence: the ORM tables and the :class:`Database` that owns engine and sessions.

SQLite (the default, under ``var/``) runs in WAL mode with foreign keys on and takes the
write lock at the start of write transactions, so concurrent writers wait instead of
failing; PostgreSQL is used through ``TRIAGE_DATABASE_URL``. The schema is created and
upgraded by the Alembic migrations in ``triage/migrations`` (never by ``create_all`` in
production), and :meth:`Database.upgrade` runs them on start.

Every datetime is stored as UTC and read back timezone-aware.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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
    create_engine,
    event,
    exc as sa_exc,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from triage.errors import Unavailable

UTC = timezone.utc
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"



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


class Case(Base):
    """The unit of work a helpdesk handles: current labels, owner tier, deadlines, status.

    ``version`` is an optimistic lock: an UPDATE that lost a race matches no row and fails
    (StaleDataError), so the SLA monitor in several processes escalates a case only once.
    """

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_status_respond_due", "status", "respond_due_at"),
        Index("ix_cases_status_resolve_due", "status", "resolve_due_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("predictions.id", ondelete="SET NULL"))
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

    __mapper_args__ = {"version_id_col": version}

    message: Mapped[Message] = relationship(back_populates="case")
    prediction: Mapped[Prediction | None] = relationship()

    @property
    def breached(self) -> bool:
        return self.respond_breached or self.resolve_breached


class SlaEvent(Base):
    """A warning or breach of one deadline of one case; unique, so it happens once."""

    __tablename__ = "sla_events"
    __table_args__ = (UniqueConstraint("case_id", "kind", "deadline", name="uq_sla_events_once"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # warning | breach
    deadline: Mapped[str] = mapped_column(String(16))  # respond | resolve
    due_at: Mapped[datetime]
    occurred_at: Mapped[datetime]  # when it happened on the clock (the deadline for a breach)
    detected_at: Mapped[datetime] = mapped_column(default=utcnow)
    tier_before: Mapped[str | None] = mapped_column(String(32))
    tier_after: Mapped[str | None] = mapped_column(String(32))


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
    # A helpdesk write-back call (triage.writeback) instead of a signed event: the connector
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


@event.listens_for(Session, "before_flush")
def _audit_is_append_only(session, flush_context, instances):
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEntry) and (obj in session.deleted or session.is_modified(obj)):
            raise RuntimeError("audit_log is append-only")


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(getattr(exc, "connection_invalidated", False))


class Database:
    """Engine + session factory for one database URL, with the dialect's settings applied."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10):
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                self.url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False},
                pool_size=pool_size, max_overflow=20,
            )
            memory = not self.url.database or self.url.database == ":memory:"
            _configure_sqlite(self.engine, None if memory else str(Path(self.url.database).resolve()))
        else:
            connect_args = {} if "connect_timeout" in self.url.query else {"connect_timeout": 10}
            self.engine = create_engine(
                self.url, echo=echo, pool_size=pool_size, max_overflow=20, pool_pre_ping=True,
                pool_timeout=10, connect_args=connect_args,
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._upgrade_lock = threading.Lock()
        self._sqlite_writer = threading.RLock()

    @classmethod
    def from_settings(cls, settings) -> "Database":
        return cls(settings.effective_database_url)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextlib.contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        ``write=True`` on SQLite takes the write lock up front (BEGIN IMMEDIATE) so two
        writers queue instead of one failing on a stale snapshot; threads of this process
        queue on a lock first (fair and without SQLite's busy-wait sleeps), other processes
        on the busy timeout.
        Lost connections surface as :class:`Unavailable` (HTTP 503, safe to retry).
        """
        serialise = write and self.dialect == "sqlite"
        if serialise:
            self._sqlite_writer.acquire()
        session = self._sessions()
        try:
            if serialise:
                session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            yield session
            session.commit()
        except Exception as exc:
            session.rollback()
            if _is_connection_error(exc):
                raise Unavailable(f"database unavailable: {exc.__class__.__name__}; retry later") from exc
            raise
        finally:
            session.close()
            if serialise:
                self._sqlite_writer.release()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent; one process at a time on PG)."""
        from alembic import command

        with self._upgrade_lock, self.engine.connect() as conn:
            if self.dialect == "sqlite":  # the write lock before alembic reads its version table
                conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if self.is_postgres:
                    conn.execute(text("SELECT pg_advisory_xact_lock(74657201)"))
                cfg = alembic_config(self.url.render_as_string(hide_password=False))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


SQLITE_OPEN_TIMEOUT_S = 30.0


def _configure_sqlite(engine: Engine, path: str | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_OPEN_TIMEOUT_S * 1000)}")
        _enable_wal(cur, path)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def _enable_wal(cur, path: str | None) -> None:
    """Switch a file database to WAL once, safely against other processes opening it too.

    WAL is a property of the file, so only the first opener of a new database switches it.
    The switch needs an exclusive lock, and SQLite answers SQLITE_BUSY at once (without the
    busy handler) when another connection holds the file, so processes starting together
    would crash one another: the switch happens under an advisory file lock beside the
    database and is retried for a bounded time; past it, :class:`Unavailable` says why.
    """
    if path is None:  # in-memory: nothing to share, WAL not applicable
        return
    if _journal_mode(cur) == "wal":
        return
    with _file_lock(f"{path}-open.lock"):
        deadline = time.monotonic() + SQLITE_OPEN_TIMEOUT_S
        delay = 0.01
        while True:
            try:
                if str(cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal":
                    return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"could not switch SQLite database {path} to WAL mode within "
                    f"{SQLITE_OPEN_TIMEOUT_S:.0f} s: another process keeps it locked; "
                    "stop it or retry later"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _journal_mode(cur) -> str:
    deadline = time.monotonic() + SQLITE_OPEN_TIMEOUT_S
    while True:
        try:
            return str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """An exclusive advisory lock between processes (a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
