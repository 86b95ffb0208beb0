"""Issue 10 hardening, against SQLite and PostgreSQL: malformed input of every kind is a 422
JSON body naming the field (never a 500 or plain text), a batch rejects bad items one by
one and stores the good ones, ids beyond 64 bits are refused."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from test_api import auth, body, client, count, keys, service  # noqa: F401 - fixtures
from triage.store import Message

pytest_plugins = ["fixtures_db"]


@pytest.fixture
def loose_client(service):
    """A client that answers a server error as a 500 response instead of raising it."""
    app = create_app(service.settings, service=service, background=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def assert_422(response, field):
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "invalid_input"
    assert response.json()["field"] == field, response.json()


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-14:00",
                                    "1999-12-31T23:59:59+00:00"])
def test_received_at_out_of_range_is_422(loose_client, keys, service, moment):
    r = loose_client.post("/v1/messages", json=body(received_at=moment), headers=auth(keys["ingest"]))
    assert_422(r, "received_at")
    assert count(service) == 0


@pytest.mark.parametrize("field", ["source", "external_id", "channel", "customer_ref", "text"])
def test_nul_characters_are_422_on_both_databases(loose_client, keys, service, field):
    payload = body(**{field: "ab\x00cd"}) if field != "text" else body(text="摄像头\x00黑屏")
    r = loose_client.post("/v1/messages", json=payload, headers=auth(keys["ingest"]))
    assert_422(r, field)
    assert "NUL" in r.json()["message"]
    assert count(service) == 0


def test_batch_rejects_bad_items_one_by_one_and_stores_the_good(loose_client, keys, service):
    items = [body("good-1"), body("bad-date", received_at="0001-01-01T00:00:00+14:00"),
             body("bad-nul", channel="live\x00room"), body("good-2"), body("bad-nul2", source="zen\x00desk"),
             body("bad-late", received_at="9999-12-31T23:00:00-14:00")]
    r = loose_client.post("/v1/messages", json={"messages": items}, headers=auth(keys["ingest"]))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["error"]["field"] if x["error"] else None for x in results] == [
        None, "received_at", "channel", None, "source", "received_at"]
    assert r.json()["created"] == 2 and r.json()["errors"] == 4
    with service.db.session() as s:
        assert sorted(s.scalars(select(Message.external_id))) == ["good-1", "good-2"]


def test_a_batch_item_that_fails_to_store_fails_alone(client, keys, service, monkeypatch):
    """Whatever slips past validation and breaks the insert costs only its own item."""
    original = service.ingestion._create_many

    def create_many(session, entries):
        if any(msg.external_id == "poison" for msg, *_ in entries):
            raise ValueError("the database refused it")
        return original(session, entries)

    monkeypatch.setattr(service.ingestion, "_create_many", create_many)
    r = client.post("/v1/messages", json={"messages": [body("a"), body("poison"), body("b")]},
                    headers=auth(keys["ingest"]))
    assert r.status_code == 200
    assert [bool(x["error"]) for x in r.json()["results"]] == [False, True, False]
    assert "the database refused it" in r.json()["results"][1]["error"]["message"]
    assert count(service) == 2


def test_case_event_time_out_of_range_and_nul_note(loose_client, keys, service):
    case_id = loose_client.post("/v1/messages", json=body(), headers=auth(keys["ingest"])).json()["case"]["id"]
    for at in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-14:00"):
        r = loose_client.post(f"/v1/cases/{case_id}/events", json={"event": "resolved", "at": at},
                              headers=auth(keys["ingest"]))
        assert_422(r, "at")
    r = loose_client.post(f"/v1/cases/{case_id}/events", json={"event": "resolved", "note": "a\x00b"},
                          headers=auth(keys["ingest"]))
    assert_422(r, "note")


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/cases/1/events"])
def test_invalid_utf8_and_deep_nesting_are_422_naming_the_problem(loose_client, keys, path):
    headers = {**auth(keys["admin"]), "content-type": "application/json"}
    r = loose_client.post(path, content=b'{"source": "zendesk", "text": "\xff\xfe"}', headers=headers)
    assert_422(r, "body")
    assert "UTF-8" in r.json()["message"]
    for nested in ("[" * 1000 + "]" * 1000, '{"a":' * 1000 + "1" + "}" * 1000,
                   '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        r = loose_client.post(path, content=nested.encode(), headers=headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_input" and r.json()["field"] and r.json()["message"]


BIG = str(2**64 + 1)


@pytest.mark.parametrize("method,path,payload", [
    ("post", f"/v1/cases/{BIG}/events", {"event": "resolved"}),
    ("post", f"/v1/cases/{BIG}/review", {"action": "skip"}),
    ("get", f"/v1/cases/{BIG}", None),
    ("get", f"/v1/messages/{BIG}", None),
    ("get", f"/v1/review/queue?offset={BIG}", None),
    ("get", f"/v1/sla/breaches?after_id={BIG}", None),
    ("get", f"/v1/cases?after_id={BIG}", None),
])
def test_ids_and_offsets_beyond_64_bits_are_422(loose_client, keys, method, path, payload):
    r = getattr(loose_client, method)(path, headers=auth(keys["admin"]), **({"json": payload} if payload else {}))
    assert r.status_code == 422, r.text
    assert r.json()["field"] in ("case_id", "message_id", "offset", "after_id")


def test_a_well_formed_id_that_does_not_exist_is_404(loose_client, keys):
    big = str(2**63 - 1)
    assert loose_client.get(f"/v1/cases/{big}", headers=auth(keys["admin"])).status_code == 404
    r = loose_client.post(f"/v1/cases/{big}/review", json={"action": "skip"}, headers=auth(keys["admin"]))
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_times_must_be_rfc3339_with_an_offset(loose_client, keys, service):
    for moment in (1700000000, "2026-05-01", "2026-05-01T10:00:00"):
        r = loose_client.post("/v1/messages", json=body(received_at=moment), headers=auth(keys["ingest"]))
        assert_422(r, "received_at")
        r = loose_client.get(f"/v1/sla/breaches?since={moment}", headers=auth(keys["ingest"]))
        assert_422(r, "since")
    assert count(service) == 0


def test_expected_version_must_be_an_integer(loose_client, keys):
    case_id = loose_client.post("/v1/messages", json=body(), headers=auth(keys["ingest"])).json()["case"]["id"]
    for bad in (False, True, "1", 1.0):
        r = loose_client.post(f"/v1/cases/{case_id}/review", json={"action": "confirm", "expected_version": bad},
                              headers=auth(keys["review"]))
        assert_422(r, "expected_version")
    r = loose_client.post(f"/v1/cases/{case_id}/review", json={"action": "confirm", "expected_version": 1},
                          headers=auth(keys["review"]))
    assert r.status_code == 200, r.text


def test_openapi_declares_error_statuses_and_agrees_with_the_validator(loose_client):
    doc = loose_client.get("/openapi.json").json()
    paths = doc["paths"]
    for path, methods in paths.items():
        for method, op in methods.items():
            if path.startswith("/v1/") and not path.startswith("/v1/connectors/"):
                assert {"401", "403", "422", "503"} <= set(op["responses"]), (method, path)
            for status, response in op["responses"].items():
                if status.startswith("4") and path.startswith("/v1/"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert {"404", "409"} <= set(paths["/v1/cases/{case_id}/review"]["post"]["responses"])
    assert {"404", "409"} <= set(paths["/v1/cases/{case_id}/events"]["post"]["responses"])
    single = paths["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]
    assert single["properties"]["text"]["minLength"] == 1
    assert single["properties"]["source"]["pattern"] == "^[^\\x00]*$"
    version = doc["components"]["schemas"]["ReviewIn"]["properties"]["expected_version"]
    strict = version["anyOf"][0]
    assert strict["type"] == "integer" and strict["minimum"] == 1 and abs(strict["maximum"] - 2**63) < 2**11


def test_nul_in_a_review_note_or_model_change_reason_is_422(loose_client, keys):
    case_id = loose_client.post("/v1/messages", json=body(), headers=auth(keys["ingest"])).json()["case"]["id"]
    r = loose_client.post(f"/v1/cases/{case_id}/review", json={"action": "skip", "note": "a\x00b"},
                          headers=auth(keys["review"]))
    assert_422(r, "note")
    r = loose_client.post("/v1/models/v1/promote", json={"reason": "a\x00b"}, headers=auth(keys["admin"]))
    assert_422(r, "reason")


@pytest.mark.parametrize("path,field", [("/v1/cases?tier=a%00b", "tier"), ("/v1/review/queue?tier=%00", "tier"),
                                        ("/v1/models/v%001/promote", "version")])
def test_nul_in_a_path_or_query_parameter_is_422(loose_client, keys, path, field):
    call = loose_client.post if path.endswith("promote") else loose_client.get
    assert_422(call(path, headers=auth(keys["admin"])), field)


@pytest.mark.parametrize("value", [1e20, -1e20, float("nan"), 10**30, "0001-01-01T00:00:00+14:00"])
def test_a_connector_time_outside_the_years_is_left_out(value):
    from triage.connectors import _timestamp

    moment = _timestamp(value)
    assert moment is None or moment.startswith("0001-")  # the API then refuses it as received_at (422)
