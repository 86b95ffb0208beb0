"""The typed Python client (triage.client): every route and field it relies on exists in the
app's OpenAPI document, and it works against the app on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app

pytest_plugins = ["fixtures_db"]  # database fixtures over SQLite and PostgreSQL
from triage.client import (
    ROUTES,
    BatchOutcome,
    Breach,
    Case,
    IngestOutcome,
    Message,
    TriageAPIError,
    TriageClient,
)
from triage.settings import Settings


@pytest.fixture(scope="module")
def openapi(tmp_path_factory):
    app = create_app(Settings(var_dir=tmp_path_factory.mktemp("var")), models=None, background=False)
    return app.openapi()


def _schema(openapi, name: str) -> dict:
    return openapi["components"]["schemas"][name]


def test_every_client_route_is_in_the_openapi_document(openapi):
    for method, path in ROUTES:
        assert method in openapi["paths"].get(path, {}), f"{method.upper()} {path} is not served"


@pytest.mark.parametrize("model, schema", [(Case, "CaseView"), (Message, "MessageView"), (IngestOutcome, "IngestResult"),
                                           (Breach, "SlaEventView")])
def test_client_models_read_fields_the_api_documents(openapi, model, schema):
    documented = _schema(openapi, schema)["properties"]
    assert set(model.model_fields) <= set(documented), set(model.model_fields) - set(documented)


def test_batch_outcome_reads_the_servers_batch_result():
    from api.routes import BatchResult  # answered as a plain 200 body, so not an OpenAPI component

    assert set(BatchOutcome.model_fields) == set(BatchResult.model_json_schema()["properties"])


def test_client_request_bodies_match_the_documented_inputs(openapi):
    single = openapi["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]
    assert {"source", "external_id", "text", "channel", "customer_ref", "received_at", "product", "batch",
            "order_id"} == set(single["properties"])
    assert {"event", "at", "note", "agent", "satisfaction"} == set(_schema(openapi, "CaseEventIn")["properties"])
    assert {"action", "labels", "note", "expected_version"} == set(_schema(openapi, "ReviewIn")["properties"])


@pytest.fixture
def served(make_service):
    service = make_service()
    service.create_user("desk", "integration")
    service.create_user("li", "reviewer")
    keys = {"ingest": service.create_api_key("desk", ["ingest"])[1], "review": service.create_api_key("li", ["review"])[1]}
    with TestClient(create_app(service.settings, service=service, background=False)) as http:
        yield service, http, keys


def test_client_against_the_app(served):
    service, http, keys = served
    with TriageClient("http://testserver", keys["ingest"], http=http) as triage:
        first = triage.ingest("mydesk", "T-1", "摄像头用了两天就黑屏，开不了机", channel="hotline", customer_ref="c-1",
                              product="C1摄像机", order_id="DD-9")
        assert first.created and isinstance(first.case, Case) and first.case.external_id == "T-1"
        assert (first.case.product, first.case.order_id) == ("CAM-4K60", "DD-9")
        again = triage.ingest("mydesk", "T-1", "摄像头用了两天就黑屏，开不了机")
        assert not again.created and again.case.id == first.case.id
        batch = triage.ingest_many([{"source": "mydesk", "external_id": "T-2", "text": "补光灯一直闪"},
                                    {"source": "mydesk", "external_id": "T-3", "text": ""}])
        assert (batch.created, batch.errors) == (1, 1) and batch.results[1].error["field"] == "text"
        assert triage.get_case(first.case.id).grade == first.case.grade
        message = triage.get_message(first.case.message_id)
        assert (message.channel, message.customer_ref, message.case.id) == ("hotline", "c-1", first.case.id)
        page, after = triage.list_cases(limit=1)
        assert len(page) == 1 and after == page[0].id
        assert [c.external_id for c in triage.iter_cases(limit=1)] == ["T-1", "T-2"]
        responded = triage.record_case_event(first.case.id, "first_response", agent="小王")
        assert responded.first_response_at is not None and responded.owner == "小王"
        with pytest.raises(TriageAPIError) as err:
            triage.ingest("mydesk", "T-4", "   ")
        assert (err.value.status_code, err.value.error, err.value.field) == (422, "invalid_input", "text")
        with pytest.raises(TriageAPIError) as err:
            triage.get_case(99999)
        assert err.value.status_code == 404
    reviewer = TriageClient("http://testserver", keys["review"], http=http)
    items, total = reviewer.review_queue()
    assert total == 2
    item = next(i for i in items if i["case_id"] == first.case.id)
    decided = reviewer.review(first.case.id, "correct", item["version"],
                              labels={"urgency": 1 if first.case.grade != 1 else 2})
    assert decided["action"] == "correct" and service.get_case(first.case.id).labels_source == "review"
    with pytest.raises(TriageAPIError) as err:
        TriageClient("http://testserver", "tri_wrong", http=http).get_case(first.case.id)
    assert err.value.status_code == 401


def test_ingest_retries_a_503_and_other_calls_do_not():
    answers = [httpx.Response(503, json={"error": "unavailable", "message": "db"}, headers={"Retry-After": "0"}),
               httpx.Response(201, json={"index": 0, "created": True, "case": None})]
    seen = []

    def handler(request):
        seen.append(request.url.path)
        return answers.pop(0) if answers else httpx.Response(503, json={"error": "unavailable", "message": "db"})

    client = TriageClient("http://x", "k", http=httpx.Client(transport=httpx.MockTransport(handler)))
    assert client.ingest("s", "1", "声卡坏了").created
    assert seen == ["/v1/messages", "/v1/messages"]
    with pytest.raises(TriageAPIError) as err:
        client.get_case(1)
    assert err.value.status_code == 503 and seen[-1] == "/v1/cases/1" and len(seen) == 3
