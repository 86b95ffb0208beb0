"""Database fixtures for the service tests, parametrized over SQLite and PostgreSQL.

Import the fixtures into a test module (``from fixtures_db import database, ...``).

* SQLite: every test gets a fresh file copied from a template migrated once per run.
* PostgreSQL (``TRIAGE_TEST_POSTGRES_URL``, default the machine's ``test`` database): one
  fresh schema per test run, migrated once, emptied (TRUNCATE) before every test, dropped
  at the end; several test runs at once do not see each other. Skipped only when the
  server is unreachable.

``tiny_triager`` is the real pipeline (text, sklearn backend, rules) trained in seconds
on a balanced slice of the project's seed data.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from triage.policy import Policy
from triage.service import TriageService
from triage.settings import PROJECT_ROOT, Settings
from triage.store import Base, Database

from conftest import skip_unless_ci

PG_URL = os.environ.get("TRIAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 5, 6, 1, 0, tzinfo=timezone.utc)  # Wednesday 09:00 in Asia/Shanghai


def postgres_reachable(url: str = PG_URL) -> bool:
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def with_search_path(url: str, schema: str) -> str:
    """The URL whose connections use ``schema`` (libpq ``options=-csearch_path=...``)."""
    parsed = make_url(url)
    return parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_url():
    """A migrated schema of its own for this test run; None when PostgreSQL is unreachable."""
    if not postgres_reachable():
        yield None
        return
    schema = f"triage_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = with_search_path(PG_URL, schema)
    db = Database(url)
    db.upgrade()
    db.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _database(kind: str, tmp_path: Path, sqlite_template: Path, postgres_url: str | None) -> Database:
    if kind == "sqlite":
        path = tmp_path / "triage.db"
        shutil.copyfile(sqlite_template, path)
        return Database(f"sqlite:///{path}")
    if postgres_url is None:
        skip_unless_ci(f"PostgreSQL not reachable at {PG_URL}")
    db = Database(postgres_url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return db


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request, tmp_path, sqlite_template, postgres_url):
    """An empty, migrated database: SQLite file, then PostgreSQL schema."""
    db = _database(request.param, tmp_path, sqlite_template, postgres_url)
    yield db
    db.dispose()


@pytest.fixture
def database_url(database) -> str:
    return database.url.render_as_string(hide_password=False)


def seed_slice(per_type: int = 30) -> list[dict]:
    from models.training import load_labeled

    records, _ = load_labeled([PROJECT_ROOT / "datasets" / "seed"])
    by_type: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if len(by_type[record["dispute_type"]]) < per_type:
            by_type[record["dispute_type"]].append(record)
    return [r for rows in by_type.values() for r in rows]


@pytest.fixture(scope="session")
def tiny_triager(tmp_path_factory):
    """The real triage pipeline with a small sklearn model (no calibration: trains in seconds)."""
    from models.sklearn_backend import SklearnBackend
    from models.store import ModelStore
    from triage.taxonomy import HEADS
    from triage.triager import Triager

    records = seed_slice()
    backend = SklearnBackend(calibration_folds=0).fit(
        [r["text"] for r in records], {h: [r[h] for r in records] for h in HEADS}
    )
    store = ModelStore(tmp_path_factory.mktemp("models"))
    store.set_current(store.save(backend, {"metrics": {}}))
    return Triager.from_store(store)


class Clock:
    """A settable clock for the service (``service.now``)."""

    def __init__(self, start: datetime = T0):
        self.moment = start

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta) -> datetime:
        from datetime import timedelta

        self.moment += timedelta(**delta)
        return self.moment


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_service(database, tiny_triager, clock, tmp_path):
    """Factory: a TriageService on the test database, the tiny model and the test clock."""

    def build(policy: Policy | None = None, webhook_urls=(), triager=None, **settings) -> TriageService:
        settings.setdefault("var_dir", tmp_path / "var")
        settings.setdefault("sla_monitor_interval_s", 0)
        return TriageService(database, policy or Policy.load(), triager or tiny_triager, Settings(**settings),
                             now=clock, webhook_urls=list(webhook_urls))

    return build
