"""The FastAPI application factory: ``api.app:create_app(settings=None)``.

The lifespan starts the background tasks (:mod:`triage.jobs.tasks`: SLA check, surge scan,
webhook dispatch) on threads of this process and stops them on shutdown, or, with
``TRIAGE_BROKER_URL`` set, starts none: `triage worker` processes run them and this process
only enqueues (a retrain); the database schema is upgraded to the newest migration when the app is created.
The review UI mounts itself on the app this returns (``app.state.service`` is the service).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import triage
from api import errors
from api.metrics import Metrics
from api.routes import router
from api.routes_connectors import router as connectors_router
from triage.errors import InvalidInput
from triage.jobs.helpdesk import HelpdeskAccess
from triage.jobs.runner import DEFAULT_RUNNER
from triage.jobs.sla_monitor import SlaMonitor
from triage.jobs.tasks import InProcessQueue, TaskContext
from triage.jobs.webhooks import WebhookDispatcher
from triage.policy import Policy
from triage.service import TriageService
from triage.settings import Settings, get_settings
from triage.store import Database

log = logging.getLogger(__name__)


def load_models(settings: Settings):
    """A ModelHolder with the store's current model, or empty (readyz says so) if there is none."""
    from models.learning import ModelHolder

    holder = ModelHolder()
    try:
        from models.db_store import open_store
        from triage.triager import Triager

        holder.swap(Triager.from_store(open_store(settings)))
    except Exception as exc:  # no model yet, or unreadable: serve, but not ready
        print(f"warning: no model loaded ({exc}); run `triage ensure-model`", file=sys.stderr)
    return holder


class ModelWatch:
    """Keeps this process on the store's current model version.

    A server started before ``triage ensure-model`` (or before a first promotion) becomes
    ready without a restart; and a promotion or rollback made by another process or host
    (which moves the store's current pointer: the ``CURRENT`` file, or the database row of
    ``TRIAGE_MODEL_STORE=db``) is picked up within ``TRIAGE_MODEL_CHECK_INTERVAL_S``. One
    check reads only the pointer; the new version is loaded (verified) before one swap of
    the holder, so every prediction names exactly one version. Called by ``/readyz`` and by
    a background job; at most every ``min_interval_s``.
    """

    def __init__(self, holder, settings: Settings, min_interval_s: float = 2.0, store=None):
        self.holder = holder
        self.settings = settings
        self.min_interval_s = min_interval_s
        self._store = store
        self._last = float("-inf")
        self._last_error = ""
        self._lock = threading.Lock()

    @property
    def store(self):
        if self._store is None:
            from models.db_store import open_store

            self._store = open_store(self.settings)
        return self._store

    def _loaded_version(self) -> str | None:
        return getattr(self.holder.triager, "version", None) if self.holder.loaded else None

    def check(self, follow: bool = True) -> bool:
        """True when this call loaded a model (the first one, or another current version)."""
        if not hasattr(self.holder, "swap") or not hasattr(self.holder, "loaded"):
            return False  # a fixed Triager (tests, `triage predict`): nothing to follow
        if self.holder.loaded and not follow:
            return False
        with self._lock:
            if time.monotonic() - self._last < self.min_interval_s:
                return False
            self._last = time.monotonic()
            loaded = self._loaded_version()
            try:
                current = self.store.current_version()
                if current is None or current == loaded:
                    return False
                from triage.triager import Triager

                triager = Triager.from_store(self.store, current)
                if self.store.current_version() != current:  # moved again while loading: next check
                    return False
            except Exception as exc:  # still none, or refused: keep what is loaded (said once per cause)
                (log.debug if str(exc) == self._last_error else log.warning)(
                    "model version check: cannot load the store's current model (%s)", exc)
                self._last_error = str(exc)
                return False
            self.holder.swap(triager)
        if loaded is None:
            log.warning("model %s loaded; the service is ready", current)
        else:
            log.warning("model %s loaded in place of %s (made current by a promotion or rollback)", current, loaded)
        return True


async def refuse_nul_in_parameters(request: Request) -> None:
    """PostgreSQL refuses NUL in text (SQLite would take it): a path or query parameter with
    one is a 422 naming it on both databases, before any query runs."""
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if "\x00" in str(value):
            raise InvalidInput(f"{name} contains a NUL character (U+0000)", field=name)


