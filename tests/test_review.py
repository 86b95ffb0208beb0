"""Review service: queue order and filters, decisions with optimistic concurrency, history, dashboard.

Runs on SQLite and, when the server answers, on PostgreSQL (a throw-away database).
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from triage.errors import Conflict, InvalidInput, NotFound
from triage.review import QueueFilters, ReviewService
from triage.storage import AuditEntry, Case, Database, Message, Prediction, ReviewDecision, SlaEvent, utcnow

PG_ADMIN_URL = os.environ.get("TRIAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path):
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'review.db'}")
        database.upgrade()
        yield database
        database.dispose()
        return
    if not _postgres_available():
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    name = f"triage_review_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    database.upgrade()
    try:
        yield database
    finally:
        database.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def add_case(db, n, *, dispute_type="quality", grade=2, emotion="calm", confidence=0.8, respond_in_h=4.0,
             tier="frontline", status="open", breached=False, labels_source="model", text_="摄像头坏了"):
    now = utcnow()
    with db.session(write=True) as s:
        message = Message(source="test", external_id=f"m{n}", text_masked=text_, received_at=now)
        s.add(message)
        s.flush()
        prediction = Prediction(
            message_id=message.id, model_version="v0001", dispute_type=dispute_type, urgency=grade, emotion=emotion,
            escalation=False, confidence=confidence, scores={"dispute_type": {dispute_type: confidence}},
            explanation={"dispute_type": [["坏了", 0.9]]}, rules=[],
        )
        s.add(prediction)
        s.flush()
        case = Case(
            message_id=message.id, prediction_id=prediction.id, dispute_type=dispute_type, grade=grade,
            priority_grade=grade, emotion=emotion, status=status, tier=tier, received_at=now,
            respond_due_at=now + timedelta(hours=respond_in_h) if respond_in_h is not None else None,
            resolve_due_at=now + timedelta(hours=48), respond_breached=breached, labels_source=labels_source,
        )
        s.add(case)
        s.flush()
        return case.id


# ------------------------------------------------------------------ queue


def test_queue_orders_by_deadline_then_grade_then_uncertainty(db):
    late = add_case(db, 1, respond_in_h=8)
    soon_grade2 = add_case(db, 2, respond_in_h=1, grade=2, confidence=0.3)
    soon_grade1_sure = add_case(db, 3, respond_in_h=1, grade=1, confidence=0.9)
    soon_grade1_unsure = add_case(db, 4, respond_in_h=1, grade=1, confidence=0.4)
    no_deadline = add_case(db, 5, respond_in_h=None)
    add_case(db, 6, labels_source="review")  # already reviewed: not queued
    add_case(db, 7, status="resolved")  # closed work: not queued
    # cases 2-4 share a deadline only if created in the same instant; force it
    with db.session(write=True) as s:
        due = s.get(Case, soon_grade2).respond_due_at
        for cid in (soon_grade1_sure, soon_grade1_unsure):
            s.get(Case, cid).respond_due_at = due
    review = ReviewService(db)
    ids = [item["case_id"] for item in review.queue()]
    assert ids == [soon_grade1_unsure, soon_grade1_sure, soon_grade2, late, no_deadline]
    by_uncertainty = [item["case_id"] for item in review.queue(order="uncertainty")]
    assert by_uncertainty == [soon_grade2, soon_grade1_unsure, late, no_deadline, soon_grade1_sure]
    assert review.queue_size() == 5


def test_queue_filters_and_bad_filters(db):
    a = add_case(db, 1, dispute_type="service", tier="supervisor")
    b = add_case(db, 2, dispute_type="quality", emotion="angry", breached=True)
    c = add_case(db, 3, dispute_type="quality", grade=1, status="pending")
    review = ReviewService(db)
    ids = lambda **kw: [i["case_id"] for i in review.queue(QueueFilters(**kw))]  # noqa: E731
    assert ids(dispute_type="service") == [a]
    assert ids(emotion="angry") == [b]
    assert ids(breached=True) == [b]
    assert set(ids(breached=False)) == {a, c}
    assert ids(grade=1) == [c] and ids(status="pending") == [c] and ids(tier="supervisor") == [a]
    assert set(ids(exclude=[a])) == {b, c}
    with pytest.raises(InvalidInput, match="dispute_type"):
        review.queue(QueueFilters(dispute_type="broken"))
    with pytest.raises(InvalidInput, match="status"):
        review.queue(QueueFilters(status="closed"))
    with pytest.raises(InvalidInput, match="order"):
        review.queue(order="random")
    with pytest.raises(InvalidInput):
        review.queue(limit=0)


def test_item_shows_prediction_and_unknown_case_is_not_found(db):
    cid = add_case(db, 1, text_="<script>alert(1)</script>坏了")
    item = ReviewService(db).item(cid)
    assert item["text"].startswith("<script>")  # stored as text; the UI escapes it
    assert item["prediction"]["dispute_type"] == "quality" and item["confidence"] == 0.8
    assert item["seconds_left"] > 3 * 3600
    with pytest.raises(NotFound):
        ReviewService(db).item(999999)


# ------------------------------------------------------------------ history, dashboard, learning input


def test_history_dashboard_and_confirmed_examples(db):
    cid = add_case(db, 1)
    other = add_case(db, 2, dispute_type="service")
    now = utcnow()
    with db.session(write=True) as s:
        case = s.get(Case, cid)
        s.add(ReviewDecision(case_id=cid, message_id=case.message_id, reviewer="rita", changed=True, reason="fix",
                             previous={"dispute_type": "quality", "urgency": 2, "emotion": "calm", "escalation": False},
                             labels={"dispute_type": "service", "urgency": 1, "emotion": "calm", "escalation": False}))
        s.add(SlaEvent(case_id=cid, kind="breach", deadline="respond", due_at=now, occurred_at=now,
                       tier_before="frontline", tier_after="supervisor"))
        s.add(AuditEntry(actor="rita", action="case.labels", entity="case", entity_id=str(cid),
                         before={"tier": "frontline"}, after={"tier": "supervisor"}, reason="fix"))
        case.labels_source = "review"
        o = s.get(Case, other)
        s.add(ReviewDecision(case_id=other, message_id=o.message_id, reviewer="sam", changed=False,
                             previous={"dispute_type": "service", "urgency": 2, "emotion": "calm", "escalation": False},
                             labels={"dispute_type": "service", "urgency": 2, "emotion": "calm", "escalation": False}))
    review = ReviewService(db)
    kinds = [e["kind"] for e in review.history(cid)]
    assert kinds[0] == "prediction" and {"review", "sla.breach", "case.labels"} <= set(kinds)
    summary = next(e for e in review.history(cid) if e["kind"] == "review")["summary"]
    assert "dispute_type: quality -> service" in summary and "urgency: 2 -> 1" in summary
    with pytest.raises(NotFound):
        review.history(424242)

    stats = review.dashboard()
    assert stats["queue_size"] == 1 and stats["reviews_total"] == 2
    assert stats["agreement_overall"]["dispute_type"] == 0.5 and stats["agreement_overall"]["emotion"] == 1.0
    assert {"model": "quality", "confirmed": "service", "count": 1} in stats["confusion"]["dispute_type"]
    assert sum(stats["sla_per_day"][now.date().isoformat()].values()) == 1

    examples = review.confirmed_examples()
    assert [e.labels["dispute_type"] for e in examples] == ["service", "service"]
    assert examples[0].labels["urgency"] == 1 and all(e.confirmed for e in examples)
