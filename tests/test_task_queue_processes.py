"""Proof with real processes on the machine's PostgreSQL and Redis: `triage serve` and
`triage worker --scheduler` as separate processes; a breach escalated once, a webhook
delivered with retries under one delivery id, and a worker killed with SIGKILL mid-backfill
whose successor finishes the backfill with every message stored once.

Each test has its own PostgreSQL schema and Redis key prefix, so parallel runs never meet."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from conftest import write_jsonl
from fixtures_db import PG_URL, postgres_reachable, with_search_path
from test_task_queue import archive_rows
from test_webhooks import Receiver

from triage.settings import Settings
from triage.store.tables import BackfillJob, Case, Message, SlaEvent, WebhookDelivery

ROOT = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    """The process list of deploy/README.md on this machine: env, start, stop."""

    def __init__(self, tmp_path: Path, model_dir: Path, **settings):
        if not postgres_reachable():
            pytest.skip("PostgreSQL is not reachable")
        self.redis = redis_client()
        self.schema = f"triage_procs_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        self.namespace = f"triage-test-{uuid.uuid4().hex[:10]}"
        self.tmp = tmp_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
        self.env.update({
            "PYTHONPATH": str(ROOT), "TRIAGE_DATABASE_URL": with_search_path(PG_URL, self.schema),
            "TRIAGE_VAR_DIR": str(tmp_path / "var"), "TRIAGE_MODEL_DIR": str(model_dir),
            "TRIAGE_BROKER_URL": REDIS, "TRIAGE_BROKER_NAMESPACE": self.namespace,
            "TRIAGE_BROKER_HEARTBEAT_S": "2", "TRIAGE_SLA_MONITOR_INTERVAL_S": "1",
            "TRIAGE_WEBHOOK_POLL_INTERVAL_S": "0.5", "TRIAGE_BACKFILL_LEASE_S": "15",
            **{f"TRIAGE_{k.upper()}": str(v) for k, v in settings.items()},
        })
        self.settings = Settings(**{k.removeprefix("TRIAGE_").lower(): v for k, v in self.env.items()
                                    if k.startswith("TRIAGE_")})
        self.procs: list[subprocess.Popen] = []
        from triage.service import TriageService

        self.service = TriageService.from_settings(self.settings)  # migrates the schema
        self.service.create_user("shop", "integration")
        self.token = self.service.create_api_key("shop", ["ingest"])[1]

    def start(self, *args: str, name: str) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "triage.cli", *args], cwd=ROOT, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.name = name
        self.procs.append(proc)
        return proc

    def serve(self) -> str:
        port = free_port()
        self.start("serve", "--port", str(port), "--log-level", "warning", name=f"api-{port}")
        url = f"http://127.0.0.1:{port}"
        self.wait(lambda: self._ready(url), 60, f"the API on {url} to be ready")
        return url

    @staticmethod
    def _ready(url: str) -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def worker(self, *args: str) -> subprocess.Popen:
        return self.start("worker", *args, name=f"worker-{len(self.procs)}")

    def wait(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            for proc in self.procs:
                if proc.poll() not in (None, -signal.SIGKILL, 0):
                    raise AssertionError(f"{proc.name} exited with {proc.returncode}: {self.logs()}")
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; logs:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + (self.tmp / f"{p.name}.log").read_text(errors="replace")[-3000:]
                         for p in self.procs if (self.tmp / f"{p.name}.log").exists())

    def scalar(self, query):
        with self.service.db.session() as s:
            return s.scalar(query)

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.service.db.dispose()
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()
        for key in self.redis.scan_iter(f"{self.namespace}:*"):
            self.redis.delete(key)


@pytest.fixture
def deployment(tmp_path, tiny_store):
    made = []

    def build(**settings) -> Deployment:
        made.append(Deployment(tmp_path, tiny_store.root, **settings))
        return made[-1]

    yield build
    for d in made:
        d.close()


def test_breach_escalated_once_and_webhook_retried_by_a_worker(deployment):
    receiver = Receiver(statuses=(500, 200))
    try:
        d = deployment(webhook_url=receiver.url, webhook_secret="s3cret")
        api = d.serve()
        d.worker("--scheduler", "--threads", "2")
        old = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()
        r = httpx.post(f"{api}/v1/messages", headers={"Authorization": f"Bearer {d.token}"}, timeout=30,
                       json={"source": "shop", "external_id": "m1", "received_at": old,
                             "text": "耳机左边没有声音了，想换一个"})
        assert r.status_code == 201, r.text
        case_id, tier = r.json()["case"]["id"], r.json()["case"]["tier"]

        breached = select(func.count()).select_from(SlaEvent).where(SlaEvent.case_id == case_id,
                                                                   SlaEvent.kind == "breach")
        d.wait(lambda: d.scalar(breached), 45, "the worker's SLA check to breach the case")
        pending = select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status != "delivered")
        d.wait(lambda: d.scalar(pending) == 0 and len(receiver.requests) >= 2, 30, "every webhook delivered")
        time.sleep(3)  # several more SLA ticks and dispatches: nothing happens twice

        with d.service.db.session() as s:
            breaches = s.scalars(select(SlaEvent.deadline).where(SlaEvent.case_id == case_id,
                                                                 SlaEvent.kind == "breach")).all()
            case = s.get(Case, case_id)
            deliveries = s.execute(select(WebhookDelivery.id, WebhookDelivery.event, WebhookDelivery.attempts,
                                          WebhookDelivery.status)).all()
        assert breaches and case.breach_count == len(breaches)  # each breach counted (and escalated) once
        assert case.tier != tier
        events = Counter(row.event for row in deliveries)
        assert events["breached"] == len(breaches) and 1 <= events["escalated"] <= len(breaches)
        sent = Counter(int(req["headers"]["X-Triage-Delivery"]) for req in receiver.requests)
        assert sent == {row.id: row.attempts for row in deliveries}  # one request per attempt, stable id
        assert all(row.status == "delivered" for row in deliveries) and max(sent.values()) == 2  # 500, then 200
    finally:
        receiver.close()


def test_worker_killed_mid_backfill_is_finished_by_the_next_one(deployment, tmp_path):
    d = deployment(backfill_chunk_size=40)
    rows = archive_rows(1200)
    archive = write_jsonl(tmp_path / "archive.jsonl", rows)
    first = d.worker("--scheduler", "--threads", "1")
    cli = subprocess.run([sys.executable, "-m", "triage.cli", "backfill", str(archive), "--no-wait"], cwd=ROOT,
                         env=d.env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    job_id = json.loads(cli.stdout)["job_id"]
    done = select(BackfillJob.status).where(BackfillJob.id == job_id)
    stored = select(func.count()).select_from(Message)
    d.wait(lambda: d.scalar(stored) >= 120, 60, "the first worker to store a few chunks")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    at_kill = d.scalar(stored)
    assert at_kill < len(rows), "the backfill finished before the kill; make the archive larger"

    d.worker("--scheduler", "--threads", "2")
    d.wait(lambda: d.scalar(done) == "done", 60, "the second worker to finish the backfill")
    with d.service.db.session() as s:
        ids = s.scalars(select(Message.external_id)).all()
        cases = s.scalar(select(func.count()).select_from(Case))
    assert sorted(ids) == sorted(r["external_id"] for r in rows)  # every message, once
    assert cases == len(rows)
    again = subprocess.run([sys.executable, "-m", "triage.cli", "backfill", str(archive)], cwd=ROOT, env=d.env,
                           capture_output=True, text=True, timeout=120)
    report = json.loads(again.stdout)
    assert again.returncode == 0 and report["job_id"] == job_id and report["status"] == "done"
    assert report["done_chunks"] == report["total_chunks"] == 30 and report["failed"] == 0


def test_broker_down_ingestion_answers_and_work_resumes_from_the_database(deployment, tmp_path):
    """A private Redis is killed and restarted empty: the API keeps ingesting, the worker and
    scheduler reconnect, and the webhook of the message ingested meanwhile (its task never
    reached Redis) is derived again from the outbox and sent once."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis_proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    receiver = Receiver()
    try:
        d = deployment(broker_url=f"redis://127.0.0.1:{port}/0", webhook_url=receiver.url)
        api = d.serve()
        d.worker("--scheduler", "--threads", "2")

        def ingest(external_id: str) -> int:
            return httpx.post(f"{api}/v1/messages", headers={"Authorization": f"Bearer {d.token}"}, timeout=30,
                              json={"source": "shop", "external_id": external_id, "text": "快递三天还没到"}).status_code

        assert ingest("before") == 201
        d.wait(lambda: len(receiver.requests) == 1, 45, "the first webhook")
        redis_proc.kill()
        redis_proc.wait(10)
        assert ingest("during") == 201  # ingestion writes only to PostgreSQL
        time.sleep(2)
        redis_proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)  # empty
        d.wait(lambda: len(receiver.requests) >= 2, 50, "the webhook of the message ingested while Redis was down")
        time.sleep(2)
        sent = Counter(int(r["headers"]["X-Triage-Delivery"]) for r in receiver.requests)
        assert len(sent) == 2 and set(sent.values()) == {1}
    finally:
        receiver.close()
        redis_proc.kill()
        redis_proc.wait(10)


