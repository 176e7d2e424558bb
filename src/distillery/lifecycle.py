"""The process's background work, declared as named components and supervised in one place.

A component has a ``name``, ``async start()``, ``async stop()`` and ``health()``: a dict with at
least ``state`` (``running``, ``stopped`` or ``failed``), ``restarts`` and ``last_error``.
``Lifecycle`` starts its components in the order they were added (a start that fails stops the
ones already started, then raises), stops them in reverse (a stop that fails is logged and the
others still stop) and reports them by name (``/health``'s ``components``).

The common case is ``SupervisedTask``: an asyncio task that runs until stopped (``Periodic``: a
tick every so often). When it dies (raises, returns, or is cancelled by someone else) the failure
is logged with its traceback, counted in ``restarts``, shown as ``last_error`` (the exception's
type and first line, tokens masked: never a traceback), and the task starts again: no background
work dies silently. ``Hooks`` is a component made of a start and a stop function.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar

from distillery.security.redact import redact

log = logging.getLogger("distillery.lifecycle")

State = Literal["running", "stopped", "failed"]
Step = Callable[[], Awaitable[None]]


def describe(exc: BaseException) -> str:
    """An exception as ``/health`` shows it: its type and the first line of its message (a
    database error's own text repeats the statement and its parameters), tokens masked."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return redact(f"{type(orig).__name__}: {lines[0][:200] if lines else ''}".rstrip(": "))


class Component(Protocol):
    """Background work started and stopped with the process, and reported by name."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


class Hooks:
    """A component made of a start and a stop function (e.g. resume eval runs at start, pause
    them at stop): ``running`` between the two; a start or a stop that raises marks it
    ``failed`` (and raises)."""

    def __init__(self, name: str, *, start: Step | None = None, stop: Step | None = None) -> None:
        self.name = name
        self._start = start
        self._stop = stop
        self.state: State = "stopped"
        self.last_error: str | None = None

    async def _step(self, step: Step | None, then: State) -> None:
        try:
            if step is not None:
                await step()
        except Exception as exc:
            self.state, self.last_error = "failed", describe(exc)
            raise
        self.state = then

    async def start(self) -> None:
        await self._step(self._start, "running")

    async def stop(self) -> None:
        await self._step(self._stop, "stopped")

    def health(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": 0, "last_error": self.last_error}


class SupervisedTask:
    """An asyncio task running ``run()`` until stopped, restarted (after ``restart_delay_s``)
    whenever it dies. ``before_stop`` runs before the task is cancelled (e.g. wait for work in
    flight), ``after_stop`` after (e.g. write what is left); both run even if the other fails."""

    def __init__(
        self,
        name: str,
        run: Step,
        *,
        restart_delay_s: float = 1.0,
        before_stop: Step | None = None,
        after_stop: Step | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self.restart_delay_s = restart_delay_s
        self._before_stop = before_stop
        self._after_stop = after_stop
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.state: State = "stopped"
        self.restarts = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self.state = "running"
        self._task = asyncio.create_task(self._supervise(), name=f"distillery:{self.name}")
        self._task.add_done_callback(self._ended)

    async def _supervise(self) -> None:
        while True:
            self.state = "running"
            try:
                await self._run()
            except asyncio.CancelledError as exc:
                if self._stopping or self._cancelling():
                    raise
                self._died(exc)  # cancelled by something else than stop(): it restarts
            except Exception as exc:
                self._died(exc)
            else:
                self._died(None)
            await asyncio.sleep(self.restart_delay_s)

    @staticmethod
    def _cancelling() -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    def _died(self, exc: BaseException | None) -> None:
        self.restarts += 1
        self.state = "failed"
        if exc is None:
            self.last_error = "the task returned"
            log.error("%s: the task returned; restarting it", self.name)
        else:
            self.last_error = describe(exc)
            log.error(
                "%s: the task failed; restarting it in %s s",
                self.name,
                self.restart_delay_s,
                exc_info=exc,
            )

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The supervisor itself ended: by stop(), or (never expected) by a BaseException."""
        if task.cancelled() and self._stopping:
            return
        self.state = "failed"
        exc = None if task.cancelled() else task.exception()
        self.last_error = describe(exc) if exc is not None else "the supervisor was cancelled"
        log.error("%s: the supervisor ended: %s", self.name, self.last_error, exc_info=exc)

    async def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        try:
            try:
                if self._before_stop is not None:
                    await self._before_stop()
            finally:
                try:
                    await self._cancel()
                finally:
                    if self._after_stop is not None:
                        await self._after_stop()
        except Exception as exc:
            self.state, self.last_error = "failed", describe(exc)
            raise
        self.state = "stopped"

    def health(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error}


class Periodic(SupervisedTask):
    """``tick()`` every ``interval_s`` (the first one at once when ``at_start``), until stopped.
    A tick that raises is a death like any other: logged, counted, and the loop starts again (the
    next tick one interval later)."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        tick: Step,
        *,
        at_start: bool = False,
    ) -> None:
        super().__init__(name, self._loop, restart_delay_s=0.0)
        self.interval_s = interval_s
        self._tick = tick
        self._at_start = at_start
        self._fresh = True
        self.ticks = 0

    async def start(self) -> None:
        self._fresh = True
        await super().start()

    async def _loop(self) -> None:
        if self._at_start and self._fresh:
            self._fresh = False
            await self._beat()
        while True:
            await asyncio.sleep(self.interval_s)
            await self._beat()

    async def _beat(self) -> None:
        await self._tick()
        self.ticks += 1

    def health(self) -> dict[str, Any]:
        return {**super().health(), "ticks": self.ticks}


C = TypeVar("C", bound=Component)


class Lifecycle:
    """The process's components: started in order, stopped in reverse, reported by name."""

    def __init__(self) -> None:
        self._components: list[Component] = []
        self._started: list[Component] = []
        # the event loop the components run on, while started: work done on other threads
        # (a distillation) starts its eval runs there
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, component: C) -> C:
        """Declare a component (before ``start``); its name is unique."""
        if any(c.name == component.name for c in self._components):
            raise ValueError(f"a component named {component.name!r} is already declared")
        self._components.append(component)
        return component

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._components]

    def __getitem__(self, name: str) -> Component:
        for component in self._components:
            if component.name == name:
                return component
        raise KeyError(name)

    async def start(self) -> None:
        """Start every component not running yet, in order; if one fails to start, the ones
        started before it are stopped and the error is raised."""
        self.loop = asyncio.get_running_loop()
        for component in self._components:
            if component in self._started:
                continue
            try:
                await component.start()
            except Exception:
                log.exception("starting %s failed; stopping the components started", component.name)
                await self.stop()
                raise
            self._started.append(component)

    async def stop(self) -> None:
        """Stop the started components in reverse order; a failure is logged, never skips one."""
        self.loop = None
        while self._started:
            component = self._started.pop()
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)

    def health(self) -> dict[str, dict[str, Any]]:
        """Each component's health, by name, in start order."""
        found: dict[str, dict[str, Any]] = {}
        for component in self._components:
            try:
                found[component.name] = component.health()
            except Exception as exc:
                log.exception("the health of %s failed", component.name)
                found[component.name] = {
                    "state": "failed",
                    "restarts": 0,
                    "last_error": describe(exc),
                }
        return found
