"""``triage worker``, ``triage scheduler`` and ``triage backfill``: background work on the
task queue (:mod:`triage.jobs.tasks`, :mod:`triage.jobs.queue`)."""

from __future__ import annotations

import getpass
import json
import logging
import time
from pathlib import Path
from typing import Optional

import typer

from triage.cli.common import err, fail, progress_bar
from triage.errors import TriageError


def _settings_with_broker():
    from triage.settings import get_settings

    settings = get_settings()
    if not settings.broker_url:
        raise typer.BadParameter("set TRIAGE_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run a worker; "
                                 "without a broker `triage serve` runs the background tasks itself")
    return settings


def _task_context(settings):
    from api.app import load_models
    from triage.jobs.tasks import TaskContext
    from triage.service import TriageService

    service = TriageService.from_settings(settings, load_models(settings))
    return TaskContext(service, settings)


def worker(
    threads: int = typer.Option(4, min=1, help="tasks run at once in this process"),
    queue: list[str] = typer.Option([], "--queue", "-Q",
                                     help="only these queues (default, retrain); repeat; default all"),
    scheduler: bool = typer.Option(False, "--scheduler", help="also enqueue the periodic tasks from here"),
):
    """Run background tasks from the broker: SLA checks, surge scans, webhook delivery,
    retraining, backfill chunks. Stop with SIGTERM or Ctrl-C (tasks in flight finish or go
    back to the queue)."""
    from triage.jobs.queue import DramatiqQueue

    settings = _settings_with_broker()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        queue_ = DramatiqQueue(settings, lambda: _task_context(settings))
        err(f"worker: broker {settings.broker_url} (namespace {settings.broker_namespace}), "
            f"database {settings.effective_database_url}")
        queue_.work(threads=threads, queues=queue or None, scheduler=scheduler)
    except TriageError as exc:
        raise fail(exc) from None


def scheduler():
    """Enqueue the periodic tasks (SLA check, surge scan, webhook dispatch, backfill sweep) on
    the broker. Several may run: each tick is enqueued once (a Redis lock)."""
    import signal
    import threading

    from triage.jobs.queue import DramatiqQueue
    from triage.jobs.tasks import Scheduler

    settings = _settings_with_broker()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    queue_ = DramatiqQueue(settings)
    sched = Scheduler(queue_, settings)
    stop = threading.Event()
    sched.stopping = stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    err(f"scheduler: broker {settings.broker_url} (namespace {settings.broker_namespace})")
    try:
        sched.run()
    finally:
        queue_.close()


def backfill(
    archive: Path = typer.Argument(..., help="a .jsonl or .csv file of messages (source, external_id, text, ...)"),
    chunk_size: Optional[int] = typer.Option(None, min=1, max=1000,
                                             help="messages per task (default TRIAGE_BACKFILL_CHUNK_SIZE)"),
    wait: bool = typer.Option(True, help="wait for the workers and show progress (with a broker)"),
    actor: Optional[str] = typer.Option(None, "--actor", help="who to record in the audit log"),
):
    """Triage an archive of past messages in chunks: through the workers with a broker, in
    this process without one. Idempotent on source + external id; run the same command again
    after a crash to resume. Prints the job's counts as JSON."""
    from triage.service import TriageService
    from triage.settings import get_settings

    settings = get_settings()
    actor = actor or f"cli:{getpass.getuser()}"
    try:
        service = TriageService.from_settings(settings)
        backfills = service.backfills
        job_id = backfills.load(archive, chunk_size or settings.backfill_chunk_size, actor)
        progress = backfills.progress(job_id)
        err(f"backfill {job_id}: {progress.total_messages} messages in {progress.total_chunks} chunks, "
            f"{progress.done_chunks} done")
        bar = progress_bar(f"backfill {job_id}", progress.total_messages)
        bar.update(progress.done_messages)
        if settings.broker_url:
            from triage.jobs.queue import DramatiqQueue

            queue_ = DramatiqQueue(settings)
            for job, seq in backfills.lease_due(settings.backfill_lease_s, job_id):
                queue_.enqueue("backfill.chunk", job_id=job, seq=seq)
            queue_.close()
            while wait and progress.status != "done":
                time.sleep(0.5)
                progress = backfills.progress(job_id)
                bar.update(progress.done_messages - bar.n)
        else:
            from api.app import load_models
            from triage.jobs.tasks import TaskContext, run_task

            service.models = load_models(settings)
            service.warm_up()
            ctx = TaskContext(service, settings)
            for seq in backfills.pending_chunks(job_id):  # the same task the workers run
                run_task(ctx, "backfill.chunk", {"job_id": job_id, "seq": seq})
                progress = backfills.progress(job_id)
                bar.update(progress.done_messages - bar.n)
            ctx.close()
            progress = backfills.progress(job_id)
        bar.close()
    except TriageError as exc:
        raise fail(exc) from None
    typer.echo(json.dumps({**progress.as_dict(), "errors": backfills.errors(job_id)}, ensure_ascii=False))
