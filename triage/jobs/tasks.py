"""The background tasks, in one registry, and the in-process way to run them.

Every piece of background work is a named task ``fn(ctx, **kwargs)`` over a
:class:`TaskContext` (the service, the SLA monitor, the webhook dispatcher of one process),
with JSON-able keyword arguments. The same functions run in two ways:

- no broker (``TRIAGE_BROKER_URL`` empty, the single-machine default): :class:`InProcessQueue`
  runs the periodic ones on threads of the API process (:class:`triage.jobs.runner.ThreadRunner`)
  and each enqueued one on a thread of its own;
- a broker: :class:`triage.jobs.queue.DramatiqQueue` sends them to Redis, ``triage worker``
  processes run them, and :class:`Scheduler` (``triage scheduler`` or ``triage worker
  --scheduler``) enqueues the periodic ones.

The database stays the source of truth, so a task lost in the broker is derived again: an
SLA check or surge scan looks at what is due now, the webhook dispatch at due outbox rows
(claims expire), the backfill sweep at chunks not done (leases expire).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from triage.jobs.helpdesk import HelpdeskAccess
from triage.jobs.runner import DEFAULT_RUNNER, JobHandle, JobRunner
from triage.jobs.sla_monitor import SlaMonitor
from triage.jobs.webhooks import WebhookDispatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fn: Callable[..., Any]
    queue: str = "default"
    every: Callable[[Any], float] | None = None  # settings -> interval in seconds (periodic tasks)
    max_retries: int = 0  # retries by the queue on an exception (exponential backoff)
    time_limit_s: float = 600.0


TASKS: dict[str, TaskSpec] = {}


def task(name: str, **options) -> Callable:
    def register(fn: Callable) -> Callable:
        TASKS[name] = TaskSpec(name, fn, **options)
        return fn

    return register


class TaskContext:
    """What the tasks of one process work with. ``queue`` is where they enqueue follow-up
    tasks (set by the queue that runs them)."""

    def __init__(self, service, settings=None, *, monitor: SlaMonitor | None = None,
                 dispatcher: WebhookDispatcher | None = None):
        self.service = service
        self.settings = settings or service.settings
        self.monitor = monitor or SlaMonitor(service, interval_s=self.settings.sla_monitor_interval_s)
        self.dispatcher = dispatcher or WebhookDispatcher(
            service.db, self.settings.webhook_secret, helpdesk=HelpdeskAccess(self.settings),
            poll_interval_s=self.settings.webhook_poll_interval_s)
        self.queue = None
        self._review = None
        self._lock = threading.Lock()

    def review(self):
        """The process's review context (learning loop, model store), built on first use."""
        with self._lock:
            if self._review is None:
                from triage.contexts.review import ReviewContext

                self._review = ReviewContext(self.service, settings=self.settings)
            return self._review

    @property
    def remote(self) -> bool:
        return bool(getattr(self.queue, "remote", False))

    def close(self) -> None:
        self.dispatcher.close()


# ------------------------------------------------------------------------------- the tasks


@task("sla.check", every=lambda s: s.sla_monitor_interval_s, time_limit_s=300)
def sla_check(ctx: TaskContext) -> int:
    """Warn, breach and escalate the open cases whose next check has come."""
    return ctx.monitor.check_due().events


@task("surges.scan", every=lambda s: s.sla_monitor_interval_s, time_limit_s=300)
def surges_scan(ctx: TaskContext) -> int:
    """Early warning over the cases not surveyed yet."""
    return ctx.monitor.scan_surges()


@task("webhooks.dispatch", every=lambda s: s.webhook_poll_interval_s, time_limit_s=60)
def webhooks_dispatch(ctx: TaskContext) -> int:
    """Find due outbox rows. In process: one sender thread per receiver (today's dispatcher);
    on a queue: claim them in small groups per receiver and enqueue a ``webhooks.send`` each."""
    if ctx.remote:
        return ctx.dispatcher.dispatch_claimed(lambda ids: ctx.queue.enqueue("webhooks.send", ids=ids))
    return ctx.dispatcher.run_once(wait=False)


@task("webhooks.send", time_limit_s=300)
def webhooks_send(ctx: TaskContext, ids: list[int]) -> int:
    """One attempt for each claimed delivery (failures are rescheduled with backoff in the outbox)."""
    return ctx.dispatcher.send_claimed(ids)


@task("retrain", queue="retrain", time_limit_s=6 * 3600)
def retrain(ctx: TaskContext, job: str, cutoff: int | None, actor: str, trigger: str) -> None:
    """A retrain claimed by the API (one at a time across processes, in the audit log); the
    quality gate, promotion and re-grade of open cases run here, on the worker."""
    ctx.review().learning.run_queued(job, cutoff, actor, trigger)


@task("models.regrade", queue="retrain", time_limit_s=6 * 3600)
def models_regrade(ctx: TaskContext, job: str, version: str, actor: str) -> int | None:
    """The re-grade of open cases after a promotion or rollback made by hand (through any API
    process, the review desk or the command line); skipped when another version became
    current meanwhile. Its outcome goes to the audit log, where every API process reads it."""
    return ctx.review().learning.run_queued_regrade(job, version, actor).regraded


