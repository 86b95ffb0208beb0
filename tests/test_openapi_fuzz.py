"""Schemathesis against the app's own OpenAPI document, in process (ASGI, no network), with
its default checks: no server error, no status or body the document does not declare,
schema-violating requests refused, schema-valid ones accepted.

Bounded: a fixed number of examples per operation and mode, derandomized (a fixed seed),
on SQLite with a few cases in store so ids and pages hit real rows.
"""

from __future__ import annotations

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from api.app import create_app
from triage.policy import Policy
from triage.service import TriageService
from triage.settings import Settings
from triage.store import Database

pytest_plugins = ["fixtures_db"]
EXAMPLES = 25
# A rule the schema cannot express (received_at not in the future, expected_version required
# to confirm or correct, a known label per head) is a 422 for schema-valid data: accepted.
ACCEPTED_VALID = ["2xx", "401", "403", "404", "409", "422"]


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory, sqlite_template, tiny_triager):
    import shutil

    tmp = tmp_path_factory.mktemp("fuzz")
    shutil.copyfile(sqlite_template, tmp / "triage.db")
    db = Database(f"sqlite:///{tmp / 'triage.db'}")
    service = TriageService(db, Policy.load(), tiny_triager, Settings(var_dir=tmp / "var", sla_monitor_interval_s=0))
    service.create_user("root", "admin")
    key = service.create_api_key("root", ["admin"])[1]
    service.ingest_many([{"source": "fuzz", "external_id": f"F-{i}", "text": "摄像头用了两天就黑屏，开不了机"}
                         for i in range(3)])
    app = create_app(service.settings, service=service, background=False)
    with TestClient(app):  # runs the lifespan (coalescer) once
        yield app, key
    db.dispose()


def operations(app):
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_VALID}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    return schema, [result.ok() for result in schema.get_all_operations()]


def test_openapi_document_holds_for_generated_requests(fuzzed_app):
    app, key = fuzzed_app
    schema, ops = operations(app)
    assert len(ops) >= 15
    failures = []
    for operation in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                case.call_and_validate(headers={"Authorization": f"Bearer {key}"})

            try:
                check()
            except hypothesis.errors.Unsatisfiable:  # nothing to negate: no parameters, no body
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, report them together
                failures.append(f"{mode.value} {operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