def test_a_promotion_and_a_retrain_through_the_api_finish_on_a_worker_and_the_api_shows_how(
        deployment, tiny_store, tiny_backend):
    """With a broker, a promotion made through one API process answers at once; a worker
    re-grades the open cases (once: one outcome in the audit log) and GET /v1/models on the API
    shows the re-grade's outcome, as it shows a queued retrain's once the worker ends it."""
    from triage.store.tables import AuditEntry, Prediction

    d = deployment(history_limit=0)
    second = tiny_store.save(tiny_backend, {"data_hash": "sha256:second"})
    d.service.create_user("boss", "admin")
    admin = {"Authorization": f"Bearer {d.service.create_api_key('boss', ['admin', 'review'])[1]}"}
    api = d.serve()
    for i, complaint in enumerate(["耳机左边没有声音了", "客服三天不回复", "降价了不给保价，要求退差价"]):
        r = httpx.post(f"{api}/v1/messages", headers={"Authorization": f"Bearer {d.token}"}, timeout=30,
                       json={"source": "shop", "external_id": f"p{i}", "text": complaint})
        assert r.status_code == 201, r.text

    promoted = httpx.post(f"{api}/v1/models/{second}/promote", headers=admin, timeout=30)
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert body["current"] == second and body["regrade"]["state"] == "queued"  # nothing ran in the request
    job = body["regrade"]["id"]
    d.worker("--threads", "2")

    def regrade_state():
        state = httpx.get(f"{api}/v1/models", headers=admin, timeout=30).json()["regrade"]
        return state if state["state"] not in ("queued", "running") else None

    state = d.wait(regrade_state, 90, "the worker's re-grade to end")
    assert state["id"] == job and state["state"] == "done" and state["regraded"] == 0, state  # same labels
    on_second = select(func.count()).select_from(Prediction).where(Prediction.model_version == second)
    assert d.scalar(on_second) == 3  # every open case re-scored by the promoted version
    time.sleep(2)
    with d.service.db.session() as s:
        ended = [a.after for a in s.scalars(select(AuditEntry).where(AuditEntry.action == "model.regrade_ended"))]
    assert [e["job"] for e in ended] == [job]  # re-graded once

    started = httpx.post(f"{api}/v1/models/retrain", headers=admin, timeout=30)
    assert started.status_code == 202, started.text
    retrain_id = started.json()["job"]["id"]

    def retrain_state():
        state = httpx.get(f"{api}/v1/models", headers=admin, timeout=30).json()["retrain"]
        return state if state["state"] not in ("queued", "running") else None

    state = d.wait(retrain_state, 240, "the worker's retrain to end")
    assert state["id"] == retrain_id and state["state"] == "done", state
    assert state["version"] and state["promoted"] in (True, False) and state["finished_at"]
