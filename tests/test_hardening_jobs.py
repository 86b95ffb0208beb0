"""Issue 10.8: webhook receivers are served concurrently (a hanging one delays only its own
deliveries), delivery ids stay the same across retries, and a server started without a
model becomes ready as soon as a current model appears in the store."""

from __future__ import annotations

import json
import time
from test_webhooks import Receiver

from sqlalchemy import select

from triage.jobs.webhooks import WebhookDispatcher
from triage.store.outbox import enqueue
from triage.store.tables import WebhookDelivery

pytest_plugins = ["fixtures_db"]
SECRET = "test-secret"


def HoldingReceiver(hold: bool = False, statuses=(200,)) -> Receiver:
    return Receiver(statuses, hold=hold)


def test_a_hanging_receiver_delays_only_its_own_deliveries(database, clock):
    slow, fast = HoldingReceiver(hold=True), HoldingReceiver()
    with database.session(write=True) as s:
        for i in range(3):
            enqueue(s, "triaged", slow.url, {"event": "triaged", "n": i}, now=clock())
        for i in range(5):
            enqueue(s, "triaged", fast.url, {"event": "triaged", "n": i}, now=clock())
    sender = WebhookDispatcher(database, SECRET, now=clock, timeout_s=20.0)
    try:
        assert sender.run_once(wait=False) == 2  # one sender job per receiver
        def statuses() -> list[str]:
            with database.session() as s:
                return [r.status for r in s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id))]

        # The receiver sees the 5th request before the sender records it as delivered: wait
        # for the database, not for the receiver.
        for _ in range(200):
            if len(fast.requests) == 5 and statuses()[3:] == ["delivered"] * 5:
                break
            time.sleep(0.05)
        assert len(fast.requests) == 5 and len(slow.requests) == 1  # the slow one still holds its first
        assert sender.run_once(wait=False) == 0  # nothing new is started for a receiver still busy
        assert statuses() == ["pending"] * 3 + ["delivered"] * 5
        slow.release.set()
    finally:
        sender.close()
        slow.close()
        fast.close()
    with database.session() as s:
        assert all(r.status == "delivered" for r in s.scalars(select(WebhookDelivery)))
    assert sorted(json.loads(r["body"])["n"] for r in slow.requests) == [0, 1, 2]


def test_the_delivery_id_is_the_same_on_every_attempt(database, clock):
    receiver = HoldingReceiver(statuses=(500, 503, 200))
    with database.session(write=True) as s:
        enqueue(s, "triaged", receiver.url, {"event": "triaged"}, now=clock())
    sender = WebhookDispatcher(database, SECRET, now=clock, timeout_s=5.0, backoff_base_s=1)
    try:
        for _ in range(3):
            assert sender.run_once() == 1
            clock.advance(seconds=60)
    finally:
        sender.close()
        receiver.close()
    ids = {(r["headers"]["X-Triage-Delivery"], json.loads(r["body"])["delivery_id"]) for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1
    [(header, field)] = ids
    assert int(header) == field


def test_a_server_started_without_a_model_becomes_ready_when_one_appears(make_service, tiny_backend, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from models.store import ModelStore

    service = make_service(model_dir=tmp_path / "store")
    service.models.swap(None)
    service.create_user("desk", "integration")
    key = service.create_api_key("desk", ["ingest"])[1]
    app = create_app(service.settings, service=service, background=False)
    app.state.model_watch.min_interval_s = 0
    with TestClient(app) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["model"] == "not loaded"
        store = ModelStore(service.settings.effective_model_dir)
        version = store.save(tiny_backend, {"metrics": {}})
        assert c.get("/readyz").status_code == 503  # saved, not current: still not ready
        store.set_current(version)
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["model"] == version
        r = c.post("/v1/messages", json={"source": "s", "external_id": "1", "text": "摄像头黑屏"},
                   headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201, r.text
