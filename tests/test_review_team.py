"""Review by a team: claims (skip, expiry, concurrency), blind double review, adjudication by
a supervisor, final labels only for retraining, the agreement report, and the /v1/review
routes. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from triage.errors import Conflict, Forbidden, InvalidInput
from triage.policy import Policy
from triage.service import TriageService
from triage.settings import Settings
from triage.store import AuditEntry, Database, ReviewClaim, ReviewDecision
from sqlalchemy import func, select

from fixtures_db import clock, database, database_url, make_service, postgres_url, sqlite_template, tiny_triager  # noqa: F401

TEXTS = ["摄像头黑屏开不了机", "客服一直不回复", "降价了不给保价", "声卡没有声音了", "补光灯闪烁", "采集卡发热严重"]


def ingest_all(service, n=len(TEXTS)):
    return [service.ingest({"source": "shop", "external_id": f"t{i}", "text": TEXTS[i % len(TEXTS)] + f" #{i}"}).case.id
            for i in range(n)]


def team(service):
    for name, role in (("ann", "reviewer"), ("bob", "reviewer"), ("sue", "supervisor")):
        service.create_user(name, role)


def other_grade(grade: int) -> int:
    return 1 if grade != 1 else 2


# ------------------------------------------------------------------ claims


def test_claims_skip_others_and_end_on_decision_skip_or_expiry(make_service, clock):
    service = make_service(review_claim_minutes=5)
    review = service.review
    ids = ingest_all(service, 3)
    a = service.claim_next_case("ann")
    b = service.claim_next_case("bob")
    assert a["case_id"] != b["case_id"] and a["claimed_by"] == "ann" and b["claimed_by"] == "bob"
    assert a["claim"]["expires_at"] == (clock.moment + timedelta(minutes=5)).isoformat()
    # another reviewer's queue skips the claimed case; one's own shows it, held by oneself
    ann_queue = {i["case_id"]: i for i in review.queue(reviewer="ann")}
    assert b["case_id"] not in ann_queue and ann_queue[a["case_id"]]["claimed_by"] == "ann"
    assert review.queue_size(reviewer="ann") == 2 and review.queue_size() == 1  # anonymous: skips every claim
    assert review.queue_size(include_held=True) == 3 and review.dashboard()["queue_size"] == 3
    assert review.item(b["case_id"])["claimed_by"] == "bob"  # the case view says who holds it
    # asking again returns the case one already holds
    assert service.claim_next_case("ann")["case_id"] == a["case_id"]
    with pytest.raises(Conflict, match="held by bob"):
        review.decide(b["case_id"], "confirm", "ann", b["version"])
    with pytest.raises(Conflict, match="held by ann"):
        service.claim_case(a["case_id"], "bob")
    # skip ends the claim
    review.decide(a["case_id"], "skip", "ann", None)
    assert review.item(a["case_id"])["claimed_by"] is None
    # expiry ends it: after 5 minutes bob's claim is free for ann
    clock.advance(minutes=5, seconds=1)
    taken = service.claim_case(b["case_id"], "ann")
    assert taken["claimed_by"] == "ann"
    clock.advance(seconds=42)
    done = review.decide(b["case_id"], "confirm", "ann", taken["version"])
    assert done["outcome"] == "final" and done["claimed_by"] is None and done["review_stage"] == "final"
    with service.db.session() as s:
        decision = s.scalars(select(ReviewDecision).where(ReviewDecision.case_id == b["case_id"])).one()
        assert decision.stage == "single" and decision.final
        assert (decision.created_at - decision.claimed_at).total_seconds() == 42
        assert s.get(ReviewClaim, b["case_id"]) is None
    speed = service.review_agreement()["throughput"]["ann"]
    assert speed["decisions"] == 1 and speed["median_seconds"] == 42.0
    assert set(ids) >= {a["case_id"], b["case_id"]}


def test_claim_next_under_concurrency_gives_every_reviewer_a_different_case(make_service, database_url, tiny_triager):
    service = make_service()
    ingest_all(service, 12)
    # four "server processes": each its own engine and service on the same database
    others = [TriageService(Database(database_url), Policy.load(), tiny_triager, service.settings) for _ in range(4)]
    barrier = threading.Barrier(8)
    got: dict[str, int] = {}
    errors: list[BaseException] = []

    def reviewer(svc, name):
        try:
            barrier.wait()
            item = svc.claim_next_case(name)
            got[name] = item["case_id"] if item else None
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(others[i % 4], f"r{i}")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        assert len(got) == 8 and None not in got.values()
        assert len(set(got.values())) == 8, got
        with service.db.session() as s:
            holders = {c.case_id: c.reviewer for c in s.scalars(select(ReviewClaim))}
        assert holders == {case: name for name, case in got.items()}
    finally:
        for svc in others:
            svc.db.dispose()


# ------------------------------------------------------------------ double review


def test_single_review_is_final_as_before(make_service):
    service = make_service()  # share 0: no double review
    [case_id] = ingest_all(service, 1)
    item = service.claim_case(case_id, "ann")
    result = service.decide_review(case_id, "confirm", "ann", item["version"])
    assert result["outcome"] == "final" and result["labels_source"] == "review"
    assert [e["case_id"] for e in service.confirmed_examples()] == [case_id]


def test_double_review_agreement_finalises_and_the_second_reviewer_is_blind(make_service):
    service = make_service(review_double_share=1.0)
    team(service)
    review = service.review
    [case_id] = ingest_all(service, 1)
    item = service.claim_case(case_id, "ann")
    grade = item["labels"]["urgency"]
    first = review.decide(case_id, "correct", "ann", item["version"], {"urgency": other_grade(grade)}, note="ann's view")
    assert first["outcome"] == "awaiting_second" and first["review_stage"] == "second"
    assert first["labels"]["urgency"] == grade and first["labels_source"] == "model"  # not applied yet
    assert service.confirmed_examples() == [] and service.confirmations_since_retrain() == 0
    # the first reviewer cannot take the second review; their next case is not this one
    assert service.claim_next_case("ann") is None
    with pytest.raises(Forbidden):
        review.decide(case_id, "confirm", "ann", item["version"])
    # bob is blind to ann's decision: model labels, no decisions, nothing of it in the history
    seen = service.claim_next_case("bob")
    assert seen["case_id"] == case_id and seen["review_stage"] == "second" and seen["decisions"] == []
    assert seen["labels"]["urgency"] == grade and seen["double_review"] == "yes"
    history = review.history(case_id)
    assert not any(e["kind"].startswith("review") or e.get("note") == "ann's view" for e in history)
    assert "ann" not in repr(seen) and "ann" not in repr(history)
    with pytest.raises(Conflict, match="second review"):
        review.decide(case_id, "confirm", "bob", seen["version"], stage="first")
    done = review.decide(case_id, "correct", "bob", seen["version"], {"urgency": other_grade(grade)}, stage="second")
    assert done["outcome"] == "final" and done["review_stage"] == "final"
    assert done["labels"]["urgency"] == other_grade(grade) and done["labels_source"] == "review"
    [example] = service.confirmed_examples()
    assert example["reviewer"] == "bob" and example["labels"]["urgency"] == other_grade(grade)
    assert service.confirmations_since_retrain() == 1
    with service.db.session() as s:
        actions = [(a.actor, a.action) for a in s.scalars(select(AuditEntry).where(
            AuditEntry.entity == "case", AuditEntry.entity_id == str(case_id)).order_by(AuditEntry.id))]
    assert ("ann", "review.first_decision") in actions and ("bob", "review.corrected") in actions
    # after the final decision, the history shows both reviews
    kinds = [(e["actor"], e["kind"]) for e in review.history(case_id)]
    assert ("ann", "review") in kinds and ("bob", "review") in kinds


def test_disagreement_goes_to_a_supervisor_whose_label_is_final(make_service):
    service = make_service(review_double_share=1.0)
    team(service)
    review = service.review
    [case_id] = ingest_all(service, 1)
    item = service.claim_next_case("ann")
    grade = item["labels"]["urgency"]
    review.decide(case_id, "correct", "ann", item["version"], {"urgency": other_grade(grade)})
    second = service.claim_next_case("bob")
    out = review.decide(case_id, "confirm", "bob", second["version"])
    assert out["outcome"] == "awaiting_adjudication" and out["review_stage"] == "adjudication"
    assert service.confirmed_examples() == []
    assert service.claim_next_case("bob") is None and service.claim_next_case("ann") is None
    assert service.review.stage_sizes("sue") == {"first": 0, "second": 0, "adjudication": 1}
    assert service.review.stage_sizes("bob")["adjudication"] == 0  # not for one of its reviewers
    for reviewer in ("ann", "bob"):
        with pytest.raises(Forbidden, match="adjudicate"):
            service.claim_next_case(reviewer, stage="adjudication")
    case = service.claim_next_case("sue", stage="adjudication")
    assert case["case_id"] == case_id and case["claimed_by"] == "sue"
    assert [(d["stage"], d["reviewer"], d["labels"]["urgency"]) for d in case["decisions"]] == [
        ("first", "ann", other_grade(grade)), ("second", "bob", grade)]
    before = service.get_case(case_id)
    final = review.decide(case_id, "correct", "sue", case["version"], {"urgency": other_grade(grade)},
                          stage="adjudication")
    assert final["outcome"] == "final" and final["labels"]["urgency"] == other_grade(grade)
    after = service.get_case(case_id)
    assert after.respond_due_at != before.respond_due_at  # the rules re-ran on the final label
    [example] = service.confirmed_examples()
    assert example["reviewer"] == "sue" and example["labels"]["urgency"] == other_grade(grade)
    report = service.review_agreement()
    assert report["double_reviewed"] == 1 and report["adjudicated"] == 1
    assert report["inter_reviewer"]["urgency"] == {"cases": 1, "percent": 0.0, "kappa": 0.0}  # p_o 0, p_e 0
    assert report["reviewer_vs_final"]["ann"]["agreement"]["urgency"] == 1.0
    assert report["reviewer_vs_final"]["bob"]["agreement"]["urgency"] == 0.0
    [version] = report["model_vs_final"]
    assert report["model_vs_final"][version]["agreement"]["urgency"] == 0.0


def test_a_new_model_leaves_a_double_review_alone_and_a_late_second_reviewer_gets_a_conflict(make_service):
    service = make_service(review_double_share=1.0)
    team(service)
    service.create_user("cat", "reviewer")
    waiting, other = ingest_all(service, 2)
    item = service.review_item(waiting)
    service.decide_review(waiting, "confirm", "ann", item["version"])
    service.regrade_open_cases(service.triager, "test")
    with service.db.session() as s:
        from triage.store import Case, Prediction
        counts = {c: s.scalar(select(func.count(Prediction.id)).where(
            Prediction.message_id == s.get(Case, c).message_id)) for c in (waiting, other)}
    assert counts == {waiting: 1, other: 2}  # re-scored: only the case nobody is double-reviewing
    seen = service.review_item(waiting)  # bob and cat open it at once, without claims
    service.decide_review(waiting, "confirm", "bob", seen["version"], stage="second")
    with pytest.raises(Conflict):
        service.decide_review(waiting, "confirm", "cat", seen["version"], stage="second")
    [example] = service.confirmed_examples()
    assert example["reviewer"] == "bob"


def test_asking_again_returns_the_held_case_whatever_its_stage(make_service):
    service = make_service(review_double_share=1.0)
    team(service)
    ids = ingest_all(service, 3)
    held = service.claim_next_case("bob")  # a first review
    item = service.claim_next_case("ann")
    service.decide_review(item["case_id"], "confirm", "ann", item["version"])  # now waits for a second review
    # a second review is waiting, but bob holds a first-stage case: he gets that one back
    assert service.claim_next_case("bob")["case_id"] == held["case_id"]
    with service.db.session() as s:
        assert s.scalars(select(ReviewClaim.case_id).where(ReviewClaim.reviewer == "bob")).all() == [held["case_id"]]
    service.decide_review(held["case_id"], "skip", "bob", None)
    assert service.claim_next_case("bob")["case_id"] == item["case_id"]  # second reviews come first
    assert len(ids) == 3


def test_low_confidence_corrections_get_a_second_review(make_service):
    service = make_service(review_double_below_confidence=1.0)  # every prediction is below 1.0
    ids = ingest_all(service, 2)
    first = service.review.item(ids[0])
    corrected = service.decide_review(ids[0], "correct", "ann", first["version"],
                                      {"urgency": other_grade(first["labels"]["urgency"])})
    assert corrected["outcome"] == "awaiting_second" and corrected["double_review"] == "low_confidence"
    # the second reviewer is not told that the first one corrected it
    assert service.review_item(ids[0], viewer="bob")["double_review"] == "yes"
    assert service.review.queue(reviewer="bob", stage="second")[0]["double_review"] == "yes"
    second = service.review.item(ids[1])
    confirmed = service.decide_review(ids[1], "confirm", "ann", second["version"])
    assert confirmed["outcome"] == "final"


def test_bad_review_inputs(make_service):
    service = make_service()
    [case_id] = ingest_all(service, 1)
    with pytest.raises(InvalidInput):
        service.claim_next_case("ann", stage="third")
    with pytest.raises(InvalidInput):
        service.claim_next_case("")
    with pytest.raises(InvalidInput):
        service.review_agreement(days=0)
    with pytest.raises(Forbidden):
        service.claim_next_case("nobody", stage="adjudication")
    assert service.release_case(case_id, "ann") is False


def test_settings_are_validated():
    with pytest.raises(ValueError):
        Settings(review_double_share=1.5)
    with pytest.raises(ValueError):
        Settings(review_claim_minutes=0)


# ------------------------------------------------------------------ API


def test_review_team_routes(make_service):
    from fastapi.testclient import TestClient

    from api.app import create_app

    service = make_service(review_double_share=1.0)
    team(service)
    keys = {name: service.create_api_key(name, ["review"])[1] for name in ("ann", "bob", "sue")}
    auth = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    ids = ingest_all(service, 2)
    app = create_app(service.settings, service=service, background=False)
    with TestClient(app) as client:
        assert client.post("/v1/review/claim/next").status_code == 401
        a = client.post("/v1/review/claim/next", headers=auth["ann"], json={}).json()["item"]
        b = client.post("/v1/review/claim/next", headers=auth["bob"]).json()["item"]
        assert {a["case_id"], b["case_id"]} == set(ids) and a["claimed_by"] == "ann"
        assert client.get(f"/v1/review/cases/{b['case_id']}", headers=auth["ann"]).json()["claimed_by"] == "bob"
        held = client.post(f"/v1/review/cases/{b['case_id']}/claim", headers=auth["ann"])
        assert held.status_code == 409 and "held by bob" in held.json()["message"]
        queue = client.get("/v1/review/queue", headers=auth["ann"]).json()
        assert [i["case_id"] for i in queue["items"]] == [a["case_id"]]
        assert client.delete(f"/v1/review/cases/{b['case_id']}/claim", headers=auth["bob"]).json() == {"released": True}
        assert client.delete("/v1/review/cases/999999/claim", headers=auth["bob"]).status_code == 404
        grade = a["labels"]["urgency"]
        first = client.post(f"/v1/review/cases/{a['case_id']}/decision", headers=auth["ann"],
                            json={"action": "correct", "labels": {"urgency": other_grade(grade)},
                                  "expected_version": a["version"], "stage": "first"})
        assert first.status_code == 200 and first.json()["outcome"] == "awaiting_second"
        own = client.post(f"/v1/review/cases/{a['case_id']}/decision", headers=auth["ann"],
                          json={"action": "confirm", "expected_version": a["version"]})
        assert own.status_code == 403
        second = client.post("/v1/review/claim/next", headers=auth["bob"], json={"stage": "second"}).json()["item"]
        assert second["case_id"] == a["case_id"] and second["decisions"] == []
        out = client.post(f"/v1/review/cases/{a['case_id']}/decision", headers=auth["bob"],
                          json={"action": "confirm", "expected_version": second["version"], "stage": "second"})
        assert out.json()["outcome"] == "awaiting_adjudication"
        assert client.post("/v1/review/claim/next", headers=auth["bob"],
                           json={"stage": "adjudication"}).status_code == 403
        adj = client.post("/v1/review/claim/next", headers=auth["sue"], json={"stage": "adjudication"}).json()["item"]
        assert len(adj["decisions"]) == 2
        final = client.post(f"/v1/review/cases/{a['case_id']}/decision", headers=auth["sue"],
                            json={"action": "confirm", "expected_version": adj["version"], "stage": "adjudication"})
        assert final.json()["outcome"] == "final" and final.json()["labels"]["urgency"] == grade
        report = client.get("/v1/review/agreement", params={"days": 7}, headers=auth["sue"]).json()
        assert report["adjudicated"] == 1 and report["inter_reviewer"]["urgency"]["percent"] == 0.0
        assert client.get("/v1/review/agreement", params={"days": 0}, headers=auth["sue"]).status_code == 422
        assert client.post("/v1/review/claim/next", headers=auth["ann"],
                           json={"stage": "third"}).status_code == 422


def test_an_adjudicated_label_retrains_the_model_and_first_decisions_do_not(tmp_path):
    from review_fixtures import make_service as make_real_service, make_settings, train_tiny_model
    from triage.contexts.review import ReviewContext

    settings = make_settings(tmp_path, per_type=12, retrain_after_confirmations=1000, review_double_share=1.0)
    store = train_tiny_model(settings)
    service = make_real_service(settings, store)
    team(service)
    context = ReviewContext(service, store, settings)
    assert context.review is service.review and service.review.learning is context.learning
    review = context.review
    case_id = service.ingest({"source": "t", "external_id": "1", "text": "摄像头黑屏开不了机，直播做不了"}).case.id
    item = review.claim_next("ann")
    grade = item["labels"]["urgency"]
    review.decide(case_id, "correct", "ann", item["version"], {"urgency": other_grade(grade)})
    second = review.claim_next("bob")
    review.decide(case_id, "confirm", "bob", second["version"])
    assert context.learning.hooks.confirmed_examples() == []  # two decisions, nothing final yet
    adj = review.claim_next("sue", stage="adjudication")
    review.decide(case_id, "correct", "sue", adj["version"], {"urgency": other_grade(grade)})
    [example] = context.learning.hooks.confirmed_examples()
    assert example.labels["urgency"] == other_grade(grade)
    outcome = context.learning.retrain("admin")
    assert outcome.version
    started = [a for a in service.list_audit(entity="model") if a.action == "model.retrain_started"]
    assert started[-1].after["new_confirmations"] == 1  # the one final label, not the three decisions
