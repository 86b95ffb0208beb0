"""The task queue: the tasks of :mod:`triage.jobs.tasks` as Dramatiq actors on Redis.

Why Dramatiq: plain synchronous functions on threads (our code is sync: SQLAlchemy
sessions, httpx.Client), a Redis broker that keeps each message in a per-worker "unacked"
set until it is done (a killed worker's messages go back to the queue once its heartbeat
is older than ``TRIAGE_BROKER_HEARTBEAT_S``), retries with exponential backoff and time
limits as middleware, and a small dependency (dramatiq + redis). It has no periodic
scheduler of its own; ours (:class:`triage.jobs.tasks.Scheduler`) is a few lines and takes
a Redis lock per tick so several can run.

``TRIAGE_BROKER_NAMESPACE`` prefixes every key, so installations (and test runs) can share
one Redis server; the database number in ``TRIAGE_BROKER_URL`` separates them too.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from triage.jobs.tasks import TASKS, Scheduler, TaskContext, run_task

log = logging.getLogger(__name__)

MAINTENANCE_CHANCE = 50_000  # of a million broker commands: requeue dead workers' messages promptly


class DramatiqQueue:
    """Enqueue tasks on Redis (every process with a broker); ``work`` runs them (``triage worker``)."""

    remote = True

    def __init__(self, settings, ctx_factory=None):
        self.settings = settings
        self.broker = RedisBroker(
            url=settings.broker_url, namespace=settings.broker_namespace,
            heartbeat_timeout=int(settings.broker_heartbeat_s * 1000),
            maintenance_chance=MAINTENANCE_CHANCE,
            middleware=[AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(), Retries()])
        self._ctx_factory = ctx_factory
        self._ctx: TaskContext | None = None
        self._ctx_lock = threading.Lock()
        self.actors: dict[str, Any] = {}
        for spec in TASKS.values():
            options: dict[str, Any] = {"max_retries": spec.max_retries, "min_backoff": 1000, "max_backoff": 60_000,
                                       "time_limit": int(spec.time_limit_s * 1000)}
            if spec.every is not None:  # a tick nobody ran while workers were down is stale: drop it
                options["max_age"] = int(max(30.0, 3 * spec.every(settings)) * 1000)
            self.actors[spec.name] = dramatiq.actor(
                self._runner(spec.name), actor_name=spec.name, queue_name=spec.queue, broker=self.broker,
                **options)

    def _runner(self, name: str):
        def run(**kwargs) -> None:  # results are not kept (no results backend): logged
            result = run_task(self.context(), name, kwargs)
            log.debug("%s: %r", name, result)

        run.__name__ = name.replace(".", "_")
        return run

    def context(self) -> TaskContext:
        with self._ctx_lock:
            if self._ctx is None:
                if self._ctx_factory is None:
                    raise RuntimeError("this process only enqueues tasks; run them with `triage worker`")
                self._ctx = self._ctx_factory()
                self._ctx.queue = self
            return self._ctx

    def enqueue(self, name: str, **kwargs) -> None:
        self.actors[name].send_with_options(kwargs=kwargs)

    def claim_tick(self, name: str, interval_s: float) -> bool:
        """One scheduler of several enqueues a periodic task per interval."""
        key = f"{self.settings.broker_namespace}:scheduler:{name}"
        return bool(self.broker.client.set(key, "1", nx=True, px=max(1, int(interval_s * 1000 * 0.9))))

    def ping(self) -> bool:
        try:
            return bool(self.broker.client.ping())
        except Exception:
            return False

    def work(self, threads: int = 4, queues: list[str] | None = None, scheduler: bool = False,
             stop: threading.Event | None = None) -> None:
        """Run tasks until SIGTERM/SIGINT (or ``stop``); with ``scheduler``, also enqueue the
        periodic tasks from this process."""
        stop = stop or threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.context()  # build the service (and load the model) before taking tasks
        worker = dramatiq.Worker(self.broker, queues=queues, worker_threads=threads, worker_timeout=500)
        worker.start()
        sched = None
        if scheduler:
            sched = Scheduler(self, self.settings)
            sched.stopping = stop
            threading.Thread(target=sched.run, name="scheduler", daemon=True).start()
        log.warning("worker started: %d threads, queues %s%s", threads, ",".join(queues or ["all"]),
                    ", with the scheduler" if scheduler else "")
        try:
            stop.wait()
        finally:
            worker.stop(timeout=10_000)
            if self._ctx is not None:
                self._ctx.close()
            self.broker.close()

    def close(self) -> None:
        self.broker.close()