REGRADE_GRACE_S = 600.0  # a queued re-grade not ended after this long is taken as lost
REGRADE_RETRY_S = 3600.0  # at most one re-queue per version in this time (a long re-grade may still run)


@task("models.regrade_sweep", every=lambda s: 60.0, time_limit_s=60)
def models_regrade_sweep(ctx: TaskContext) -> int:
    """With a task queue: queue the current version's re-grade again when it was lost (made
    current over ten minutes ago, no re-grade with it ended since; see
    ``Retraining.regrade_missing``). Without one the re-grade is a thread of the process that
    switched, so there is nothing to sweep."""
    if not ctx.remote:
        return 0
    version = ctx.review().store.current_version()
    if version is None or not ctx.service.regrade_missing(version, timedelta(seconds=REGRADE_GRACE_S)):
        return 0
    if not ctx.queue.claim_tick(f"regrade-sweep:{version}", REGRADE_RETRY_S):
        return 0
    ctx.queue.enqueue("models.regrade", job=uuid.uuid4().hex[:12], version=version, actor="system:regrade-sweep")
    return 1


@task("backfill.chunk", max_retries=3, time_limit_s=1800)
def backfill_chunk(ctx: TaskContext, job_id: int, seq: int) -> bool:
    return ctx.service.backfills.run_chunk(job_id, seq)


@task("backfill.sweep", every=lambda s: min(5.0, s.backfill_lease_s / 2), time_limit_s=60)
def backfill_sweep(ctx: TaskContext) -> int:
    """Queue the backfill chunks that are not done and not leased (new, or lost with a worker
    or the broker)."""
    leased = ctx.service.backfills.lease_due(ctx.settings.backfill_lease_s)
    for job_id, seq in leased:
        ctx.queue.enqueue("backfill.chunk", job_id=job_id, seq=seq)
    return len(leased)


def run_task(ctx: TaskContext, name: str, kwargs: dict[str, Any] | None = None) -> Any:
    return TASKS[name].fn(ctx, **(kwargs or {}))


# ------------------------------------------------------------------------ in-process runs


class InProcessQueue:
    """No broker: the periodic tasks on threads of this process, each enqueued task on a
    thread of its own (:mod:`triage.jobs.runner`)."""

    remote = False

    def __init__(self, ctx: TaskContext, runner: JobRunner = DEFAULT_RUNNER):
        self.ctx = ctx
        ctx.queue = self
        self.runner = runner
        self.errors: dict[str, str | None] = {}
        self._jobs: list[JobHandle] = []

    def enqueue(self, name: str, **kwargs) -> JobHandle:
        return self.runner.submit(name, lambda: self._run(name, kwargs))

    def _run(self, name: str, kwargs: dict[str, Any]) -> Any:
        try:
            result = run_task(self.ctx, name, kwargs)
            self.errors[name] = None
            return result
        except Exception as exc:  # database down: report, keep the job alive, catch up later
            self.errors[name] = f"{exc.__class__.__name__}: {exc}"
            print(f"{name}: {self.errors[name]}", file=sys.stderr)
            return None

    def start_periodic(self, names: list[str] | None = None) -> None:
        """Start the periodic tasks (``names``: a subset); a tick that did work runs again at once."""
        for spec in TASKS.values():
            if spec.every is None or (names is not None and spec.name not in names):
                continue
            interval = spec.every(self.ctx.settings)
            if interval <= 0:
                continue
            self._jobs.append(self.runner.every(spec.name, interval,
                                                lambda name=spec.name: self._run(name, {})))

    def stop(self, timeout: float = 10.0) -> None:
        for job in self._jobs:
            job.stop(timeout)
        self._jobs.clear()


class Scheduler:
    """Enqueues each periodic task every interval on ``queue``. Several schedulers may run
    (one per worker host): ``claim(name, interval_s)`` (a Redis ``SET NX PX`` in
    :class:`triage.jobs.queue.DramatiqQueue`) lets one of them enqueue each tick. A broker
    that is down only delays ticks: the scheduler keeps trying."""

    def __init__(self, queue, settings, names: list[str] | None = None):
        self.queue = queue
        self.settings = settings
        self.specs = [s for s in TASKS.values() if s.every is not None and (names is None or s.name in names)]
        self._next: dict[str, float] = {}
        self.stopping = threading.Event()
        self.last_error: str | None = None

    def tick(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        sent = []
        for spec in self.specs:
            interval = spec.every(self.settings)
            if interval <= 0 or now < self._next.get(spec.name, 0.0):
                continue
            try:
                if self.queue.claim_tick(spec.name, interval):
                    self.queue.enqueue(spec.name)
                    sent.append(spec.name)
                self._next[spec.name] = now + interval
                self.last_error = None
            except Exception as exc:  # broker down: try again in a moment
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                log.warning("scheduler: %s", self.last_error)
                self._next[spec.name] = now + min(interval, 2.0)
        return sent

    def run(self, poll_s: float = 0.2) -> None:
        while not self.stopping.is_set():
            self.tick()
            self.stopping.wait(poll_s)