def freeze_long_lived_heap() -> None:
    """Move what lives as long as the process (model, segmenter dictionary, lexicons, ORM
    metadata) out of the garbage collector's way: full collections walking it paused every
    request for 0.25-0.35 s under load (bench_load, p99 370 ms -> 145 ms on SQLite)."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, *, models=None, service: TriageService | None = None,
               background: bool = True) -> FastAPI:
    """Build the app. ``models``: a ModelHolder or Triager (default: the model store's current
    model); ``service``: a ready TriageService (tests); ``background``: run the monitor and
    webhook threads (tests drive them by hand with ``run_once``)."""
    settings = settings or get_settings()
    if service is None:
        db = Database.from_settings(settings)
        db.upgrade()
        service = TriageService(db, Policy.from_settings(settings),
                                models if models is not None else load_models(settings), settings)
    monitor = SlaMonitor(service, interval_s=settings.sla_monitor_interval_s)
    dispatcher = WebhookDispatcher(service.db, settings.webhook_secret,
                                   helpdesk=HelpdeskAccess(service.settings),
                                   poll_interval_s=settings.webhook_poll_interval_s)
    if settings.broker_url:  # workers run the background tasks; this process enqueues
        from triage.jobs.queue import DramatiqQueue

        task_queue = DramatiqQueue(settings)
    else:
        task_queue = InProcessQueue(TaskContext(service, settings, monitor=monitor, dispatcher=dispatcher))
    writeback = any(service.settings.writeback_enabled(c) for c in ("chatwoot", "zammad"))
    follow_s = float(service.settings.model_check_interval_s)
    model_watch = ModelWatch(service.models, service.settings, min_interval_s=min(2.0, follow_s) if follow_s > 0 else 2.0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(service.warm_up)
        freeze_long_lived_heap()
        if hasattr(service.models, "on_swap"):  # a promoted model: let the old one be collected
            service.models.on_swap(lambda _triager: (gc.unfreeze(), freeze_long_lived_heap()))
        service.start_coalescing()
        watch_job = None
        if background:
            if follow_s > 0:  # follow promotions and rollbacks made by other processes and hosts
                watch_job = DEFAULT_RUNNER.every("model-watch", follow_s, lambda: model_watch.check() and False)
            elif not getattr(service.models, "loaded", True):
                watch_job = DEFAULT_RUNNER.every("model-watch", 5.0,
                                                 lambda: model_watch.check(follow=False) and False)
            if not task_queue.remote:
                task_queue.start_periodic(["sla.check", "surges.scan"]
                                          + (["webhooks.dispatch"] if service.webhook_urls or writeback else []))
        try:
            yield
        finally:
            service.stop_coalescing()
            context = getattr(app.state, "review_context", None)
            if context is not None:  # a re-grade started by a promotion here: let it record its outcome
                context.learning.wait_regrades(timeout=30.0)
            if watch_job is not None:
                watch_job.stop()
            if not task_queue.remote:
                task_queue.stop()
            else:
                task_queue.close()
            dispatcher.close()

    app = FastAPI(
        title="Complaint triage",
        version=triage.__version__,
        description="Triage of Chinese after-sales complaints: graded cases with SLA deadlines, routing, "
        "escalation and signed webhooks. Authenticate with `Authorization: Bearer <API key>`.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_in_parameters)],
    )
    app.state.settings = settings
    app.state.service = service
    app.state.monitor = monitor
    app.state.dispatcher = dispatcher
    app.state.task_queue = task_queue
    app.state.model_watch = model_watch
    metrics = Metrics(app, monitor_in_process=not task_queue.remote)
    app.state.metrics = metrics
    if metrics.breaches is not None:
        monitor.on_breach = lambda case_id, deadline: metrics.breaches.labels(deadline).inc()
    metrics.install(app)
    errors.install(app)
    app.include_router(router)
    app.include_router(connectors_router)
    __import__("api.routes_review").routes_review.install(app)  # review + model routes, UI at /review
    __import__("api.routes_alerts").routes_alerts.install(app)  # surge alerts and recall incidents

    @app.get("/healthz", tags=["ops"], summary="The process is up")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Database reachable and a model loaded",
             responses={200: {"description": "ready"}, 503: {"description": "not ready: database or model missing"}})
    def readyz(request: Request):
        svc = request.app.state.service
        model_watch.check(follow=False)
        database = svc.db.ping()
        model = svc.models.loaded
        body = {
            "status": "ready" if database and model else "not ready",
            "database": "ok" if database else "unreachable",
            "model": getattr(svc.models.triager, "version", "loaded") if model else "not loaded",
            "sla_monitor_error": getattr(task_queue, "errors", {}).get("sla.check") or monitor.last_error,
        }
        return JSONResponse(body, status_code=200 if database and model else 503)

    return app
