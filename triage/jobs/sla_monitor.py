"""The SLA monitor job: runs :meth:`triage.contexts.alerts.SlaAlerts.process_due`, then the
surge scan of early warning (:meth:`triage.contexts.surges.Surges.scan`), every
``interval_s`` on the job runner.

Each case carries ``next_check_at``, the earliest moment something can happen to it; the
monitor looks only at open cases whose moment has come, so a restart simply catches up on
everything that fell due while it was down (events carry the moment they happened on the
clock, not the moment they were noticed).
"""

from __future__ import annotations

import sys
from datetime import datetime

from triage.contexts.alerts import MonitorReport
from triage.jobs.runner import DEFAULT_RUNNER, JobHandle, JobRunner


class SlaMonitor:
    """``run_once(now)`` processes what is due; ``start()`` runs it every ``interval_s``.

    ``service`` is the :class:`triage.service.TriageService` whose alerts and clock it uses."""

    def __init__(self, service, interval_s: float = 30.0, batch: int = 200,
                 actor: str = "sla-monitor", on_breach=None, runner: JobRunner = DEFAULT_RUNNER):
        self.service = service
        self.interval_s = interval_s
        self.batch = batch
        self.actor = actor
        self.on_breach = on_breach  # callback(case_id, deadline) e.g. a metrics counter
        self.runner = runner
        self._job: JobHandle | None = None
        self.last_run: datetime | None = None
        self.last_error: str | None = None

    def run_once(self, now: datetime | None = None) -> MonitorReport:
        now = now or self.service.now()
        report = self.check_due(now)
        report.surges = self.service.surges.scan(now, self.actor).raised  # early warning, same interval
        return report

    def check_due(self, now: datetime | None = None) -> MonitorReport:
        """The SLA part alone (the ``sla.check`` task of :mod:`triage.jobs.tasks`)."""
        now = now or self.service.now()
        report = self.service.alerts.process_due(now, self.actor, self.batch, self.on_breach)
        self.last_run = now
        return report

    def scan_surges(self, now: datetime | None = None) -> list[int]:
        """The early-warning part alone (the ``surges.scan`` task): the alerts raised."""
        return self.service.surges.scan(now or self.service.now(), self.actor).raised

    def _tick(self) -> None:
        try:
            self.run_once()
            self.last_error = None
        except Exception as exc:  # database down: report, keep going, catch up later
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            print(f"sla monitor: {self.last_error}", file=sys.stderr)

    def start(self) -> None:
        if self.interval_s <= 0:
            return
        if self._job is None or not self._job.alive:
            self._job = self.runner.every("sla-monitor", self.interval_s, self._tick)

    def stop(self, timeout: float = 10.0) -> None:
        if self._job is not None:
            self._job.stop(timeout)
            self._job = None
