"""Outbound webhooks: signed JSON, retries with backoff, every attempt recorded, a dead
receiver never blocks ingestion, and two dispatchers never send one delivery twice."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from fixtures_db import T0

pytest_plugins = ["fixtures_db"]  # database fixtures over SQLite and PostgreSQL
from triage.jobs.webhooks import WebhookDispatcher, sign, verify_signature
from triage.store import Database, WebhookAttempt, WebhookDelivery
from triage.store.outbox import enqueue

SECRET = "test-secret"


class Receiver:
    """A local HTTP receiver that answers with the given status codes in turn (last repeats);
    with ``hold``, each request waits until ``release`` is set (a hanging receiver)."""

    def __init__(self, statuses=(200,), hold: bool = False):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                receiver.release.wait(30)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def dispatcher(database, clock, **kw) -> WebhookDispatcher:
    return WebhookDispatcher(database, SECRET, now=clock, timeout_s=2.0, **kw)


def deliveries(database):
    with database.session() as s:
        return s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()


def attempts(database):
    with database.session() as s:
        return s.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).all()


def test_signed_delivery(make_service, database, clock, receiver):
    service = make_service(webhook_urls=[receiver.url])
    case = service.ingest({"source": "shop", "external_id": "1", "text": "麦克风有电流声"}).case
    sender = dispatcher(database, clock)
    assert sender.run_once() == 1
    sender.close()
    [request] = receiver.requests
    headers, body = request["headers"], request["body"]
    assert headers["X-Triage-Event"] == "triaged"
    assert verify_signature(SECRET, headers["X-Triage-Timestamp"], body, headers["X-Triage-Signature"])
    payload = json.loads(body)
    assert payload["event"] == "triaged" and payload["case"]["id"] == case.id
    assert payload["case"]["respond_due_at"] and payload["delivery_id"] == int(headers["X-Triage-Delivery"])
    [delivery] = deliveries(database)
    assert delivery.status == "delivered" and delivery.attempts == 1 and delivery.delivered_at == clock()
    [attempt] = attempts(database)
    assert attempt.status_code == 200 and attempt.error is None


def test_signature_checks():
    body = b'{"event":"triaged"}'
    now = 1_800_000_000
    signature = sign(SECRET, str(now), body)
    assert verify_signature(SECRET, str(now), body, signature, now=now)
    assert not verify_signature(SECRET, str(now), body + b" ", signature, now=now)
    assert not verify_signature("other", str(now), body, signature, now=now)
    assert not verify_signature(SECRET, str(now), body, signature, now=now + 3600)  # replayed later
    assert not verify_signature(SECRET, "yesterday", body, signature, now=now)


def test_retries_with_backoff_and_records_every_attempt(make_service, database, clock):
    failing_then_ok = Receiver(statuses=(500, 503, 200))
    try:
        service = make_service(webhook_urls=[failing_then_ok.url])
        service.ingest({"source": "shop", "external_id": "1", "text": "快递五天才到"})
        sender = dispatcher(database, clock, backoff_base_s=10)
        assert sender.run_once() == 1
        [delivery] = deliveries(database)
        assert delivery.status == "pending" and delivery.attempts == 1
        assert delivery.next_attempt_at == T0 + sender.backoff(1)
        assert sender.run_once() == 0  # not due yet
        clock.advance(seconds=10)
        assert sender.run_once() == 1
        assert deliveries(database)[0].next_attempt_at == clock() + sender.backoff(2)
        assert sender.backoff(2).total_seconds() == 20
        clock.advance(seconds=20)
        assert sender.run_once() == 1
        sender.close()
    finally:
        failing_then_ok.close()
    [delivery] = deliveries(database)
    assert delivery.status == "delivered" and delivery.attempts == 3
    assert [a.status_code for a in attempts(database)] == [500, 503, 200]
    assert "HTTP 500" in attempts(database)[0].error
    assert len(failing_then_ok.requests) == 3


def test_dead_receiver_never_blocks_ingestion(make_service, database, clock):
    service = make_service(webhook_urls=[closed_port_url()])
    started = time.perf_counter()
    for i in range(5):
        assert service.ingest({"source": "shop", "external_id": str(i), "text": "补光灯一直闪"}).created
    assert time.perf_counter() - started < 5  # no network call on the ingestion path
    assert attempts(database) == []
    sender = dispatcher(database, clock, max_attempts=3, backoff_base_s=1)
    for _ in range(3):
        sender.run_once()
        clock.advance(seconds=60)
    sender.close()
    rows = deliveries(database)
    assert [d.status for d in rows] == ["failed"] * 5
    assert all(d.attempts == 3 for d in rows)
    recorded = attempts(database)
    assert len(recorded) == 15 and all(a.status_code is None and "Connect" in a.error for a in recorded)


def test_two_dispatchers_send_each_delivery_once(database, database_url, clock, receiver):
    with database.session(write=True) as s:
        for i in range(20):
            enqueue(s, "triaged", receiver.url, {"event": "triaged", "n": i}, now=clock())
    dbs = [Database(database_url) for _ in range(2)]
    senders = [dispatcher(db, clock) for db in dbs]
    barrier = threading.Barrier(2)

    def run(sender):
        barrier.wait()
        sender.run_once()

    threads = [threading.Thread(target=run, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sender, db in zip(senders, dbs):
        sender.close()
        db.dispose()
    numbers = sorted(json.loads(r["body"])["n"] for r in receiver.requests)
    assert numbers == list(range(20))
    assert all(d.status == "delivered" and d.attempts == 1 for d in deliveries(database))


def test_dispatcher_thread_delivers_in_background(make_service, database, receiver):
    service = make_service(webhook_urls=[receiver.url])
    sender = WebhookDispatcher(database, SECRET, poll_interval_s=0.05)
    sender.start()
    try:
        service.ingest({"source": "shop", "external_id": "1", "text": "发票一直没寄"})
        for _ in range(100):
            if receiver.requests:
                break
            time.sleep(0.05)
    finally:
        sender.close()
    assert len(receiver.requests) == 1


def test_unknown_event_is_refused(database):
    with database.session() as s, pytest.raises(ValueError, match="unknown webhook event"):
        enqueue(s, "exploded", "http://x", {})
