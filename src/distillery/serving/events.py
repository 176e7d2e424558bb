"""What the generation engine tells its callers: events per request, and the engine's status.

The engine thread never touches the caller's asyncio loop directly: each request has a
:class:`RequestHandle` whose :meth:`~RequestHandle.post` hands a list of events to the loop with
``call_soon_threadsafe`` (one list per request per engine step), and the caller reads them in
order from :meth:`~RequestHandle.events` until ``RequestDone`` or ``RequestFailed``. A handle
whose loop is closed is marked cancelled, so the engine frees the request's slots at its next
step. torch-free: the provider imports these without loading a model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from distillery.errors import DistilleryError


@dataclass(frozen=True)
class Admitted:
    """The first sequences of the request entered the batch (prefill done)."""


@dataclass(frozen=True)
class TextDelta:
    index: int
    text: str


@dataclass(frozen=True)
class ChoiceFinished:
    index: int
    finish_reason: str
    completion_tokens: int
    token_ids: tuple[int, ...] = ()  # the tokens generated (the one that stopped it excluded)


@dataclass(frozen=True)
class RequestDone:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache


@dataclass(frozen=True)
class RequestFailed:
    error: DistilleryError


EngineEvent = Admitted | TextDelta | ChoiceFinished | RequestDone | RequestFailed


class RequestHandle:
    """The asyncio side of a submitted request: events arrive in order, a batch per step."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[list[EngineEvent]] = asyncio.Queue()
        self.cancelled = False
        self.finished = False

    def post(self, events: list[EngineEvent]) -> None:
        """Called from the engine thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, events)
        except RuntimeError:  # the caller's loop is closed: nobody listens any more
            self.cancelled = True

    async def events(self) -> AsyncIterator[EngineEvent]:
        while not self.finished:
            for event in await self._queue.get():
                yield event
                if isinstance(event, RequestDone | RequestFailed):
                    self.finished = True
                    return


@dataclass(frozen=True)
class EngineStatus:
    model: str
    loaded: bool
    load_count: int
    device: str | None
    dtype: str | None
    context_length: int | None
    running_sequences: int
    waiting_requests: int
    adapters: tuple[tuple[str, int], ...]  # (model id, bytes) of the adapters in memory
    adapter_loads: dict[str, int] = field(default_factory=dict)
    prefix_cache_hits: int = 0  # prefills that reused a cached prompt prefix
    prefix_cache_misses: int = 0
