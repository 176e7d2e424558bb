"""Outcomes of routed requests, written off the request path, and the rollback watch.

``OutcomeLog.add`` appends to memory and returns; a task writes what gathered every quarter of a
second in one transaction (a reader of stats flushes first, so nothing is stale). When the
store fails, the batch is kept and retried every second (bounded: past ``max_pending`` the
oldest outcomes are dropped and counted); every failure is logged and shown in ``/health``.

``RollbackWatch`` keeps, per route, the verdicts on the student's answers to users over the
route's window (seeded from the store, so a restart does not forget them) and reports a route
whose pass rate falls below its floor.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from distillery.routing.table import Route
from distillery.store.routes import Outcome, RoutesRepo

log = logging.getLogger("distillery.routing")


class OutcomeLog:
    def __init__(
        self, repo: RoutesRepo, *, max_pending: int = 50_000, interval_s: float = 0.25
    ) -> None:
        self.repo = repo
        self.max_pending = max_pending
        self.interval_s = interval_s  # a batch every so often: one transaction, not one a request
        self._pending: deque[Outcome] = deque()
        self._wake: asyncio.Event | None = None
        self._flushing = threading.Lock()  # the writer task and a reader's flush never overlap
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None

    def add(self, outcome: Outcome) -> None:
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append(outcome)
        if self._wake is not None:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        """Write what is pending now (from a thread: the writer task, or a reader of stats)."""
        with self._flushing:
            batch = list(self._pending)
            if not batch:
                return
            self.repo.add_outcomes(batch)
            for _ in batch:
                self._pending.popleft()
            self.written += len(batch)

    async def run(self) -> None:
        """The writer task: runs until cancelled, never dies of a store error."""
        self._wake = asyncio.Event()
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.interval_s)  # gather a batch
            self._wake.clear()
            try:
                await asyncio.to_thread(self.flush)
                self.last_error = None
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("writing route outcomes failed; retrying in a second")
                await asyncio.sleep(1.0)
                self._wake.set()

    def health(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "written": self.written,
            "dropped": self.dropped,
            "failures": self.failures,
            "last_error": self.last_error,
        }


class RollbackWatch:
    """Sliding windows of the student's online verdicts; ``observe`` says when to roll back."""

    def __init__(self, repo: RoutesRepo) -> None:
        self.repo = repo
        self._windows: dict[str, tuple[int, deque[bool]]] = {}
        self._tripped: set[tuple[str, int]] = set()

    def _window(self, route: Route) -> deque[bool]:
        size = route.spec.rollback.window
        known = self._windows.get(route.id)
        if known is None or known[0] != size:
            seeded: deque[bool] = deque(self.repo.graded(route.id, limit=size, shadow=False), size)
            known = (size, seeded)
            self._windows[route.id] = known
        return known[1]

    def observe(self, route: Route, passed: bool) -> dict[str, Any] | None:
        """Record a verdict; the numbers of a breach when the window falls below the floor."""
        window = self._window(route)
        window.append(passed)
        floor = route.spec.rollback.floor
        if floor is None or not route.mode.student_answers:
            return None
        if len(window) < min(route.spec.rollback.min_samples, window.maxlen or 1):
            return None
        rate = sum(window) / len(window)
        if rate >= floor or (route.id, route.version) in self._tripped:
            return None
        self._tripped.add((route.id, route.version))
        return {
            "pass_rate": round(rate, 6),
            "floor": floor,
            "window": len(window),
            "at": int(time.time()),
        }

    def forget(self, route_id: str) -> None:
        """A route changed in a way that restarts its window (e.g. a new student)."""
        self._windows.pop(route_id, None)


def supervised(
    tasks: set[asyncio.Task[Any]], on_error: Callable[[BaseException], None]
) -> Callable[[asyncio.Task[Any]], None]:
    """A done-callback that forgets a finished background task and reports its failure."""

    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            on_error(task.exception())  # type: ignore[arg-type]

    return done
