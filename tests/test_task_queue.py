"""Background work as tasks (triage.jobs.tasks, triage.jobs.queue) and backfills
(triage.contexts.backfill), on SQLite and PostgreSQL, with the real Redis for the queue.

The end-to-end proofs with real processes (API, worker, SIGKILL) are in
tests/test_task_queue_processes.py."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from conftest import make_records, write_jsonl
from test_webhooks import SECRET, Receiver

pytest_plugins = ["fixtures_db"]
from triage.errors import InvalidInput
from triage.jobs.tasks import TASKS, InProcessQueue, Scheduler, TaskContext, run_task
from triage.jobs.webhooks import WebhookDispatcher
from triage.settings import Settings
from triage.store.tables import BackfillChunk, Message, WebhookDelivery

REDIS = "redis://127.0.0.1:6379/0"


def archive_rows(n: int, source: str = "archive") -> list[dict]:
    records = make_records()
    return [{"source": source, "external_id": f"a{i:05d}", "text": f"{records[i % len(records)]['text']} 单号{i}",
             "received_at": "2026-05-01T10:00:00+08:00"} for i in range(n)]


def stored(database) -> list[tuple[str, str]]:
    with database.session() as s:
        return s.execute(select(Message.source, Message.external_id)).all()


def test_backfill_is_idempotent_and_resumes(make_service, database, tmp_path, clock):
    service = make_service()
    rows = archive_rows(25)
    rows.append(dict(rows[3]))  # the same source + external id twice in the archive
    rows.append({"source": "archive", "external_id": "bad"})  # no text: refused, counted, kept
    archive = write_jsonl(tmp_path / "old.jsonl", rows)

    job = service.backfills.load(archive, chunk_size=10, actor="test")
    assert service.backfills.load(archive, chunk_size=10, actor="test") == job  # same archive: same job
    assert service.backfills.pending_chunks(job) == [0, 1, 2]
    assert service.backfills.run_chunk(job, 0) and not service.backfills.run_chunk(job, 0)  # done once

    # a worker killed after chunk 1's insert and before its mark: the chunk runs again
    service.backfills.run_chunk(job, 1)
    with database.session(write=True) as s:
        s.execute(update(BackfillChunk).where(BackfillChunk.job_id == job, BackfillChunk.seq == 1)
                  .values(done_at=None))
    assert service.backfills.pending_chunks(job) == [1, 2]
    service.backfills.run_chunk(job, 1)
    service.backfills.run_chunk(job, 2)

    progress = service.backfills.progress(job)
    assert progress.status == "done" and progress.done_chunks == 3 and progress.total_messages == 27
    # chunk 1's second run found its 10 messages stored (existing), as did the duplicate line
    assert (progress.created, progress.existing, progress.failed) == (15, 11, 1)
    keys = stored(database)
    assert len(keys) == len(set(keys)) == 25
    [error] = service.backfills.errors(job)
    assert error["chunk"] == 2 and error["field"] == "text"


def test_backfill_reads_csv_and_refuses_bad_archives(make_service, database, tmp_path):
    service = make_service()
    csv_path = tmp_path / "old.csv"
    csv_path.write_text("source,external_id,text,channel,unused\n"
                        "shop,c1,耳机左边没声音，要求退货,hotline,x\nshop,c2,快递三天没到,,\n", encoding="utf-8")
    job = service.backfills.load(csv_path, chunk_size=500)
    service.backfills.run_chunk(job, 0)
    assert service.backfills.progress(job).created == 2 and sorted(stored(database)) == [("shop", "c1"), ("shop", "c2")]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="line 2"):
        service.backfills.load(bad)
    with pytest.raises(InvalidInput, match=".jsonl or .csv"):
        service.backfills.load(tmp_path / "old.txt")
    with pytest.raises(InvalidInput, match="chunk size"):
        service.backfills.load(csv_path, chunk_size=5000)


def test_backfill_leases_hand_each_chunk_out_once_until_they_expire(make_service, tmp_path, clock):
    service = make_service()
    job = service.backfills.load(write_jsonl(tmp_path / "a.jsonl", archive_rows(30)), chunk_size=10)
    first = service.backfills.lease_due(60, job, limit=2)
    second = service.backfills.lease_due(60, job)
    assert first == [(job, 0), (job, 1)] and second == [(job, 2)]
    assert service.backfills.lease_due(60, job) == []
    service.backfills.run_chunk(job, 0)
    clock.advance(seconds=61)  # the tasks of chunks 1 and 2 were lost: handed out again, chunk 0 is done
    assert service.backfills.lease_due(60, job) == [(job, 1), (job, 2)]


def test_webhooks_on_a_queue_are_claimed_once_and_retried_with_backoff(make_service, database, clock):
    receiver = Receiver(statuses=(500, 200))
    try:
        service = make_service(webhook_urls=[receiver.url])
        service.ingest({"source": "shop", "external_id": "w1", "text": "耳机坏了，我要投诉", "received_at": clock()})
        dispatcher = WebhookDispatcher(database, SECRET, now=clock, timeout_s=2.0)
        groups: list[list[int]] = []
        assert dispatcher.dispatch_claimed(groups.append) == 1
        assert dispatcher.dispatch_claimed(groups.append) == 0  # claimed: not handed out twice
        [group] = groups
        assert dispatcher.send_claimed(group) == 1  # HTTP 500: rescheduled with backoff
        assert dispatcher.dispatch_claimed(groups.append) == 0  # not due yet
        clock.advance(seconds=3)
        assert dispatcher.dispatch_claimed(groups.append) == 1
        assert dispatcher.send_claimed(groups[-1]) == 1
        assert dispatcher.send_claimed(group) == 0  # a stale copy of the first task sends nothing
        with database.session() as s:
            [delivery] = s.scalars(select(WebhookDelivery)).all()
        assert delivery.status == "delivered" and delivery.attempts == 2
        ids = {r["headers"]["X-Triage-Delivery"] for r in receiver.requests}
        assert len(receiver.requests) == 2 and ids == {str(delivery.id)}
        dispatcher.close()
    finally:
        receiver.close()


def test_in_process_queue_runs_the_registered_tasks(make_service, tmp_path, clock):
    service = make_service()
    ctx = TaskContext(service)
    queue = InProcessQueue(ctx)
    job = service.backfills.load(write_jsonl(tmp_path / "a.jsonl", archive_rows(12)), chunk_size=5)
    assert run_task(ctx, "backfill.sweep") == 3  # the sweep leases the chunks and enqueues each
    for _ in range(100):
        if service.backfills.progress(job).status == "done":
            break
        time.sleep(0.1)
    assert service.backfills.progress(job).created == 12
    assert {"sla.check", "surges.scan", "webhooks.dispatch", "webhooks.send", "retrain", "backfill.chunk",
            "backfill.sweep"} <= set(TASKS)
    assert queue.errors.get("backfill.chunk") is None
    ctx.close()


def test_schedulers_enqueue_each_tick_once_and_the_queue_round_trips(tmp_path):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    from triage.jobs.queue import DramatiqQueue

    namespace = f"triage-test-{uuid.uuid4().hex[:10]}"
    settings = Settings(broker_url=REDIS, broker_namespace=namespace, var_dir=tmp_path)
    queues = [DramatiqQueue(settings), DramatiqQueue(settings)]
    try:
        schedulers = [Scheduler(q, settings, names=["sla.check"]) for q in queues]
        sent = [s.tick(now=0.0) for s in schedulers]
        assert sorted(map(len, sent)) == [0, 1]  # two schedulers, one tick
        assert client.hlen(f"{namespace}:default.msgs") == 1
        [raw] = client.hvals(f"{namespace}:default.msgs")
        assert json.loads(raw)["actor_name"] == "sla.check"
        with pytest.raises(RuntimeError, match="triage worker"):
            queues[0].context()  # an enqueue-only process runs no task
    finally:
        for key in client.scan_iter(f"{namespace}:*"):
            client.delete(key)
        for q in queues:
            q.close()


def test_api_with_a_dead_broker_keeps_ingesting(database_url, tiny_triager, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app

    settings = Settings(database_url=database_url, var_dir=tmp_path, broker_url="redis://127.0.0.1:1/0")
    app = create_app(settings, models=tiny_triager)
    service = app.state.service
    service.create_user("shop", "integration")
    _, token = service.create_api_key("shop", ["ingest"])
    with TestClient(app) as c:
        assert app.state.task_queue.remote and not hasattr(app.state.task_queue, "_jobs")  # no threads here
        r = c.post("/v1/messages", json={"source": "shop", "external_id": "b1", "text": "耳机坏了，要求退款"},
                   headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        metrics = c.get("/metrics").text
        # Workers detect breaches: this process reports the database's total, no counter stuck at 0.
        assert 'triage_sla_breaches{deadline="respond"} 0.0' in metrics
        assert "triage_sla_breaches_detected_total" not in metrics
    with service.db.session() as s:
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        assert s.scalar(select(func.count()).select_from(Message)) == 1


class RecordingQueue:
    """A queue as the API process sees it with a broker: it records what it would enqueue
    (``broken``: the broker is down)."""

    remote = True

    def __init__(self, broken: bool = False):
        self.sent: list[tuple[str, dict]] = []
        self.broken = broken

    def enqueue(self, name: str, **kwargs) -> None:
        if self.broken:
            raise ConnectionError("Redis is down")
        self.sent.append((name, kwargs))


def test_with_a_broker_a_retrain_is_queued_and_run_by_the_worker_task():
    from test_learning import make_loop

    from triage.errors import Conflict

    queue = RecordingQueue()
    loop, store, audit, regraded = make_loop(runner=queue)
    job = loop.start_retrain("alice", trigger="api")
    [(name, kwargs)] = queue.sent
    assert name == "retrain" and kwargs["job"] == job.id and job.state == "queued"
    with pytest.raises(Conflict):  # claimed while queued: one retrain at a time
        loop.start_retrain("bob")
    outcome = loop.run_queued(**kwargs)  # what the worker's `retrain` task does
    assert outcome.promoted and store.current == outcome.version and regraded  # re-graded on the worker
    assert loop.start_retrain("bob") is not None  # the claim was closed

    down = RecordingQueue(broken=True)
    loop, _, _, _ = make_loop(runner=down)
    job = loop.start_retrain("alice")
    assert job.state == "failed" and "could not queue" in job.error
    assert loop.start_retrain("alice").state == "failed"  # the claim was released: no Conflict


def test_with_a_broker_a_promotion_queues_its_regrade_and_the_worker_task_runs_it_once():
    from test_learning import make_loop

    queue = RecordingQueue()
    loop, store, _, regraded = make_loop(runner=queue)
    first = loop.retrain("alice").version
    second = loop.retrain("alice").version
    regraded.clear()
    job = loop.rollback(first, "admin", background=True)
    assert store.current == first and job.state == "queued" and not regraded  # the call only switched
    [(_, kwargs)] = [sent for sent in queue.sent if sent[0] == "models.regrade"]
    assert kwargs == {"job": job.id, "version": first, "actor": "admin"}
    loop.run_queued_regrade(**kwargs)  # what the worker's task does
    assert [actor for _, actor in regraded] == [f"model:{first}"]
    assert loop.regrade_job().state == "done" and loop.regrade_job().regraded == 3  # read back from the ledger
    # A queued re-grade whose version is no longer current does nothing: the newer one covers it.
    stale = loop.promote(second, "admin", background=True)
    loop.rollback(first, "admin", background=True)
    assert loop.run_queued_regrade(job=stale.id, version=second, actor="admin").state == "superseded"
    assert len(regraded) == 1

    down = RecordingQueue(broken=True)
    loop, store, _, regraded = make_loop(runner=down)
    first = loop.retrain("alice").version
    loop.retrain("alice")
    regraded.clear()
    job = loop.rollback(first, "admin", background=True)  # the broker is down: re-graded here instead
    deadline = time.monotonic() + 10
    while job.state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "done" and [actor for _, actor in regraded] == [f"model:{first}"]


def test_a_webhook_task_lost_with_the_broker_is_dispatched_again(make_service, database, clock):
    receiver = Receiver()
    try:
        service = make_service(webhook_urls=[receiver.url])
        service.ingest({"source": "shop", "external_id": "l1", "text": "快递丢件了", "received_at": clock()})
        dispatcher = WebhookDispatcher(database, SECRET, now=clock, timeout_s=2.0, claim_s=60)
        lost: list[list[int]] = []
        assert dispatcher.dispatch_claimed(lost.append) == 1  # enqueued, then Redis lost it
        clock.advance(seconds=30)
        assert dispatcher.dispatch_claimed(lost.append) == 0  # still claimed
        clock.advance(seconds=31)
        again: list[list[int]] = []
        assert dispatcher.dispatch_claimed(again.append) == 1 and again == lost[:1]  # derived from the outbox
        assert dispatcher.send_claimed(again[0]) == 1 and len(receiver.requests) == 1
        dispatcher.close()
    finally:
        receiver.close()


def test_the_scheduler_survives_a_dead_broker(tmp_path):
    from triage.jobs.queue import DramatiqQueue

    settings = Settings(broker_url="redis://127.0.0.1:1/0", var_dir=tmp_path)
    queue = DramatiqQueue(settings)
    scheduler = Scheduler(queue, settings, names=["sla.check"])
    assert scheduler.tick(now=0.0) == [] and "ConnectionError" in scheduler.last_error
    assert scheduler.tick(now=1.0) == []  # not before its retry moment
    assert scheduler.tick(now=2.5) == []  # tried again (and failed again): no exception escapes
    queue.close()


def test_backfill_command_in_process_resumes_and_reports(tmp_path, tiny_store, monkeypatch):
    """`triage backfill` without a broker: the chunks run in the command, a second run of the
    same archive finds the finished job and stores nothing twice."""
    from typer.testing import CliRunner

    from triage.cli import app as cli
    from triage.settings import get_settings

    for key in [k for k in os.environ if k.startswith("TRIAGE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TRIAGE_MODEL_DIR", str(tiny_store.root))
    get_settings.cache_clear()
    try:
        archive = write_jsonl(tmp_path / "old.jsonl", archive_rows(30) + [{"source": "archive", "external_id": "x"}])
        first = CliRunner().invoke(cli, ["backfill", str(archive), "--chunk-size", "8"])
        assert first.exit_code == 0, first.output
        report = json.loads(first.stdout.strip().splitlines()[-1])
        assert (report["status"], report["total_chunks"], report["created"], report["failed"]) == ("done", 4, 30, 1)
        assert report["errors"][0]["field"] == "text"
        again = json.loads(CliRunner().invoke(cli, ["backfill", str(archive), "--chunk-size", "8"])
                           .stdout.strip().splitlines()[-1])
        assert again["job_id"] == report["job_id"] and again["created"] == 30
        bad = CliRunner().invoke(cli, ["backfill", str(tmp_path / "old.txt")])
        assert bad.exit_code == 1 and ".jsonl or .csv" in bad.output
    finally:
        get_settings.cache_clear()


def test_a_regrade_lost_with_the_broker_is_queued_again_once(make_service, clock):
    """The audit log says which version is current since when and which re-grades ended: a
    version switched over ten minutes ago with no re-grade since is re-queued by the sweep,
    at most once per lease, and not at all once a re-grade with it has ended."""
    from types import SimpleNamespace

    from triage.jobs.tasks import models_regrade_sweep

    service = make_service()
    service.audit("model.promoted", "api:boss", {"version": "v2", "previous": "v1"}, entity="model", entity_id="v2")

    class Queue(RecordingQueue):
        def __init__(self):
            super().__init__()
            self.claims: set[str] = set()

        def claim_tick(self, name: str, interval_s: float) -> bool:
            fresh = name not in self.claims
            self.claims.add(name)
            return fresh

    queue = Queue()
    ctx = SimpleNamespace(remote=True, queue=queue, service=service,
                          review=lambda: SimpleNamespace(store=SimpleNamespace(current_version=lambda: "v2")))
    assert models_regrade_sweep(ctx) == 0  # just switched: its queued re-grade may still run
    clock.advance(minutes=11)
    assert models_regrade_sweep(ctx) == 1 and queue.sent[0][0] == "models.regrade"
    assert queue.sent[0][1]["version"] == "v2"
    assert models_regrade_sweep(ctx) == 0 and len(queue.sent) == 1  # one re-queue per lease
    service.end_regrade("j1", "worker", {"state": "done", "version": "v2", "regraded": 4})
    queue.claims.clear()
    assert not service.regrade_missing("v2", timedelta(minutes=10))
    assert models_regrade_sweep(ctx) == 0
    assert models_regrade_sweep(SimpleNamespace(remote=False)) == 0  # in-process: nothing to sweep
