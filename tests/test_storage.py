"""Persistence and the service layer, against SQLite and PostgreSQL: migrations, idempotent
and concurrent ingestion, masking, case events, label changes, audit log, users and keys."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, func, select, text

from fixtures_db import T0

pytest_plugins = ["fixtures_db"]  # database fixtures over SQLite and PostgreSQL
from triage.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized, Unavailable
from triage.policy import Policy
from triage.service import TriageService
from triage.settings import Settings
from triage.store import ApiKey, AuditEntry, Base, Case, Database, Message, ReviewDecision, WebhookDelivery

H = timedelta(hours=1)


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    from triage.store.database import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


HEAD = _head_revision()  # the newest migration: every upgrade must end there


def msg(external_id="m1", text="摄像头用了两天就黑屏，开不了机", source="shop", **extra):
    return {"source": source, "external_id": external_id, "text": text, **extra}


def test_migrations_match_the_models(database):
    database.upgrade()  # a second upgrade is a no-op
    expression_indexes = {i.name for t in Base.metadata.tables.values() for i in t.indexes
                          if any(not isinstance(e, Column) for e in i.expressions)}
    with database.engine.connect() as conn:
        # autogenerate cannot compare expression indexes (SQLite does not reflect them,
        # PostgreSQL reflects its own normal form): they are checked by name instead
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if not (d[0] in ("add_index", "remove_index") and d[1].name in expression_indexes)] == []
        names = {name for (name,) in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'index'" if database.dialect == "sqlite"
            else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"))}
        assert expression_indexes and expression_indexes <= names
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == HEAD


def test_sqlite_pragmas(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


def test_ingest_masks_personal_data_and_keeps_no_raw_text(make_service, database):
    service = make_service()
    result = service.ingest(msg(text="麦克风坏了，请打我电话13812345678，急"))
    assert result.created and result.case.status == "open"
    message = service.get_message(result.case.message_id)
    assert "13812345678" not in message.text and "麦克风坏了" in message.text
    assert message.prediction.model_version == service.triager.version
    with database.session() as s:
        row = s.scalars(select(Message)).one()
        assert row.raw_text is None


def test_raw_text_stored_only_when_configured(make_service, database):
    service = make_service(store_raw_text=True)
    service.ingest(msg(text="电话13812345678"))
    with database.session() as s:
        assert s.scalars(select(Message.raw_text)).one() == "电话13812345678"


def test_retry_returns_the_same_case(make_service, database):
    service = make_service()
    first = service.ingest(msg())
    again = service.ingest(msg(text="a different text does not make a second case"))
    assert first.created and not again.created
    assert again.case.id == first.case.id
    other_source = service.ingest(msg(source="hotline"))
    assert other_source.created and other_source.case.id != first.case.id
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 2


def test_twenty_parallel_posts_of_one_external_id_make_one_case(database_url, tiny_triager, clock):
    """Each thread has its own engine (like separate server processes)."""
    barrier = threading.Barrier(20)
    databases = [Database(database_url) for _ in range(20)]
    services = [TriageService(db, Policy.load(), tiny_triager, Settings(), now=clock, webhook_urls=[]) for db in databases]

    def post(i):
        barrier.wait()
        return services[i].ingest(msg(external_id="same", text=f"声卡没有声音 {i}"))

    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(post, range(20)))
    finally:
        for db in databases:
            db.dispose()
    assert sum(r.created for r in results) == 1
    assert len({r.case.id for r in results}) == 1
    check = Database(database_url)
    with check.session() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 1
        assert s.scalar(select(func.count()).select_from(Case)) == 1
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "case.created")) == 1
    check.dispose()


def test_batch_with_per_item_errors_and_duplicates(make_service, database):
    service = make_service(max_text_chars=50)
    service.ingest(msg(external_id="old"))
    results = service.ingest_many([
        msg(external_id="a"),
        msg(external_id="b", text="   "),
        msg(external_id="old"),
        msg(external_id="a", text="same key twice in one batch"),
        msg(external_id="c", text="长" * 51),
        {"source": "shop", "external_id": 7, "text": "wrong type"},
        msg(external_id="d", colour="red"),
        "not an object",
        msg(external_id="e", received_at="2026-05-06T08:00:00"),
    ])
    assert [r.index for r in results] == list(range(9))
    assert results[0].created
    assert results[1].error["field"] == "text"
    assert not results[2].created and results[2].case.external_id == "old"
    assert not results[3].created and results[3].case.id == results[0].case.id
    assert results[4].error["field"] == "text" and "limit is 50" in results[4].error["message"]
    assert results[5].error["field"] == "external_id"
    assert results[6].error["field"] == "colour"
    assert results[7].error["field"] == "body"
    assert results[8].error["field"] == "received_at"
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 2  # old + a


def test_batch_limits(make_service):
    service = make_service()
    with pytest.raises(InvalidInput, match="at most 1000"):
        service.ingest_many([msg(external_id=str(i)) for i in range(1001)])
    with pytest.raises(InvalidInput, match="empty"):
        service.ingest_many([])


def test_received_at_sets_the_clock(make_service, clock):
    service = make_service()
    case = service.ingest(msg(received_at=(T0 - 2 * H).isoformat())).case
    assert case.received_at == T0 - 2 * H
    assert case.respond_due_at - case.received_at in {2 * H, 4 * H, 6 * H, 8 * H, 24 * H}
    with pytest.raises(InvalidInput, match="future"):
        service.ingest(msg(external_id="future", received_at=(T0 + 2 * H).isoformat()))


def _audit_fields(service, case_id):
    return [(a.action, set((a.after or {}).keys())) for a in service.list_audit("case", case_id)]


def test_events_pause_the_clock_and_are_audited(make_service, clock):
    service = make_service()
    case = service.ingest(msg()).case
    service.apply_labels(case.id, {"dispute_type": "quality", "urgency": 2}, "lead", review=False)
    due = service.get_case(case.id).respond_due_at
    assert due == T0 + 8 * H
    clock.advance(hours=1)
    assert service.record_case_event(case.id, "pending", "agent").status == "pending"
    clock.advance(hours=3)
    resumed = service.record_case_event(case.id, "resumed", "agent")
    assert resumed.status == "open"
    assert resumed.respond_due_at == due + 3 * H
    assert resumed.resolve_due_at == T0 + 48 * H + 3 * H
    clock.advance(hours=1)
    responded = service.record_case_event(case.id, "first_response", "agent")
    assert responded.first_response_at == clock()
    resolved = service.record_case_event(case.id, "resolved", "agent", note="sent a new fill light")
    assert resolved.status == "resolved" and resolved.resolved_at == clock()
    closed = service.record_case_event(case.id, "closed", "agent")
    assert closed.status == "closed"
    actions = [a.action for a in service.list_audit("case", case.id)]
    assert actions[0] == "case.created"
    assert [a for a in actions if a != "case.regraded"][1:] == [
        "case.pending", "case.resumed", "case.first_response", "case.resolved", "case.closed"]
    entries = {a.action: a for a in service.list_audit("case", case.id)}
    assert entries["case.pending"].before == {"status": "open"} and entries["case.pending"].after == {"status": "pending"}
    assert entries["case.resumed"].after["respond_due_at"] == (due + 3 * H).isoformat()
    assert entries["case.resolved"].reason == "sent a new fill light"
    assert entries["case.resolved"].actor == "agent"


def test_illegal_events(make_service, clock):
    service = make_service()
    case = service.ingest(msg()).case
    with pytest.raises(Conflict, match="only a pending case"):
        service.record_case_event(case.id, "resumed", "agent")
    with pytest.raises(InvalidInput, match="event must be one of"):
        service.record_case_event(case.id, "exploded", "agent")
    with pytest.raises(InvalidInput, match="before the message was received"):
        service.record_case_event(case.id, "first_response", "agent", at=T0 - H)
    with pytest.raises(NotFound):
        service.record_case_event(999, "pending", "agent")
    service.record_case_event(case.id, "first_response", "agent")
    with pytest.raises(Conflict, match="already has a first response"):
        service.record_case_event(case.id, "first_response", "agent")
    service.record_case_event(case.id, "closed", "agent")
    with pytest.raises(Conflict, match="closed"):
        service.record_case_event(case.id, "pending", "agent")


def test_label_change_recomputes_from_original_receipt_and_reroutes(make_service, clock, database):
    service = make_service(webhook_urls=["http://127.0.0.1:9/hook"])
    case = service.ingest(msg(text="补光灯有一点划痕")).case
    service.apply_labels(case.id, {"dispute_type": "quality", "urgency": 3, "emotion": "calm",
                                   "escalation": False}, "lead", review=False)
    clock.advance(hours=5)
    changed = service.apply_labels(case.id, {"dispute_type": "advertising", "urgency": 1}, "reviewer-li",
                                   reason="core parameter wrong")
    assert changed.respond_due_at == T0 + 2 * H  # from receipt, not from now
    assert changed.resolve_due_at == T0 + 24 * H
    assert changed.tier == "team_leader" and changed.teams == ["legal"]
    assert changed.labels_source == "review"
    audit = [a for a in service.list_audit("case", case.id) if a.action == "case.labels_changed"]
    assert len(audit) == 1
    assert audit[0].before["grade"] == 3 and audit[0].after["grade"] == 1
    assert audit[0].before["dispute_type"] == "quality" and audit[0].after["dispute_type"] == "advertising"
    assert audit[0].after["tier"] == "team_leader" and "respond_due_at" in audit[0].after
    assert audit[0].actor == "reviewer-li" and audit[0].reason == "core parameter wrong"
    with database.session() as s:
        decision = s.scalars(select(ReviewDecision)).one()
        assert decision.changed and decision.labels["dispute_type"] == "advertising"
        assert decision.previous["urgency"] == 3
    with database.session() as s:
        events = [(d.event, d.payload.get("changed")) for d in s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))]
    assert events[0] == ("triaged", None) and ("reviewed", True) in events and ("escalated", None) in events
    # a confirmation changes nothing but is still a review decision
    service.apply_labels(case.id, {}, "reviewer-wang")
    with database.session() as s:
        assert [d.changed for d in s.scalars(select(ReviewDecision).order_by(ReviewDecision.id))] == [True, False]


def test_label_validation_and_stale_version(make_service):
    service = make_service()
    case = service.ingest(msg()).case
    with pytest.raises(InvalidInput, match="urgency"):
        service.apply_labels(case.id, {"urgency": 4}, "r")
    with pytest.raises(InvalidInput, match="unknown label"):
        service.apply_labels(case.id, {"colour": "red"}, "r")
    with pytest.raises(InvalidInput, match="actor"):
        service.apply_labels(case.id, {"urgency": 1}, " ")
    with service.db.session() as s:
        version = s.get(Case, case.id).version
    service.apply_labels(case.id, {"urgency": 1}, "first", expected_version=version)
    with pytest.raises(Conflict, match="changed since"):
        service.apply_labels(case.id, {"urgency": 2}, "second", expected_version=version)


def test_audit_log_is_append_only(make_service, database):
    service = make_service()
    service.ingest(msg())
    with pytest.raises(Exception, match="append-only"):
        with database.engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET actor = 'mallory'"))
    with pytest.raises(Exception, match="append-only"):
        with database.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log"))
    with pytest.raises(RuntimeError, match="append-only"):
        with database.session(write=True) as s:
            s.scalars(select(AuditEntry)).first().actor = "mallory"
    assert [a.actor for a in service.list_audit()] == ["api"]


def test_list_cases_filters(make_service, clock):
    service = make_service()
    ids = [service.ingest(msg(external_id=str(i))).case.id for i in range(4)]
    service.apply_labels(ids[0], {"dispute_type": "quality", "urgency": 1, "emotion": "calm"}, "x", review=False)
    service.apply_labels(ids[1], {"dispute_type": "service", "urgency": 3, "emotion": "calm"}, "x", review=False)
    service.apply_labels(ids[2], {"dispute_type": "refund", "urgency": 2, "emotion": "calm"}, "x", review=False)
    service.apply_labels(ids[3], {"dispute_type": "other", "urgency": 3, "emotion": "calm"}, "x", review=False)
    service.record_case_event(ids[3], "pending", "agent")
    assert [c.id for c in service.list_cases(grade=1)] == [ids[0]]
    assert [c.id for c in service.list_cases(dispute_type="service")] == [ids[1]]
    assert [c.id for c in service.list_cases(status="pending")] == [ids[3]]
    assert [c.id for c in service.list_cases(tier="team_leader")] == [ids[0]]
    # quality/1 respond 4 h, refund/2 8 h, service/3 6 h, other/3 24 h
    assert [c.id for c in service.list_cases(due_before=T0 + 7 * H)] == [ids[0], ids[1]]
    assert [c.id for c in service.list_cases(breached=False)] == ids
    assert service.list_cases(breached=True) == []
    page = service.list_cases(limit=2)
    assert [c.id for c in page] == ids[:2]
    assert [c.id for c in service.list_cases(limit=2, after_id=page[-1].id)] == ids[2:]
    with pytest.raises(InvalidInput, match="tier"):
        service.list_cases(tier="ceo")


def test_users_and_api_keys(make_service, database):
    service = make_service()
    service.create_user("zendesk", "integration")
    with pytest.raises(Conflict):
        service.create_user("zendesk")
    with pytest.raises(InvalidInput, match="role"):
        service.create_user("bob", "king")
    view, secret = service.create_api_key("zendesk", ["ingest"], label="prod")
    with database.session() as s:
        stored = s.get(ApiKey, view.id)
        assert secret not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
    principal = service.authenticate(secret)
    assert principal.user == "zendesk" and principal.scopes == ["ingest"]
    principal.require("ingest")
    with pytest.raises(Forbidden, match="review"):
        principal.require("review")
    for bad in (None, "", "tri_nope", secret[:-1] + ("x" if secret[-1] != "x" else "y")):
        with pytest.raises(Unauthorized):
            service.authenticate(bad)
    with pytest.raises(NotFound):
        service.create_api_key("nobody", ["ingest"])
    with pytest.raises(InvalidInput, match="unknown scopes"):
        service.create_api_key("zendesk", ["root"])
    service.set_user_active("zendesk", False)
    with pytest.raises(Unauthorized, match="deactivated"):
        service.authenticate(secret)
    service.set_user_active("zendesk", True)
    service.revoke_api_key(view.prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        service.authenticate(secret)
    admin_view, admin_secret = service.create_api_key("zendesk", ["admin"])
    assert service.authenticate(admin_secret).has("review")
    actions = [a.action for a in service.list_audit()]
    assert actions.count("api_key.created") == 2 and "api_key.revoked" in actions and "user.deactivated" in actions


def test_regrade_after_a_new_model_keeps_reviewed_cases(make_service, tiny_triager, database):
    service = make_service()
    a = service.ingest(msg(external_id="a")).case
    b = service.ingest(msg(external_id="b")).case
    service.apply_labels(b.id, {}, "reviewer")  # confirmed: a new model must not touch it

    class Retrained:
        version = "v-next"

        def predict_many(self, texts):
            out = []
            for p in tiny_triager.predict_many(texts):
                out.append(p.model_copy(update={"dispute_type": "other", "urgency": 3, "model_version": "v-next"}))
            return out

    changed = service.regrade_open_cases(Retrained(), actor="model:v-next")
    assert changed == 1
    regraded = service.get_case(a.id)
    assert regraded.dispute_type == "other" and regraded.model_version == "v-next"
    assert regraded.resolve_due_at is None and regraded.respond_due_at == T0 + 24 * H
    assert service.get_case(b.id).model_version == tiny_triager.version
    assert any(e.action == "case.regraded" and e.actor == "model:v-next" for e in service.list_audit("case", a.id))


def test_database_down_is_unavailable(tmp_path):
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    service = TriageService(db, Policy.load(), None, Settings(), webhook_urls=[])
    with pytest.raises(Unavailable, match="retry"):
        service.get_case(1)
    assert db.ping() is False


def test_coalesced_ingestion_batches_concurrent_messages(make_service, tiny_triager, database):
    """Messages arriving together share one model call; one failing message fails alone."""
    calls = []

    class Counting:
        version = tiny_triager.version

        def predict_many(self, texts):
            calls.append(len(texts))
            if any("BOOM" in t for t in texts):
                raise RuntimeError("model crashed on this text")
            time.sleep(0.05)  # long enough for the other requests to queue up
            return tiny_triager.predict_many(texts)

    service = make_service(triager=Counting())
    service.start_coalescing()
    barrier = threading.Barrier(16)

    def post(i):
        barrier.wait()
        text_ = "BOOM" if i == 7 else f"快递五天才到 {i}"
        try:
            return service.ingest(msg(external_id=str(i % 12), text=text_))
        except RuntimeError as exc:
            return exc

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(post, range(16)))
    finally:
        service.stop_coalescing()
    assert isinstance(results[7], RuntimeError)
    good = [r for i, r in enumerate(results) if i != 7]
    assert all(r.case is not None and r.index == 0 for r in good)
    assert sum(r.created for r in good) == 11  # 12 distinct ids, one of them only in the failing message
    for i, r in enumerate(results):
        if i != 7 and i + 12 < 16:
            assert r.case.id == results[i + 12].case.id
    assert max(calls) > 1  # some messages were triaged together
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 11
    assert service.ingest(msg(external_id="after-stop")).created  # falls back to direct ingestion


def test_coalesced_ingestion_with_the_database_down_fails_every_waiting_message(tiny_triager):
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    service = TriageService(db, Policy.load(), tiny_triager, Settings(), webhook_urls=[])
    service.start_coalescing()
    try:
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(service.ingest, msg(external_id=str(i))) for i in range(5)]
            errors = [f.exception(timeout=60) for f in futures]
    finally:
        service.stop_coalescing()
    assert all(isinstance(e, Unavailable) for e in errors)


def test_servers_starting_together_migrate_once(tmp_path, postgres_url):
    """Several processes upgrading one fresh database at once (own engines, like processes)."""
    from fixtures_db import PG_URL, with_search_path

    urls = [f"sqlite:///{tmp_path / 'fresh.db'}"]
    admin = None
    if postgres_url is not None:
        import uuid

        from sqlalchemy import create_engine

        schema = f"triage_race_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        urls.append(with_search_path(PG_URL, schema))
    try:
        for url in urls:
            databases = [Database(url) for _ in range(4)]
            barrier = threading.Barrier(4)

            def upgrade(db, barrier=barrier):
                barrier.wait()
                db.upgrade()

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(upgrade, databases))
            with databases[0].engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
            for db in databases:
                db.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()


def test_processes_opening_a_new_sqlite_file_together(tmp_path):
    """Real processes (not threads) open and migrate one new SQLite file at the same instant.

    Each child waits for a start file, so their first connections (and the WAL switch) race.
    Before the WAL switch was serialised, one of them could die with "database is locked".
    """
    import subprocess
    import sys

    db_path = tmp_path / "new.db"
    go = tmp_path / "go"
    child = (
        "import sys, time, pathlib\n"
        "from triage.store import Database\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "while not go.exists(): time.sleep(0.001)\n"
        "db = Database('sqlite:///' + sys.argv[1])\n"
        "db.upgrade()\n"
        "with db.session(write=True) as s: s.execute(__import__('sqlalchemy').text('SELECT 1'))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", child, str(db_path), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    time.sleep(1.5)  # every child has imported and waits on the start file
    go.touch()
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0] * len(procs), [err for rc, err in results if rc]
    probe = Database(f"sqlite:///{db_path}")
    with probe.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    probe.dispose()


def test_breaches_since_page_exactly_as_a_plain_filter_would(make_service, clock):
    """``list_breaches(since=...)`` starts its id-ordered scan at the first breach in the window
    (found through the occurred_at index); breaches recorded out of time order and paging by
    ``after_id`` must still give exactly what filtering every breach would."""
    import random
    from datetime import timedelta

    from sqlalchemy import insert

    from triage.clock import as_utc
    from triage.store.tables import SlaEvent

    service = make_service()
    case = service.ingest({"source": "shop", "external_id": "b1", "text": "耳机没声音", "received_at": clock()})
    base = clock()
    rng = random.Random(7)
    offsets = [rng.randint(0, 240) for _ in range(80)]  # hours; ids are not in time order
    with service.db.session(write=True) as s:
        s.execute(insert(SlaEvent), [
            {"case_id": case.case.id, "kind": "breach" if i % 5 else "warning", "deadline": "respond",
             "due_at": base + timedelta(minutes=i), "occurred_at": base + timedelta(hours=h),
             "detected_at": base + timedelta(hours=h)}
            for i, h in enumerate(offsets)])
        every = [(e.id, e.occurred_at) for e in s.query(SlaEvent).filter(SlaEvent.kind == "breach").order_by(SlaEvent.id)]
    for since_h in (0, 50, 120, 239, 300):
        since = base + timedelta(hours=since_h)
        expected = [i for i, at in every if as_utc(at) >= since]
        for after in (0, expected[len(expected) // 2] if expected else 0):
            for limit in (1, 7, 100):
                got = [b.id for b in service.list_breaches(since=since, after_id=after, limit=limit)]
                assert got == [i for i in expected if i > after][:limit], (since_h, after, limit)
