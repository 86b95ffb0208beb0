"""How background work runs: one small interface, so callers never create threads themselves.

A job is a plain function. ``submit`` runs it once in the background (a retrain);
``every`` runs it again and again (the SLA monitor, webhook delivery) until its handle is
stopped. :class:`ThreadRunner`, today's runner, gives each job a daemon thread in this
process; a task-queue runner can implement the same two methods without touching callers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class JobHandle(Protocol):
    @property
    def alive(self) -> bool: ...

    def wake(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


class JobRunner(Protocol):
    def submit(self, name: str, job: Callable[[], None]) -> JobHandle: ...

    def every(self, name: str, interval_s: float, tick: Callable[[], bool | int | None]) -> JobHandle: ...


class ThreadJob:
    """A job on its own daemon thread. A periodic job's ``tick`` returns something truthy
    when it did work (run it again at once) and falsy when idle (wait ``interval_s`` or until
    :meth:`wake`)."""

    def __init__(self, name: str, target: Callable[["ThreadJob"], None]):
        self.stopping = threading.Event()
        self.woken = threading.Event()
        self._thread = threading.Thread(target=target, args=(self,), name=name, daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> "ThreadJob":
        self._thread.start()
        return self

    def wake(self) -> None:
        self.woken.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.woken.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout)


class ThreadRunner:
    """The in-process runner: one daemon thread per job."""

    def submit(self, name: str, job: Callable[[], None]) -> ThreadJob:
        return ThreadJob(name, lambda _handle: job()).start()

    def every(self, name: str, interval_s: float, tick: Callable[[], bool | int | None]) -> ThreadJob:
        def loop(handle: ThreadJob) -> None:
            while not handle.stopping.is_set():
                if not tick():
                    handle.woken.wait(interval_s)
                    handle.woken.clear()

        return ThreadJob(name, loop).start()


DEFAULT_RUNNER = ThreadRunner()
