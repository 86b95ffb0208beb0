"""The :class:`Database` that owns engine and sessions, and runs the migrations.

SQLite (the default, under ``var/``) runs in WAL mode with foreign keys on and takes the
write lock at the start of write transactions, so concurrent writers wait instead of
failing; PostgreSQL is used through ``TRIAGE_DATABASE_URL``. The schema is created and
upgraded by the Alembic migrations in ``triage/store/migrations`` (never by ``create_all`` in
production), and :meth:`Database.upgrade` runs them on start.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, event, exc as sa_exc, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from triage.errors import Unavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


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
