"""Every HTTP route, against SQLite and PostgreSQL: auth and scopes, idempotent ingestion
(also 20 parallel posts to a real server), bad input (422 naming the field, nothing
stored), case filters and events, breaches, health, readiness, metrics, docs, 503."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app

pytest_plugins = ["fixtures_db"]  # database fixtures over SQLite and PostgreSQL
from triage.policy import Policy
from triage.service import TriageService
from triage.settings import Settings
from triage.store import Case, Database, Message

H = 3600


@pytest.fixture
def service(make_service):
    return make_service(max_text_chars=200)


@pytest.fixture
def keys(service):
    service.create_user("desk", "integration")
    service.create_user("li", "reviewer")
    service.create_user("root", "admin")
    return {
        "ingest": service.create_api_key("desk", ["ingest"])[1],
        "review": service.create_api_key("li", ["review"])[1],
        "admin": service.create_api_key("root", ["admin"])[1],
    }


@pytest.fixture
def client(service):
    app = create_app(service.settings, service=service, background=False)
    with TestClient(app) as c:
        yield c


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def body(external_id="T-1", text="摄像头用了两天就黑屏，开不了机", **extra):
    return {"source": "zendesk", "external_id": external_id, "text": text, **extra}


def count(service, model=Case) -> int:
    with service.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


# ------------------------------------------------------------------ auth


def test_missing_wrong_and_insufficient_keys(client, keys):
    r = client.post("/v1/messages", json=body())
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"] == "unauthorized" and "Authorization: Bearer" in r.json()["message"]
    r = client.post("/v1/messages", json=body(), headers=auth("tri_0000_nope"))
    assert r.status_code == 401 and r.json()["message"] == "unknown API key"
    r = client.post("/v1/messages", json=body(), headers=auth(keys["review"]))
    assert r.status_code == 403 and "ingest" in r.json()["message"]
    assert client.post("/v1/messages", json=body(), headers={"X-API-Key": keys["admin"]}).status_code == 201
    assert client.get("/v1/cases", headers=auth(keys["review"])).status_code == 200


# ------------------------------------------------------------------ ingestion


def test_post_one_message_and_retry(client, keys, service):
    r = client.post("/v1/messages", json=body(channel="live_room", customer_ref="C-9"), headers=auth(keys["ingest"]))
    assert r.status_code == 201, r.text
    case = r.json()["case"]
    assert r.json()["created"] is True
    assert case["external_id"] == "T-1" and case["status"] == "open" and case["respond_due_at"]
    assert case["tier"] in Policy.load().tiers
    again = client.post("/v1/messages", json=body(text="retry with other text"), headers=auth(keys["ingest"]))
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["case"]["id"] == case["id"]
    assert count(service) == 1


def test_batch(client, keys, service):
    r = client.post("/v1/messages", headers=auth(keys["ingest"]), json={"messages": [
        body("a"), body("b", text=" "), body("a"), {"source": "zendesk", "external_id": "c", "text": 5}, body("d")]})
    assert r.status_code == 200, r.text
    data = r.json()
    assert (data["created"], data["existing"], data["errors"]) == (2, 1, 2)
    results = data["results"]
    assert results[1]["error"]["field"] == "text" and results[3]["error"]["field"] == "text"
    assert results[2]["case"]["id"] == results[0]["case"]["id"]
    assert count(service) == 2
    too_many = {"messages": [body(str(i)) for i in range(1001)]}
    r = client.post("/v1/messages", json=too_many, headers=auth(keys["ingest"]))
    assert r.status_code == 422 and r.json()["field"] == "messages"
    r = client.post("/v1/messages", json={"messages": [body("x")], "extra": 1}, headers=auth(keys["ingest"]))
    assert r.status_code == 422 and r.json()["field"] == "extra"
    assert count(service) == 2


@pytest.mark.parametrize(
    "payload,field",
    [
        (body(text=""), "text"),
        (body(text=" \n\t "), "text"),
        (body(text="长" * 201), "text"),
        (body(external_id=12), "external_id"),
        (body(text=["a"]), "text"),
        (body(priority="high"), "priority"),
        ({"source": "zendesk", "text": "no id"}, "external_id"),
        (body(received_at="yesterday"), "received_at"),
        ([body()], "body"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_stores_nothing(client, keys, service, payload, field):
    r = client.post("/v1/messages", json=payload, headers=auth(keys["ingest"]))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input"
    assert r.json()["field"] == field and field in r.json()["message"]
    assert count(service) == 0 and count(service, Message) == 0


def test_invalid_json(client, keys, service):
    r = client.post("/v1/messages", content=b'{"source": "zendesk",', headers={
        **auth(keys["ingest"]), "Content-Type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["message"]
    assert count(service) == 0


def test_twenty_parallel_posts_to_a_running_server_make_one_case(service, keys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(service.settings, service=service, background=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        barrier = threading.Barrier(20)

        def post(i):
            barrier.wait()
            return httpx.post(f"http://127.0.0.1:{port}/v1/messages", json=body("same", text=f"声卡没声音 {i}"),
                              headers=auth(keys["ingest"]), timeout=30)

        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(post, range(20)))
    finally:
        server.should_exit = True
        thread.join(10)
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["case"]["id"] for r in responses}) == 1
    assert count(service) == 1


# ------------------------------------------------------------------ reading and events


def test_get_message(client, keys):
    case = client.post("/v1/messages", json=body(text="退款一直不到账，电话13812345678"), headers=auth(keys["ingest"])).json()["case"]
    r = client.get(f"/v1/messages/{case['message_id']}", headers=auth(keys["review"]))
    assert r.status_code == 200
    message = r.json()
    assert "13812345678" not in message["text"] and message["case"]["id"] == case["id"]
    assert set(message["prediction"]["scores"]) == {"dispute_type", "urgency", "emotion", "escalation"}
    assert client.get("/v1/messages/999", headers=auth(keys["review"])).status_code == 404
    assert client.get("/v1/messages/abc", headers=auth(keys["review"])).json()["field"] == "message_id"


def test_list_and_filter_cases(client, keys, service):
    ids = [client.post("/v1/messages", json=body(str(i)), headers=auth(keys["ingest"])).json()["case"]["id"]
           for i in range(3)]
    service.apply_labels(ids[0], {"dispute_type": "quality", "urgency": 1}, "setup", review=False)
    service.apply_labels(ids[1], {"dispute_type": "service", "urgency": 3}, "setup", review=False)
    service.apply_labels(ids[2], {"dispute_type": "other", "urgency": 2}, "setup", review=False)
    get = lambda q: client.get(f"/v1/cases?{q}", headers=auth(keys["ingest"]))  # noqa: E731
    assert [c["id"] for c in get("").json()["cases"]] == ids
    assert [c["id"] for c in get("grade=1").json()["cases"]] == [ids[0]]
    assert [c["id"] for c in get("type=service").json()["cases"]] == [ids[1]]
    assert [c["id"] for c in get("tier=supervisor").json()["cases"]] == [ids[2]]
    assert [c["id"] for c in get("status=open&breached=false").json()["cases"]] == ids
    assert get("breached=true").json()["cases"] == []
    due = "2026-05-06T06:00:00%2B00:00"  # T0 + 5 h: only the 4 h quality deadline
    assert [c["id"] for c in get(f"due_before={due}").json()["cases"]] == [ids[0]]
    page = get("limit=2").json()
    assert len(page["cases"]) == 2 and page["next_after_id"] == ids[1]
    assert [c["id"] for c in get(f"limit=2&after_id={ids[1]}").json()["cases"]] == [ids[2]]
    for bad, field in [("grade=4", "grade"), ("status=lost", "status"), ("type=food", "type"),
                       ("tier=ceo", "tier"), ("due_before=soon", "due_before"), ("limit=0", "limit")]:
        r = get(bad)
        assert r.status_code == 422 and r.json()["field"] == field, (bad, r.json())
    assert client.get(f"/v1/cases/{ids[0]}", headers=auth(keys["ingest"])).json()["grade"] == 1
    assert client.get("/v1/cases/999", headers=auth(keys["ingest"])).status_code == 404


def test_case_events(client, keys, service, clock):
    case = client.post("/v1/messages", json=body(), headers=auth(keys["ingest"])).json()["case"]
    url = f"/v1/cases/{case['id']}/events"
    clock.advance(hours=1)
    r = client.post(url, json={"event": "pending", "note": "asked for a photo"}, headers=auth(keys["ingest"]))
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert client.post(url, json={"event": "pending"}, headers=auth(keys["ingest"])).status_code == 409
    clock.advance(hours=2)
    resumed = client.post(url, json={"event": "resumed"}, headers=auth(keys["review"])).json()
    assert resumed["status"] == "open"
    assert resumed["respond_due_at"] > case["respond_due_at"]
    r = client.post(url, json={"event": "first_response", "at": "2026-05-06T03:30:00Z"}, headers=auth(keys["ingest"]))
    assert r.status_code == 200 and r.json()["first_response_at"].startswith("2026-05-06T03:30:00")
    assert client.post(url, json={"event": "resolved"}, headers=auth(keys["ingest"])).json()["status"] == "resolved"
    assert client.post(url, json={"event": "closed"}, headers=auth(keys["ingest"])).json()["status"] == "closed"
    r = client.post(url, json={"event": "reopened"}, headers=auth(keys["ingest"]))
    assert r.status_code == 422 and r.json()["field"] == "event"
    r = client.post(url, json={"event": "closed", "by": "me"}, headers=auth(keys["ingest"]))
    assert r.status_code == 422 and r.json()["field"] == "by"
    assert client.post("/v1/cases/999/events", json={"event": "closed"}, headers=auth(keys["ingest"])).status_code == 404
    actions = [a.action for a in service.list_audit("case", case["id"])]
    assert actions[-5:] == ["case.pending", "case.resumed", "case.first_response", "case.resolved", "case.closed"]


def test_breaches_and_metrics(client, keys, service, clock):
    case = client.post("/v1/messages", json=body(), headers=auth(keys["ingest"])).json()["case"]
    service.apply_labels(case["id"], {"dispute_type": "service", "urgency": 3, "emotion": "calm"}, "setup", review=False)
    assert client.get("/v1/sla/breaches", headers=auth(keys["ingest"])).json()["breaches"] == []
    clock.advance(hours=7)
    client.app.state.monitor.run_once()
    breaches = client.get("/v1/sla/breaches", headers=auth(keys["ingest"])).json()["breaches"]
    assert [(b["case_id"], b["deadline"], b["tier_after"]) for b in breaches] == [(case["id"], "respond", "senior_agent")]
    assert client.get("/v1/sla/breaches?since=2026-05-07T00:00:00Z", headers=auth(keys["ingest"])).json()["breaches"] == []
    assert client.get("/v1/sla/breaches?since=bad", headers=auth(keys["ingest"])).status_code == 422
    assert [c["id"] for c in client.get("/v1/cases?breached=true", headers=auth(keys["ingest"])).json()["cases"]] == [case["id"]]
    metrics = client.get("/metrics").text
    assert 'triage_sla_breaches{deadline="respond"} 1.0' in metrics
    assert 'triage_sla_breaches_detected_total{deadline="respond"} 1.0' in metrics
    assert f'triage_model_info{{version="{service.triager.version}"}} 1.0' in metrics
    assert 'triage_messages_triaged_total{head="dispute_type"' in metrics
    assert 'triage_http_request_duration_seconds_count{method="POST",route="/v1/messages",status="201"} 1.0' in metrics
    assert 'triage_cases{status="open"} 1.0' in metrics


# ------------------------------------------------------------------ operations


def test_health_readiness_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok" and ready.json()["model"]
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/messages", "/v1/messages/{message_id}", "/v1/cases", "/v1/cases/{case_id}/events",
            "/v1/sla/breaches"} <= set(spec["paths"])
    schema = spec["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert len(schema["oneOf"]) == 2


def test_no_model_loaded_is_not_ready(service, keys):
    service.models.swap(None)
    with TestClient(create_app(service.settings, service=service, background=False)) as c:
        assert c.get("/readyz").status_code == 503 and c.get("/readyz").json()["model"] == "not loaded"
        r = c.post("/v1/messages", json=body(), headers=auth(keys["ingest"]))
        assert r.status_code == 503 and r.json()["error"] == "model_unavailable" and "ensure-model" in r.json()["message"]
    assert count(service) == 0


def test_database_down_is_503(tmp_path):
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    service = TriageService(db, Policy.load(), None, Settings(), webhook_urls=[])
    with TestClient(create_app(service.settings, service=service, background=False)) as c:
        r = c.post("/v1/messages", json=body(), headers=auth("tri_abc_def"))
        assert r.status_code == 503 and r.headers["retry-after"] and r.json()["error"] == "unavailable"
        assert c.get("/readyz").status_code == 503 and c.get("/readyz").json()["database"] == "unreachable"
        assert c.get("/healthz").status_code == 200


def test_create_app_from_settings_runs_migrations_and_background_threads(database_url, tiny_triager, tmp_path):
    settings = Settings(database_url=database_url, var_dir=tmp_path, sla_monitor_interval_s=0.05,
                        webhook_url="http://127.0.0.1:9/hook")
    app = create_app(settings, models=tiny_triager)
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 200
        jobs = app.state.task_queue._jobs  # the periodic tasks of triage.jobs.tasks, on threads
        assert sorted(j._thread.name for j in jobs if j.alive) == ["sla.check", "surges.scan", "webhooks.dispatch"]
    assert app.state.task_queue._jobs == [] and not any(j.alive for j in jobs)
