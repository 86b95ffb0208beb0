"""Helpdesk connectors end to end, against SQLite and PostgreSQL: Chatwoot's and Zammad's
signed webhooks make one case each with the right references, a replay makes none, a bad
signature is 401 and stores nothing; write-back reaches a local fake of each helpdesk's REST
API (the exact calls are checked) after triage and after a review correction; a helpdesk
answering 500 is retried and recorded without touching ingestion; the generic field map."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app

pytest_plugins = ["fixtures_db"]  # database fixtures over SQLite and PostgreSQL
from triage.connectors import Ignored, from_chatwoot, from_zammad, html_to_text, json_pointer
from triage.contexts.review import ReviewService
from triage.jobs.helpdesk import HelpdeskAccess
from triage.jobs.webhooks import WebhookDispatcher
from triage.store.tables import Case, ConnectorRef, Message, WebhookAttempt, WebhookDelivery

FIXTURES = Path(__file__).parent / "fixtures"
CW_SECRET, ZM_SECRET = "cw-webhook-secret", "zm-signature-token"
CW_TOKEN, ZM_TOKEN = "cw-api-token", "zm-api-token"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- fake helpdesk


class FakeHelpdesk:
    """A local HTTP server with the documented write-back routes of Chatwoot and Zammad. It
    records every call (method, path, headers, JSON body), refuses a wrong token with 401, an
    unknown route with 404, and answers ``fail_with`` (a status) while that is set."""

    ROUTES = {
        "chatwoot": [("GET", r"/api/v1/accounts/\d+/conversations/\d+/labels"),
                     ("POST", r"/api/v1/accounts/\d+/conversations/\d+/labels"),
                     ("POST", r"/api/v1/accounts/\d+/conversations/\d+/toggle_priority")],
        "zammad": [("POST", r"/api/v1/tags/add"), ("DELETE", r"/api/v1/tags/remove"),
                   ("PUT", r"/api/v1/tickets/\d+")],
    }

    def __init__(self, kind: str):
        self.kind = kind
        self.calls: list[dict] = []
        self.fail_with: int | None = None
        self.labels: dict[str, list[str]] = {}  # Chatwoot: conversation path -> its labels
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else None
                fake.calls.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "body": body})
                if not any(m == self.command and re.fullmatch(p, self.path) for m, p in fake.ROUTES[fake.kind]):
                    return self._reply(404, {"error": "Not Found"})
                if not fake.authorised(self.headers):
                    return self._reply(401, {"error": "Invalid Access Token"})
                if fake.fail_with:
                    return self._reply(fake.fail_with, {"error": "boom"})
                if self.path.endswith("/labels"):  # Chatwoot: GET lists, POST replaces
                    conversation = self.path[: -len("/labels")]
                    if self.command == "POST":
                        fake.labels[conversation] = list(body["labels"])
                    return self._reply(200, {"payload": fake.labels.get(conversation, [])})
                return self._reply(200, True)

            def _reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def authorised(self, headers) -> bool:
        if self.kind == "chatwoot":
            return headers.get("api_access_token") == CW_TOKEN
        return headers.get("Authorization") == f"Token token={ZM_TOKEN}"

    def bodies(self, method: str, path_end: str) -> list:
        return [c["body"] for c in self.calls if c["method"] == method and c["path"].endswith(path_end)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chatwoot():
    fake = FakeHelpdesk("chatwoot")
    yield fake
    fake.close()


@pytest.fixture
def zammad():
    fake = FakeHelpdesk("zammad")
    yield fake
    fake.close()


# ----------------------------------------------------------------------------- helpers


def connector_settings(chatwoot_url: str = "", zammad_url: str = "", **extra) -> dict:
    return {"chatwoot_enabled": True, "chatwoot_webhook_secret": CW_SECRET, "chatwoot_base_url": chatwoot_url,
            "chatwoot_api_token": CW_TOKEN if chatwoot_url else "",
            "zammad_enabled": True, "zammad_webhook_secret": ZM_SECRET, "zammad_base_url": zammad_url,
            "zammad_api_token": ZM_TOKEN if zammad_url else "", **extra}


@pytest.fixture
def app_for(make_service):
    clients = []

    def build(**settings):
        service = make_service(**connector_settings(**settings))
        client = TestClient(create_app(service.settings, service=service, background=False))
        client.__enter__()
        clients.append(client)
        return service, client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def chatwoot_post(client, payload, secret=CW_SECRET, timestamp=None, signature=None, body=None):
    raw = body if body is not None else json.dumps(payload, ensure_ascii=False).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    sig = signature or "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return client.post("/v1/connectors/chatwoot", content=raw,
                       headers={"Content-Type": "application/json", "X-Chatwoot-Signature": sig,
                                "X-Chatwoot-Timestamp": ts, "X-Chatwoot-Delivery": "3f1c-test"})


def zammad_post(client, payload, secret=ZM_SECRET, signature=None):
    raw = json.dumps(payload, ensure_ascii=False).encode()
    sig = signature or "sha1=" + hmac.new(secret.encode(), raw, hashlib.sha1).hexdigest()
    return client.post("/v1/connectors/zammad", content=raw,
                       headers={"Content-Type": "application/json", "X-Hub-Signature": sig,
                                "X-Zammad-Trigger": "triage", "X-Zammad-Delivery": "job-1"})


def count(service, model) -> int:
    with service.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def refs_of(service, source, external_id) -> ConnectorRef:
    with service.db.session() as s:
        return s.scalars(select(ConnectorRef).where(ConnectorRef.source == source,
                                                    ConnectorRef.external_id == external_id)).one()


def dispatcher_for(service, clock) -> WebhookDispatcher:
    return WebhookDispatcher(service.db, "unused", now=clock, timeout_s=2.0, helpdesk=HelpdeskAccess(service.settings))


def expected_tags(case: dict, prefix: str = "triage:") -> list[str]:
    """What the helpdesk should show, spelled out from the case (not from triage.contexts.writeback)."""
    tags = [prefix + case["dispute_type"], f"{prefix}grade-{case['grade']}"]
    if case["emotion"] in ("upset", "angry"):
        tags.append(prefix + case["emotion"])
    if case["escalation"]:
        tags.append(prefix + "escalation")
    if case["vulnerable"]:
        tags.append(prefix + "vulnerable")
    return tags


CW_PREFIX = "triage-"  # Chatwoot label titles allow no ":"
CW_PRIORITY = {1: "urgent", 2: "high", 3: "medium"}
ZM_PRIORITY = {1: 3, 2: 2, 3: 1}


def other_labels(case: dict) -> dict:
    """A correction that changes type, grade and emotion."""
    return {"dispute_type": "refund" if case["dispute_type"] != "refund" else "service",
            "urgency": 3 if case["grade"] != 3 else 2,
            "emotion": "calm" if case["emotion"] != "calm" else "angry",
            "escalation": False}


# ----------------------------------------------------------------------------- Chatwoot inbound


def test_chatwoot_message_makes_one_case_with_references_and_a_replay_none(app_for):
    service, client = app_for()
    payload = fixture("chatwoot_message_created.json")
    r = chatwoot_post(client, payload)
    assert r.status_code == 201, r.text
    case = r.json()["case"]
    assert r.json()["created"] is True
    assert (case["source"], case["external_id"]) == ("chatwoot", "4711")
    message = client.app.state.service.get_message(case["message_id"])
    assert (message.channel, message.customer_ref) == ("web_widget", "52")
    assert message.received_at.isoformat().startswith("2026-05-06T00:58:30")
    ref = refs_of(service, "chatwoot", "4711")
    assert ref.thread == "2/128"
    assert ref.refs == {"account_id": "2", "conversation_id": "128", "contact_id": "52", "inbox_id": "3"}
    # Chatwoot retries with the same body and a fresh timestamp: the same case, nothing new.
    again = chatwoot_post(client, payload, timestamp=int(time.time()) + 1)
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["case"]["id"] == case["id"]
    assert count(service, Case) == 1 and count(service, ConnectorRef) == 1


@pytest.mark.parametrize("how", ["unsigned", "wrong_secret", "tampered_body", "stale", "future", "bad_scheme",
                                 "no_timestamp"])
def test_chatwoot_bad_signature_is_401_and_stores_nothing(app_for, how):
    service, client = app_for()
    payload = fixture("chatwoot_message_created.json")
    raw = json.dumps(payload, ensure_ascii=False).encode()
    now = int(time.time())
    if how == "unsigned":
        r = client.post("/v1/connectors/chatwoot", content=raw, headers={"Content-Type": "application/json"})
    elif how == "wrong_secret":
        r = chatwoot_post(client, payload, secret="not-the-secret")
    elif how == "tampered_body":
        good = "sha256=" + hmac.new(CW_SECRET.encode(), f"{now}.".encode() + raw, hashlib.sha256).hexdigest()
        r = chatwoot_post(client, payload, timestamp=now, signature=good, body=raw.replace("冒烟".encode(), "正常".encode()))
    elif how == "stale":
        r = chatwoot_post(client, payload, timestamp=now - 400)
    elif how == "future":
        r = chatwoot_post(client, payload, timestamp=now + 400)
    elif how == "bad_scheme":
        digest = hmac.new(CW_SECRET.encode(), f"{now}.".encode() + raw, hashlib.sha256).hexdigest()
        r = chatwoot_post(client, payload, timestamp=now, signature=digest)  # no "sha256=" prefix
    else:
        sig = "sha256=" + hmac.new(CW_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        r = client.post("/v1/connectors/chatwoot", content=raw, headers={"X-Chatwoot-Signature": sig})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized" and r.json()["message"]
    assert count(service, Message) == 0 and count(service, ConnectorRef) == 0


def test_chatwoot_skew_limit_is_a_setting(app_for):
    _service, client = app_for(chatwoot_max_skew_s=30)
    assert chatwoot_post(client, fixture("chatwoot_message_created.json"), timestamp=int(time.time()) - 60).status_code == 401


@pytest.mark.parametrize("change, reason", [
    ({"message_type": "outgoing"}, "not incoming"),
    ({"message_type": "activity"}, "not incoming"),
    ({"private": True}, "private"),
    ({"sender": {"id": 7, "name": "bot", "type": "agent_bot"}}, "not a contact"),
    ({"event": "conversation_created"}, "not message_created"),
    ({"content": None}, "no text"),
])
def test_chatwoot_other_messages_are_ignored(app_for, change, reason):
    service, client = app_for()
    payload = {**fixture("chatwoot_message_created.json"), **change}
    r = chatwoot_post(client, payload)
    assert r.status_code == 200 and reason in r.json()["ignored"]
    assert r.json()["case"] is None
    assert count(service, Message) == 0 and count(service, ConnectorRef) == 0


def test_chatwoot_malformed_payload_is_422_naming_the_field(app_for):
    service, client = app_for()
    payload = fixture("chatwoot_message_created.json")
    del payload["conversation"]
    r = chatwoot_post(client, payload)
    assert r.status_code == 422 and r.json()["field"] == "conversation"
    r = chatwoot_post(client, None, body=b"{not json")
    assert r.status_code == 422 and r.json()["field"] == "body"
    assert count(service, Message) == 0 and count(service, ConnectorRef) == 0


def test_a_disabled_connector_is_404(make_service):
    service = make_service()
    with TestClient(create_app(service.settings, service=service, background=False)) as client:
        r = chatwoot_post(client, fixture("chatwoot_message_created.json"))
        assert r.status_code == 404 and "TRIAGE_CHATWOOT_ENABLED" in r.json()["message"]
        assert zammad_post(client, fixture("zammad_trigger.json")).status_code == 404


# ----------------------------------------------------------------------------- Zammad inbound


def test_zammad_article_makes_one_case_with_references_and_a_replay_none(app_for):
    service, client = app_for()
    payload = fixture("zammad_trigger.json")
    r = zammad_post(client, payload)
    assert r.status_code == 201, r.text
    case = r.json()["case"]
    assert (case["source"], case["external_id"]) == ("zammad", "301")
    message = service.get_message(case["message_id"])
    assert (message.channel, message.customer_ref) == ("email", "9")
    assert "<div>" not in message.text and "补光灯" in message.text
    ref = refs_of(service, "zammad", "301")
    assert ref.thread == "77"
    assert ref.refs == {"ticket_id": "77", "ticket_number": "31077", "article_id": "301", "customer_id": "9"}
    again = zammad_post(client, payload)  # Zammad retries up to 5 times with the same body
    assert again.status_code == 200 and again.json()["case"]["id"] == case["id"]
    assert count(service, Case) == 1 and count(service, ConnectorRef) == 1


@pytest.mark.parametrize("how", ["unsigned", "wrong_secret", "sha256_scheme", "tampered"])
def test_zammad_bad_signature_is_401_and_stores_nothing(app_for, how):
    service, client = app_for()
    payload = fixture("zammad_trigger.json")
    raw = json.dumps(payload, ensure_ascii=False).encode()
    if how == "unsigned":
        r = client.post("/v1/connectors/zammad", content=raw)
    elif how == "wrong_secret":
        r = zammad_post(client, payload, secret="nope")
    elif how == "sha256_scheme":
        r = zammad_post(client, payload, signature="sha256=" + hmac.new(ZM_SECRET.encode(), raw, hashlib.sha256).hexdigest())
    else:
        sig = "sha1=" + hmac.new(ZM_SECRET.encode(), raw, hashlib.sha1).hexdigest()
        tampered = copy.deepcopy(payload)
        tampered["article"]["id"] = 302
        r = zammad_post(client, tampered, signature=sig)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert count(service, Message) == 0 and count(service, ConnectorRef) == 0


@pytest.mark.parametrize("change, reason", [
    ({"sender": "Agent"}, "not Customer"),
    ({"sender": "System"}, "not Customer"),
    ({"internal": True}, "internal"),
])
def test_zammad_agent_and_internal_articles_are_ignored(app_for, change, reason):
    service, client = app_for()
    payload = fixture("zammad_trigger.json")
    payload["article"].update(change)
    r = zammad_post(client, payload)
    assert r.status_code == 200 and reason in r.json()["ignored"]
    assert count(service, Message) == 0


def test_zammad_trigger_without_article_is_ignored():
    payload = fixture("zammad_trigger.json")
    payload["article"] = {}
    assert isinstance(from_zammad(payload), Ignored)


# ----------------------------------------------------------------------------- write-back


def test_chatwoot_writeback_after_triage_and_after_a_review_correction(app_for, chatwoot, clock):
    service, client = app_for(chatwoot_url=chatwoot.url)
    base = "/api/v1/accounts/2/conversations/128"
    chatwoot.labels[base] = ["vip-customer"]  # an agent's own label, kept by every write-back
    case = chatwoot_post(client, fixture("chatwoot_message_created.json")).json()["case"]
    assert chatwoot.calls == []  # ingestion itself never calls the helpdesk
    assert client.app.state.dispatcher.run_once() == 2  # the app's dispatcher, with the app's credentials
    assert [(c["method"], c["path"]) for c in chatwoot.calls] == [("GET", f"{base}/labels"), ("POST", f"{base}/labels"),
                                                                 ("POST", f"{base}/toggle_priority")]
    assert all(c["headers"]["api_access_token"] == CW_TOKEN for c in chatwoot.calls)
    assert chatwoot.calls[1]["body"] == {"labels": ["vip-customer", *expected_tags(case, CW_PREFIX)]}
    assert chatwoot.calls[2]["body"] == {"priority": CW_PRIORITY[case["priority_grade"]]}

    # An agent adds a label; then a reviewer corrects the case in the review queue (the review
    # UI's own code path): the helpdesk gets the new labels and priority, the agent's stay.
    chatwoot.calls.clear()
    chatwoot.labels[base].append("refund-approved")
    review = ReviewService(service.db, service)
    item = review.item(case["id"])
    review.decide(case["id"], "correct", "li", item["version"], labels=other_labels(case))
    corrected = service.get_case(case["id"]).model_dump()
    assert dispatcher_for(service, clock).run_once() == 2
    assert chatwoot.bodies("POST", "/labels") == [
        {"labels": ["vip-customer", "refund-approved", *expected_tags(corrected, CW_PREFIX)]}]
    assert chatwoot.labels[base] == ["vip-customer", "refund-approved", *expected_tags(corrected, CW_PREFIX)]
    assert chatwoot.bodies("POST", "/toggle_priority") == [{"priority": CW_PRIORITY[corrected["priority_grade"]]}]
    with service.db.session() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.connector == "chatwoot")).all()
        assert [r.status for r in rows] == ["delivered"] * 4 and all(r.case_id == case["id"] for r in rows)


def test_zammad_writeback_adds_tags_sets_priority_and_removes_stale_tags_after_correction(app_for, zammad, clock):
    service, client = app_for(zammad_url=zammad.url)
    case = zammad_post(client, fixture("zammad_trigger.json")).json()["case"]
    dispatcher = dispatcher_for(service, clock)
    dispatcher.run_once()
    tags = expected_tags(case)
    assert zammad.bodies("POST", "/api/v1/tags/add") == [{"item": t, "object": "Ticket", "o_id": 77} for t in tags]
    assert zammad.bodies("PUT", "/api/v1/tickets/77") == [{"priority_id": ZM_PRIORITY[case["priority_grade"]]}]
    assert all(c["headers"]["Authorization"] == f"Token token={ZM_TOKEN}" for c in zammad.calls)

    zammad.calls.clear()
    review = ReviewService(service.db, service)
    review.decide(case["id"], "correct", "li", review.item(case["id"])["version"], labels=other_labels(case))
    corrected = service.get_case(case["id"]).model_dump()
    dispatcher.run_once()
    new_tags = expected_tags(corrected)
    assert zammad.bodies("DELETE", "/api/v1/tags/remove") == [
        {"item": t, "object": "Ticket", "o_id": 77} for t in tags if t not in new_tags]
    assert zammad.bodies("POST", "/api/v1/tags/add") == [{"item": t, "object": "Ticket", "o_id": 77} for t in new_tags]
    assert zammad.bodies("PUT", "/api/v1/tickets/77") == [{"priority_id": ZM_PRIORITY[corrected["priority_grade"]]}]
    # Removals go first, so a tag that stays is never removed after being added.
    methods = [c["method"] for c in zammad.calls]
    assert methods.index("POST") > max((i for i, m in enumerate(methods) if m == "DELETE"), default=-1)


def test_a_failing_helpdesk_is_retried_and_recorded_and_never_slows_ingestion(app_for, chatwoot, clock):
    service, client = app_for(chatwoot_url=chatwoot.url)
    chatwoot.fail_with = 500
    r = chatwoot_post(client, fixture("chatwoot_message_created.json"))
    assert r.status_code == 201
    assert chatwoot.calls == []  # the request finished without waiting on the helpdesk
    dispatcher = dispatcher_for(service, clock)
    assert dispatcher.run_once() == 2
    assert [c["method"] for c in chatwoot.calls] == ["GET", "POST"]  # the labels read failed already
    with service.db.session() as s:
        rows = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert [(d.status, d.attempts) for d in rows] == [("pending", 1), ("pending", 1)]
        assert all(d.next_attempt_at > clock() and "HTTP 500" in d.last_error for d in rows)
        assert [a.status_code for a in s.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).all()] == [None, 500]
    assert dispatcher.run_once() == 0  # backing off
    # Meanwhile more complaints come in and are triaged at once.
    second = {**fixture("chatwoot_message_created.json"), "id": 4712}
    assert chatwoot_post(client, second).status_code == 201
    chatwoot.fail_with = None
    clock.advance(seconds=3)
    dispatcher.run_once()
    with service.db.session() as s:
        rows = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        # The second message's calls superseded the first's still-waiting ones (same conversation).
        assert [d.status for d in rows] == ["superseded", "superseded", "delivered", "delivered"]
        assert [a.status_code for a in s.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).all()] == [None, 500, 200, 200]


def test_a_wrong_token_is_recorded_per_attempt(app_for, chatwoot, clock):
    service, client = app_for(chatwoot_url=chatwoot.url)
    service.settings.chatwoot_api_token = "revoked"
    chatwoot_post(client, fixture("chatwoot_message_created.json"))
    dispatcher_for(service, clock).run_once()
    with service.db.session() as s:
        attempts = s.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).all()
        # labels: the read before the write is refused; priority: the write itself is
        assert [a.status_code for a in attempts] == [None, 401]
        assert "HTTP 401" in attempts[0].error and "reading the conversation's labels" in attempts[0].error
    service.settings.chatwoot_api_token = ""  # token removed from the settings meanwhile
    clock.advance(seconds=5)
    dispatcher_for(service, clock).run_once()
    with service.db.session() as s:
        last = s.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id.desc())).first()
        assert "TRIAGE_CHATWOOT_API_TOKEN" in last.error


def test_a_calm_follow_up_does_not_lower_the_conversation(app_for, chatwoot, clock):
    service, client = app_for(chatwoot_url=chatwoot.url)
    chatwoot.labels["/api/v1/accounts/2/conversations/128"] = ["vip-customer"]
    first = chatwoot_post(client, fixture("chatwoot_message_created.json")).json()["case"]
    service.apply_labels(first["id"], {"dispute_type": "quality", "urgency": 1, "emotion": "angry"}, actor="li")
    follow_up = {**fixture("chatwoot_message_created.json"), "id": 4713, "content": "好的，谢谢，等你们消息"}
    second = chatwoot_post(client, follow_up).json()["case"]
    service.apply_labels(second["id"], {"dispute_type": "other", "urgency": 3, "emotion": "calm",
                                        "escalation": False}, actor="li")
    dispatcher_for(service, clock).run_once()
    angry = service.get_case(first["id"]).model_dump()
    # Every call after the first correction shows the angry complaint, the most urgent open case.
    for body in chatwoot.bodies("POST", "/labels"):
        assert body == {"labels": ["vip-customer", *expected_tags(angry, CW_PREFIX)]}
    assert chatwoot.bodies("POST", "/toggle_priority")[-1] == {"priority": CW_PRIORITY[angry["priority_grade"]]}
    # Once the angry case is resolved, the thread shows the calm one.
    service.record_case_event(first["id"], "resolved", actor="li")
    service.apply_labels(second["id"], {"urgency": 2}, actor="li")
    dispatcher_for(service, clock).run_once()
    calm = service.get_case(second["id"]).model_dump()
    assert chatwoot.bodies("POST", "/labels")[-1] == {"labels": ["vip-customer", *expected_tags(calm, CW_PREFIX)]}


def test_no_writeback_without_base_url_and_none_for_plain_api_messages(app_for, chatwoot):
    service, client = app_for()  # connectors on, write-back off
    chatwoot_post(client, fixture("chatwoot_message_created.json"))
    assert count(service, WebhookDelivery) == 0
    service2, client2 = app_for(chatwoot_url=chatwoot.url)
    service2.create_user("desk", "integration")
    key = service2.create_api_key("desk", ["ingest"])[1]
    r = client2.post("/v1/messages", json={"source": "chatwoot", "external_id": "x-1", "text": "麦克风没声音"},
                     headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201
    assert count(service2, WebhookDelivery) == 0  # no references: nothing to write back to


# ----------------------------------------------------------------------------- generic field map


FRESHDESK_MAP = {"text": "/ticket/description", "external_id": "/ticket/id", "channel": "/ticket/source_name",
                 "customer": "/ticket/requester/id", "product": "/ticket/custom_fields/product",
                 "thread": "/ticket/id", "received_at": "/ticket/created_at"}


@pytest.fixture
def generic(app_for):
    service, client = app_for(connector_maps={"deskpro": FRESHDESK_MAP})
    service.create_user("desk", "integration")
    key = service.create_api_key("desk", ["ingest"])[1]
    return service, client, {"Authorization": f"Bearer {key}"}


def test_generic_field_map_ingests_any_helpdesk(generic):
    service, client, headers = generic
    payload = {"ticket": {"id": 555, "description": "摄像头对焦一直失败", "source_name": "portal",
                          "requester": {"id": "u-9"}, "custom_fields": {"product": "4K摄像头"},
                          "created_at": "2026-05-06T00:50:00+00:00"}}
    r = client.post("/v1/connectors/generic/deskpro", json=payload, headers=headers)
    assert r.status_code == 201, r.text
    message = service.get_message(r.json()["case"]["message_id"])
    assert (message.source, message.external_id, message.channel, message.customer_ref) == ("deskpro", "555", "portal", "u-9")
    assert refs_of(service, "deskpro", "555").refs == {"product": "4K摄像头", "thread": "555"}
    assert client.post("/v1/connectors/generic/deskpro", json=payload, headers=headers).status_code == 200
    assert count(service, Case) == 1


def test_generic_field_map_errors(generic):
    service, client, headers = generic
    r = client.post("/v1/connectors/generic/deskpro", json={"ticket": {"id": 1}}, headers=headers)
    assert r.status_code == 422 and r.json()["field"] == "text" and "/ticket/description" in r.json()["message"]
    assert client.post("/v1/connectors/generic/other", json={}, headers=headers).status_code == 404
    assert client.post("/v1/connectors/generic/deskpro", json={"ticket": {"id": 1, "description": "x"}}).status_code == 401
    assert count(service, Message) == 0 and count(service, ConnectorRef) == 0


def test_settings_refuse_incomplete_connectors():
    from pydantic import ValidationError

    from triage.settings import Settings

    with pytest.raises(ValidationError, match="TRIAGE_CHATWOOT_WEBHOOK_SECRET"):
        Settings(chatwoot_enabled=True)
    with pytest.raises(ValidationError, match="TRIAGE_ZAMMAD_API_TOKEN"):
        Settings(zammad_base_url="https://zammad.example")
    with pytest.raises(ValidationError, match="PRIORITY_MAP"):
        Settings(chatwoot_priority_map={1: "critical"})
    with pytest.raises(ValidationError, match="JSON pointer"):
        Settings(connector_maps={"x": {"text": "ticket/text", "external_id": "/id"}})
    with pytest.raises(ValidationError, match="built-in"):
        Settings(connector_maps={"zammad": {"text": "/a", "external_id": "/b"}})


# ----------------------------------------------------------------------------- pure mapping


def test_json_pointer_escapes_and_arrays():
    doc = {"a/b": {"m~n": [10, {"x": 1}]}}
    assert json_pointer(doc, "/a~1b/m~0n/1/x") == 1
    assert json_pointer(doc, "/a~1b/m~0n/0") == 10
    from triage.connectors import _MISSING

    for absent in ("/a~1b/m~0n/5", "/a~1b/m~0n/x", "/nope", "/x/y", "/a~1b/m~0n/0/deeper"):
        assert json_pointer(doc, absent) is _MISSING, absent


def test_html_to_text_keeps_lines_and_drops_markup():
    assert html_to_text("<div>第一行</div><div>第二&amp;行<br>第三</div><style>p{}</style>") == "第一行\n第二&行\n第三"


def test_chatwoot_mapping_needs_ids():
    payload = fixture("chatwoot_message_created.json")
    payload["id"] = [1]
    from triage.errors import InvalidInput

    with pytest.raises(InvalidInput, match="id must be a number or a string"):
        from_chatwoot(payload)


def test_long_texts_and_a_helpdesk_clock_ahead_are_adapted_not_refused(app_for, clock):
    service, client = app_for(max_text_chars=40)
    payload = {**fixture("chatwoot_message_created.json"), "content": "麦克风有电流声，" * 20,
               "created_at": "2026-05-06T02:00:00.000Z"}  # an hour ahead of our clock
    r = chatwoot_post(client, payload)
    assert r.status_code == 201, r.text
    message = service.get_message(r.json()["case"]["message_id"])
    assert len(message.text) <= 40 and message.received_at == clock()
