"""Review service: queue order and filters, decisions with optimistic concurrency, history, dashboard.

Runs on SQLite and, when the server answers, on PostgreSQL (a throw-away database).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from triage.errors import Conflict, InvalidInput, NotFound
from triage.contexts.review import QueueFilters, ReviewService
from triage.store import AuditEntry, Case, Database, Message, Prediction, ReviewDecision, SlaEvent, utcnow

from conftest import skip_unless_ci
from review_fixtures import make_service, make_settings, train_tiny_model

from fixtures_db import PG_URL as PG_ADMIN_URL, postgres_reachable


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh database URL: a SQLite file, or a throw-away PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'review.db'}"
        return
    if not postgres_reachable():
        skip_unless_ci(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    name = f"triage_review_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def db(db_url):
    database = Database(db_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def model_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    return train_tiny_model(make_settings(root))


@pytest.fixture
def service(db_url, tmp_path, model_store):
    svc = make_service(make_settings(tmp_path / "svc", database_url=db_url), model_store)
    yield svc
    svc.db.dispose()


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
            message_id=message.id, prediction_id=prediction.id, confidence=prediction.confidence,
            dispute_type=dispute_type, grade=grade,
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


def test_learning_order_takes_the_dispute_types_in_turns(db):
    """Least sure first within each predicted dispute type, the types in turns (taxonomy
    order); paging, filters and claims follow the same order, on both databases."""
    q1 = add_case(db, 1, dispute_type="quality", confidence=0.2)
    q2 = add_case(db, 2, dispute_type="quality", confidence=0.3)
    q3 = add_case(db, 3, dispute_type="quality", confidence=0.35)
    s2 = add_case(db, 4, dispute_type="service", confidence=0.9)
    s1 = add_case(db, 5, dispute_type="service", confidence=0.5)
    o1 = add_case(db, 6, dispute_type="other", confidence=0.1)
    r_none = add_case(db, 7, dispute_type="refund", confidence=0.05)
    with db.session(write=True) as session:  # a case from before confidences were copied: last of its type
        session.get(Case, r_none).confidence = None
    r1 = add_case(db, 8, dispute_type="refund", confidence=0.6)
    add_case(db, 9, dispute_type="advertising", confidence=0.01, labels_source="review")  # reviewed: not queued
    review = ReviewService(db)
    expected = [q1, s1, r1, o1, q2, s2, r_none, q3]
    assert [i["case_id"] for i in review.queue(order="learning")] == expected
    assert [i["case_id"] for i in review.queue(order="uncertainty")][:3] == [o1, q1, q2]  # not in turns
    assert [i["case_id"] for i in review.queue(order="learning", limit=3, offset=3)] == expected[3:6]
    assert [i["case_id"] for i in review.queue(QueueFilters(dispute_type="quality"), order="learning")] == [q1, q2, q3]
    assert [i["case_id"] for i in review.queue(QueueFilters(exclude=[q1, s1]), order="learning")][:3] == [q2, s2, r1]  # turns re-counted
    assert review.claim_next("ann", order="learning", stage="first")["case_id"] == q1
    # ann's case counts as quality's turn for others: bob starts with service, not with q2
    assert review.claim_next("bob", order="learning", stage="first")["case_id"] == s1
    assert review.claim_next("ann", order="learning", stage="first")["case_id"] == q1  # hers comes back
    assert review.queue(order="learning", stage="second") == []
    # a final decision counts for the type it confirmed: one more turn done for service
    done = add_case(db, 10, dispute_type="quality", labels_source="review")
    with db.session(write=True) as session:
        message_id = session.get(Case, done).message_id
        session.add(ReviewDecision(case_id=done, message_id=message_id, reviewer="dan", labels={"dispute_type": "service"},
                                   previous={"dispute_type": "quality"}, changed=True, stage="single", final=True))
    # cat sees neither held case; quality is one turn late (q1 held), service three (s1 held, the decision)
    assert [i["case_id"] for i in review.queue(order="learning", reviewer="cat")] == [r1, o1, q2, r_none, q3, s2]


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


# ------------------------------------------------------------------ history, dashboard


def test_history_and_dashboard(db):
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



# ------------------------------------------------------------------ decisions through the service


class CountingLoop:
    def __init__(self):
        self.count = 0

    def note_confirmations(self, count=1, actor="system"):
        self.count += count


def ingest(service, n, text_):
    return service.ingest({"source": "test", "external_id": f"e{n}", "text": text_}).case.id


def test_confirm_marks_reviewed_and_leaves_the_queue(service):
    loop = CountingLoop()
    review = ReviewService(service.db, service, loop)
    cid = ingest(service, 1, "麦克风一直有电流声，录出来的音频根本没法用")
    before = review.item(cid)
    after = review.decide(cid, "confirm", "rita", before["version"])
    assert after["labels"] == before["labels"] and after["labels_source"] == "review"
    assert after["version"] > before["version"] and loop.count == 1
    assert cid not in [i["case_id"] for i in review.queue()]
    with service.db.session() as s:
        decision = s.query(ReviewDecision).filter_by(case_id=cid).one()
        assert decision.reviewer == "rita" and decision.changed is False


def test_correction_recomputes_deadlines_and_tier_and_is_audited(service):
    review = ReviewService(service.db, service)
    cid = ingest(service, 2, "衣服颜色和图片有点不一样，不过还能穿")
    before = review.item(cid)
    target = {"dispute_type": "quality", "urgency": 1, "emotion": "angry"}
    if before["labels"]["urgency"] == 1:  # the tiny model may already say 1: correct towards 3 instead
        target = {"dispute_type": "other", "urgency": 3, "emotion": "calm"}
    after = review.decide(cid, "correct", "rita", before["version"], labels=target, note="burns when plugged in")
    assert {k: after["labels"][k] for k in target} == target
    assert after["respond_due_at"] != before["respond_due_at"]
    if target["urgency"] == 1:
        assert after["tier"] != "frontline"  # grade 1 and angry never stay with the frontline
    case = service.get_case(cid)
    assert case.grade == target["urgency"] and case.labels_source == "review" and case.tier == after["tier"]
    kinds = [e["kind"] for e in review.history(cid)]
    assert "review" in kinds and "review.corrected" in kinds and kinds[0] == "prediction"


def test_second_reviewer_gets_a_conflict_and_nothing_is_overwritten(service):
    review = ReviewService(service.db, service)
    cid = ingest(service, 3, "快递五天才到，耽误了我周末的直播")
    item = review.item(cid)
    seen = item["version"]  # both reviewers opened the same version
    rita_type, sam_type = [t for t in ("service", "refund", "other") if t != item["labels"]["dispute_type"]][:2]
    review.decide(cid, "correct", "rita", seen, labels={"dispute_type": rita_type})
    with pytest.raises(Conflict, match="already reviewed"):
        review.decide(cid, "correct", "sam", seen, labels={"dispute_type": sam_type})
    with pytest.raises(Conflict):
        review.decide(cid, "confirm", "sam", seen)
    case = service.get_case(cid)
    assert case.dispute_type == rita_type
    with service.db.session() as s:
        assert [d.reviewer for d in s.query(ReviewDecision).filter_by(case_id=cid)] == ["rita"]


def test_bad_decisions_are_refused_with_the_field(service):
    review = ReviewService(service.db, service)
    cid = ingest(service, 4, "补光灯一直闪烁")
    version = review.item(cid)["version"]
    current = review.item(cid)["labels"]
    with pytest.raises(InvalidInput, match="action"):
        review.decide(cid, "approve", "rita", version)
    with pytest.raises(InvalidInput, match="expected_version"):
        review.decide(cid, "confirm", "rita", None)
    with pytest.raises(InvalidInput, match="changes no label"):
        review.decide(cid, "correct", "rita", version, labels={"dispute_type": current["dispute_type"]})
    with pytest.raises(InvalidInput, match="urgency"):
        review.decide(cid, "correct", "rita", version, labels={"urgency": 7})
    with pytest.raises(InvalidInput, match="confirm takes no labels"):
        review.decide(cid, "confirm", "rita", version, labels={"urgency": 1})
    with pytest.raises(NotFound):
        review.decide(987654, "confirm", "rita", 1)
    assert review.item(cid)["labels_source"] == "model"  # nothing happened


def test_skip_with_note_and_bulk_confirm_above_confidence(service):
    review = ReviewService(service.db, service)
    ids = [ingest(service, 10 + i, t) for i, t in enumerate(
        ["摄像头黑屏开不了机", "客服一直不回复", "发票一直没寄", "宝贝很好，物流也快", "降价了不给保价"])]
    skipped = review.decide(ids[0], "skip", "rita", None, note="need the order number")
    assert skipped["labels_source"] == "model"
    assert any(e["kind"] == "case.note" and e["note"] == "need the order number" for e in review.history(ids[0]))
    confidences = {i: review.item(i)["confidence"] for i in ids}
    threshold = sorted(confidences.values())[2]
    result = review.bulk_confirm(threshold, "rita")
    assert sorted(result["confirmed"]) == sorted(i for i, c in confidences.items() if c >= threshold)
    assert review.queue_size() == sum(1 for c in confidences.values() if c < threshold)
    with pytest.raises(InvalidInput):
        review.bulk_confirm(1.5, "rita")


# ------------------------------------------------------------------ HTTP routes


def test_review_and_model_routes(db_url, tmp_path, model_store):
    import shutil

    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.learning import wait_for_job
    from models.store import KEY_FILE_NAME, ModelStore

    store = ModelStore(tmp_path / "models")  # a private copy: this test adds versions
    shutil.copytree(model_store.root, store.root)
    shutil.copy(model_store.root.parent / KEY_FILE_NAME, store.root.parent / KEY_FILE_NAME)  # its signing key
    settings = make_settings(tmp_path / "svc", database_url=db_url, per_type=12, model_dir=store.root)
    service = make_service(settings, store)
    app = create_app(settings, service=service, background=False)
    service.create_user("rita", "reviewer")
    _, rita = service.create_api_key("rita", ["review"])
    service.create_user("boss", "admin")
    _, boss = service.create_api_key("boss", ["admin"])
    as_rita, as_boss = {"Authorization": f"Bearer {rita}"}, {"Authorization": f"Bearer {boss}"}
    ids = [ingest(service, 20 + i, t) for i, t in enumerate(["摄像头黑屏开不了机", "客服一直不回复", "降价了不给保价"])]
    with TestClient(app) as client:
        assert client.get("/v1/review/queue").status_code == 401
        queue = client.get("/v1/review/queue", headers=as_rita).json()
        assert queue["total"] == 3 and {i["case_id"] for i in queue["items"]} == set(ids)
        only = client.get("/v1/review/queue", params={"type": queue["items"][0]["labels"]["dispute_type"]}, headers=as_rita)
        assert all(i["labels"]["dispute_type"] == queue["items"][0]["labels"]["dispute_type"] for i in only.json()["items"])
        assert client.get("/v1/review/queue", params={"order": "random"}, headers=as_rita).status_code == 422
        learning = client.get("/v1/review/queue", params={"order": "learning"}, headers=as_rita).json()
        assert learning["total"] == 3 and {i["case_id"] for i in learning["items"]} == set(ids)

        item = queue["items"][0]
        ok = client.post(f"/v1/cases/{item['case_id']}/review", headers=as_rita,
                         json={"action": "confirm", "expected_version": item["version"]})
        assert ok.status_code == 200 and ok.json()["labels_source"] == "review"
        again = client.post(f"/v1/cases/{item['case_id']}/review", headers=as_rita,
                            json={"action": "confirm", "expected_version": item["version"]})
        assert again.status_code == 409 and again.json()["error"] == "conflict"
        bad = client.post(f"/v1/cases/{ids[1]}/review", headers=as_rita,
                          json={"action": "correct", "labels": {"urgency": 9}, "expected_version": 1})
        assert bad.status_code == 422
        assert client.post("/v1/cases/999999/review", headers=as_rita,
                           json={"action": "confirm", "expected_version": 1}).status_code == 404

        models = client.get("/v1/models", headers=as_rita).json()
        first = models["current"]
        assert [v["version"] for v in models["versions"]] == [first] and models["retrain"] is None
        assert models["operating_point"]["source"] == "fixed"  # no TRIAGE_URGENT_RECALL: the fixed threshold
        assert client.post("/v1/models/retrain", headers=as_rita).status_code == 403
        started = client.post("/v1/models/retrain", headers=as_boss)
        assert started.status_code == 202
        context = app.state.review_context
        job = wait_for_job(context.learning, timeout=120)
        assert job.state == "done", job.error
        overview = client.get("/v1/models", headers=as_rita).json()
        assert overview["retrain"]["state"] == "done" and len(overview["versions"]) == 2
        second = overview["retrain"]["version"]
        if overview["current"] == first:  # rejected by the gate: promote it by hand
            assert client.post(f"/v1/models/{second}/promote", headers=as_boss).status_code == 200
        assert client.post(f"/v1/models/{second}/promote", headers=as_boss).status_code == 409
        back = client.post(f"/v1/models/{first}/rollback", headers=as_boss, json={"reason": "test"})
        assert back.status_code == 200 and back.json()["current"] == first
        assert service.triager.version == first
        assert client.post("/v1/models/v-nope/promote", headers=as_boss).status_code == 404
        assert client.post(f"/v1/models/{second}/rollback", headers=as_boss).status_code == 409  # newer
    service.db.dispose()


# ------------------------------------------------------------------ rendering (no browser)


def test_rendering_escapes_message_text_and_highlights_driving_words():
    from review_ui import render

    text = '声卡<img src=x onerror="alert(1)">冒烟了&amp;<script>alert(2)</script>'
    words = render.driving_words({"dispute_type": [["冒烟", 0.8], ["img", 0.1], ["__EXCL__", 0.5], ["坏", -0.3]],
                                  "urgency": [["冒烟", 0.9]]})
    assert words == {"冒烟": "urgency", "img": "dispute_type"}
    out = render.highlight(text, words)
    assert "<script>" not in out and "<img" not in out and "&lt;script&gt;" in out
    assert "&amp;amp;" in out  # an entity in the text is shown as typed, not decoded
    assert '<mark class="driver" data-head="urgency"' in out and ">冒烟</mark>" in out
    table = render.label_table({"dispute_type": "<b>x</b>", "urgency": 1, "emotion": "calm", "escalation": True},
                               {"escalation": {"true": 0.9, "false": 0.1}, "urgency": {"1": 0.6, "2": 0.4}})
    assert "&lt;b&gt;x&lt;/b&gt;" in table and "90%" in table and "60%" in table
    from review_ui.messages import Translator

    en = Translator("en")
    assert "breached" in render.countdown(utcnow() - timedelta(hours=1), utcnow(), en)
    assert render.countdown(utcnow() + timedelta(hours=2, minutes=5), utcnow(), en).endswith("left")
    assert render.countdown(utcnow() + timedelta(hours=2, minutes=5), utcnow()).startswith("剩余 2小时")  # Chinese by default
    assert "已超时" in render.countdown(utcnow() - timedelta(hours=1), utcnow())
    assert "12315" in render.guideline_block({"escalation": True}) and "质量问题" in render.guideline_block({"dispute_type": "quality"})
    assert "Quality" in render.guideline_block({"dispute_type": "quality"}, en)


# ------------------------------------------------------------------ re-grading after a promotion


def test_regrade_stores_the_new_prediction_for_every_open_unconfirmed_case(service):
    """The uncertainty queue must rank by the serving model: unchanged cases get its scores too."""
    triager = service.triager
    texts = ["摄像头黑屏开不了机", "客服三天不回复消息", "降价了不给保价"]
    predicted = triager.predict_many(texts)
    same = [add_case(service.db, i, dispute_type=p.dispute_type, grade=int(p.urgency), emotion=p.emotion,
                     confidence=0.99, text_=t) for i, (t, p) in enumerate(zip(texts, predicted))]
    other = "service" if predicted[0].dispute_type != "service" else "quality"
    moved = add_case(service.db, 10, dispute_type=other, grade=int(predicted[0].urgency), emotion=predicted[0].emotion,
                     confidence=0.99, text_=texts[0])
    reviewed = add_case(service.db, 11, confidence=0.99, labels_source="review", text_=texts[0])
    versions = {case_id: ReviewService(service.db).item(case_id)["version"] for case_id in same}

    assert service.regrade_open_cases(triager, actor=f"model:{triager.version}") == 1
    review = ReviewService(service.db, service)
    for case_id, p in zip(same, predicted):
        item = review.item(case_id)
        assert item["model_version"] == triager.version and item["confidence"] == pytest.approx(p.confidence)
        assert item["version"] == versions[case_id]  # a new score alone must not conflict a reviewer
    assert review.item(moved)["labels"]["dispute_type"] == predicted[0].dispute_type
    assert review.item(reviewed)["model_version"] == "v0001"  # a reviewer's case keeps its prediction
    queue = review.queue(order="uncertainty")
    assert [i["confidence"] for i in queue] == sorted(i["confidence"] for i in queue)
    assert all(i["model_version"] == triager.version for i in queue)
    with service.db.session() as s:
        regraded = {int(a.entity_id) for a in s.query(AuditEntry).filter(AuditEntry.action == "case.regraded")}
    assert regraded == {moved}


# ------------------------------------------------------------------ the auto-retrain count lives in the database


def test_auto_retrain_count_survives_restarts_and_one_process_retrains(db_url, tmp_path, model_store):
    """Two server processes (two services on one database and model store) and a restart:
    the count of confirmations since the latest retrain is neither lost nor repeated, and
    only one process starts the retrain."""
    import shutil
    import threading

    from models.learning import backend_fitter
    from models.store import KEY_FILE_NAME, ModelStore
    from triage.contexts.review import ReviewContext

    store = ModelStore(tmp_path / "models")
    shutil.copytree(model_store.root, store.root)
    shutil.copy(model_store.root.parent / KEY_FILE_NAME, store.root.parent / KEY_FILE_NAME)  # its signing key
    settings = make_settings(tmp_path / "svc", database_url=db_url, per_type=8, model_dir=store.root,
                             retrain_after_confirmations=3)
    release = threading.Event()
    quick, _ = backend_fitter("sklearn", calibration_folds=0)

    def held_fit(texts, labels, weights, progress=None):
        release.wait(60)
        return quick(texts, labels, weights, progress)

    def process():
        service = make_service(settings, store)
        return ReviewContext(service, store, settings, fit=held_fit, fit_quick=held_fit)

    a, b = process(), process()
    ids = [ingest(a.service, 40 + i, t) for i, t in enumerate(["摄像头黑屏开不了机", "客服一直不回复", "降价了不给保价",
                                                                "麦克风有电流声", "快递丢件了"])]
    for case_id in ids[:2]:
        a.review.decide(case_id, "confirm", "rita", a.review.item(case_id)["version"])
    assert a.learning.job() is None
    restarted = process()
    assert restarted.learning.confirmations_since_retrain == 2 == b.learning.confirmations_since_retrain
    b.review.decide(ids[2], "confirm", "rita", b.review.item(ids[2])["version"])  # the third: b retrains
    job = b.learning.job()
    assert job is not None and job.trigger == "auto"
    assert restarted.learning.confirmations_since_retrain == 0  # claimed by b's retrain
    with pytest.raises(Conflict, match="already running"):
        restarted.learning.start_retrain("ops")
    for case_id in ids[3:]:  # confirmations during the retrain count for the next one
        restarted.review.decide(case_id, "confirm", "rita", restarted.review.item(case_id)["version"])
    assert restarted.learning.job() is None and a.learning.job() is None
    release.set()
    b.learning.wait(120)
    assert job.state == "done", job.error
    assert process().learning.confirmations_since_retrain == 2
    with b.service.db.session() as s:
        newest_at_claim = s.query(ReviewDecision).order_by(ReviewDecision.id).all()[2].id
    assert store.read_manifest(job.version)["confirmed_up_to"] == newest_at_claim
    for context in (a, b, restarted):
        context.service.db.dispose()


def test_a_crashed_retrain_claim_expires(service):
    """A process that died mid-retrain never ends its claim; after the lease it counts again."""
    from triage.contexts.retraining import RETRAIN_LEASE

    cases = [ingest(service, 60 + i, t) for i, t in enumerate(["摄像头黑屏开不了机", "客服一直不回复"])]
    for case_id in cases:
        service.apply_labels(case_id, {}, "rita")
    assert service.claim_retrain("j1", "auto:rita", "auto", min_new=3) is None
    assert service.claim_retrain("j1", "auto:rita", "auto", min_new=2) is not None
    assert service.confirmations_since_retrain() == 0
    with pytest.raises(Conflict, match="j1"):
        service.claim_retrain("j2", "ops", "manual")
    later = utcnow() + RETRAIN_LEASE + timedelta(minutes=1)
    service.now = lambda: later
    assert service.confirmations_since_retrain() == 2
    assert service.claim_retrain("j2", "ops", "manual") is not None
    service.end_retrain("j2", "ops", {"state": "done"})
    assert service.confirmations_since_retrain() == 0 and service.claim_retrain("j3", "ops", "manual")


# ------------------------------------------------------------------ who may review and who may change models


def test_review_ui_access_needs_the_role_and_model_changes_an_admin_scope_key(service, model_store):
    """The UI session knows its user, not its key: model changes need role admin and an
    unrevoked admin-scope key (the API's rule for promote/rollback/retrain)."""
    from triage.errors import Forbidden, Unauthorized
    from triage.contexts.review import ReviewContext

    context = ReviewContext(service, model_store, service.settings)
    service.create_user("sam", "reviewer")
    service.create_api_key("sam", ["review"])
    service.create_user("lee", "admin")
    _, review_key = service.create_api_key("lee", ["review"])
    service.create_user("ann", "agent")

    assert context.require_reviewer("sam") == "sam"
    assert context.require_reviewer("lee") == "lee"
    with pytest.raises(Unauthorized):
        context.require_reviewer(None)
    with pytest.raises(Forbidden, match="role agent"):
        context.require_reviewer("ann")
    with pytest.raises(Forbidden, match="role reviewer"):
        context.require_reviewer("sam", admin=True)
    with pytest.raises(Forbidden, match="admin scope"):
        context.require_reviewer("lee", admin=True)  # an admin whose only key is review-scoped

    admin_key, _ = service.create_api_key("lee", ["admin"])
    assert context.require_reviewer("lee", admin=True) == "lee"
    service.revoke_api_key(admin_key.id)
    with pytest.raises(Forbidden, match="admin scope"):
        context.require_reviewer("lee", admin=True)
    service.set_user_active("lee", False)
    with pytest.raises(Forbidden, match="role None"):
        context.require_reviewer("lee")
