"""Relay a chat or legacy completion stream (``relay``): assemble its answer from the SSE events
(``StreamAccumulator`` for ``chat.completion.chunk``), show its client the id it is stored under
(``IdGate``) and hold the final event until the exchange is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from distillery.capture.relayable import close_stream, error_event, unrelayable
from distillery.capture.writer import CompletionWriter
from distillery.errors import DistilleryError
from distillery.wire.encoding import UnencodableError, dumps


class SseAccumulator:
    """Feed a stream's raw SSE bytes as they pass through: its ``data:`` events are parsed, an
    error event kept (``error``), ``data: [DONE]`` noted (``done``); each chunk goes to
    ``_chunk``, which a subclass writes for its endpoint's chunks."""

    def __init__(self) -> None:
        self._buffer = b""
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self.service_tier: str | None = None
        self.usage: Any = None
        self.error: dict[str, Any] | None = None
        self.done = False
        self._choices: dict[int, dict[str, Any]] = {}

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            idx = self._find_boundary()
            if idx is None:
                return
            event, sep_len = idx
            raw = self._buffer[:event]
            self._buffer = self._buffer[event + sep_len :]
            self._event(raw)

    def _find_boundary(self) -> tuple[int, int] | None:
        positions = [(self._buffer.find(sep), len(sep)) for sep in (b"\n\n", b"\r\n\r\n")]
        found = [(p, n) for p, n in positions if p >= 0]
        return min(found) if found else None

    def _event(self, raw: bytes) -> None:
        payload = b"".join(
            line[5:].lstrip() for line in raw.splitlines() if line.startswith(b"data:")
        )
        if not payload:
            return
        if payload.strip() == b"[DONE]":
            self.done = True
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk and "choices" not in chunk:
            err = chunk["error"]
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            return
        self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> None:
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        self.created = self.created or chunk.get("created")
        self.system_fingerprint = chunk.get("system_fingerprint") or self.system_fingerprint
        self.service_tier = chunk.get("service_tier") or self.service_tier
        if chunk.get("usage"):  # kept as sent (one that is not an object counts nothing)
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict):
                self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        raise NotImplementedError

    def completion(self) -> dict[str, Any]:
        """The answer the events so far assemble."""
        raise NotImplementedError


class StreamAccumulator(SseAccumulator):
    """A ``chat.completion.chunk`` stream; ``completion()`` gives the assembled ChatCompletion."""

    def _choice(self, choice: dict[str, Any]) -> None:
        index = int(choice.get("index", 0))
        acc = self._choices.setdefault(
            index,
            {
                "index": index,
                "role": "assistant",
                "content": None,
                "tool_calls": {},
                "refusal": None,
                "finish_reason": None,
                "logprobs": None,
            },
        )
        delta = choice.get("delta") or {}
        if delta.get("role"):
            acc["role"] = delta["role"]
        if delta.get("content") is not None:
            acc["content"] = (acc["content"] or "") + delta["content"]
        if delta.get("refusal") is not None:
            acc["refusal"] = (acc["refusal"] or "") + delta["refusal"]
        for call in delta.get("tool_calls") or []:
            slot = acc["tool_calls"].setdefault(
                int(call.get("index", 0)),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if call.get("id"):
                slot["id"] = call["id"]
            fn = call.get("function") or {}
            slot["function"]["name"] += fn.get("name") or ""
            slot["function"]["arguments"] += fn.get("arguments") or ""
        if choice.get("finish_reason"):
            acc["finish_reason"] = choice["finish_reason"]
        if choice.get("logprobs"):
            lp = acc["logprobs"] or {"content": []}
            lp["content"].extend(choice["logprobs"].get("content") or [])
            acc["logprobs"] = lp

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            acc = self._choices[index]
            # ``refusal`` is required (nullable) in the SDK types, as in a non-streamed answer
            message: dict[str, Any] = {
                "role": acc["role"],
                "content": acc["content"],
                "refusal": acc["refusal"],
            }
            if acc["tool_calls"]:
                message["tool_calls"] = [acc["tool_calls"][i] for i in sorted(acc["tool_calls"])]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": acc["finish_reason"],
                    "logprobs": acc["logprobs"],
                }
            )
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.usage,
            "system_fingerprint": self.system_fingerprint,
            "service_tier": self.service_tier,
        }


class IdRewriter:
    """Rewrites the ``id`` of each ``chat.completion.chunk`` event from ``old`` to ``new``.

    Used only when a stream is stored under another id than the upstream's (the upstream reused
    a stored id, or sent none usable), so that the client sees the id it can look up. Events are
    re-framed: ``feed`` returns the complete events seen so far, ``flush`` what is left. An event
    that cannot be written back (nested deeper than orjson writes) raises ``UnencodableError``.
    """

    def __init__(self, old: str | None, new: str) -> None:
        self.old = old
        self.new = new
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out: list[bytes] = []
        while True:
            positions = [(self._buffer.find(sep), sep) for sep in (b"\n\n", b"\r\n\r\n")]
            found = [(p, sep) for p, sep in positions if p >= 0]
            if not found:
                return b"".join(out)
            end, sep = min(found)
            out.append(self._event(self._buffer[:end]) + sep)
            self._buffer = self._buffer[end + len(sep) :]

    def flush(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest

    def _event(self, raw: bytes) -> bytes:
        lines = raw.splitlines()
        data = [line for line in lines if line.startswith(b"data:")]
        if not data:
            return raw
        payload = b"".join(line[5:].lstrip() for line in data)
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return raw
        if not isinstance(chunk, dict) or "id" not in chunk:
            return raw
        if chunk["id"] == self.old or self.old is None:
            chunk["id"] = self.new
        others = [line for line in lines if not line.startswith(b"data:")]
        return b"\n".join([*others, b"data: " + dumps(chunk)])


class IdGate:
    """The client sees the id its stream is stored under.

    The bytes are held until the first event names the upstream's id; the writer then claims
    it (a fresh id when it is stored or in flight already, or unusable), and the events are
    rewritten only when the two differ, so the usual stream passes through unchanged.
    """

    def __init__(self, writer: CompletionWriter) -> None:
        self.writer = writer
        self.id = ""
        self._waiting: list[bytes] | None = []
        self._rewriter: IdRewriter | None = None

    async def through(self, chunk: bytes, acc: SseAccumulator) -> bytes:
        if self._waiting is not None:
            self._waiting.append(chunk)
            if acc.id is None and not acc.done:
                return b""
            self.id = await asyncio.to_thread(self.writer.claim, acc.id)
            if self.id != acc.id:
                self._rewriter = IdRewriter(acc.id, self.id)
            chunk, self._waiting = b"".join(self._waiting), None
        return self._rewriter.feed(chunk) if self._rewriter is not None else chunk

    async def finish(self, held: bytes) -> bytes:
        """What is left to send before ``held``; claims an id if no event named one."""
        if self._waiting is not None:
            self.id = await asyncio.to_thread(self.writer.claim, None)
            return b"".join(self._waiting) + held
        return held + self._rewriter.flush() if self._rewriter is not None else held


@dataclass
class Relayed:
    """How a relayed stream ended: the id it was shown under (``IdGate``), the failure that cut it
    (``error``: the upstream's, or the 502 of an event the gateway could not write back) and the
    error event the upstream itself sent (``acc.error``)."""

    stored_id: str | None = None
    error: DistilleryError | None = None


async def passthrough(first: bytes, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """An upstream's stream as it comes (nothing recorded)."""
    yield first
    async for chunk in source:
        yield chunk


async def relay(
    first: bytes,
    source: AsyncIterator[bytes],
    acc: SseAccumulator,
    gate: IdGate | None,
    finish: Callable[[Relayed], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """A chat or legacy completion stream passed through as it comes, fed to ``acc``.

    With a ``gate`` (a stored exchange) the client sees the id the record is stored under, and
    the final ``data: [DONE]`` is held until ``finish`` has committed it. ``finish`` runs once
    the stream has ended, however it ended. A stream whose events must be rewritten but cannot be
    ends with an error event (a 502's) instead of ``[DONE]``; an upstream failure mid-stream is
    raised after the record is written.
    """
    held = b""
    ended = Relayed()
    cut: DistilleryError | None = None  # an event the gateway could not write back
    pending = [first]
    try:
        while True:
            chunk = pending.pop() if pending else await source.__anext__()
            acc.feed(chunk)
            if gate is not None:
                chunk = await gate.through(chunk, acc)
            if acc.done and gate is not None:  # hold [DONE] until the record is durable
                held += chunk
            elif chunk:
                yield chunk
    except StopAsyncIteration:
        pass
    except DistilleryError as exc:
        ended.error = exc
    except UnencodableError as exc:
        ended.error = cut = unrelayable(exc)
        await close_stream(source)
    if gate is not None:
        held = await gate.finish(held)
        ended.stored_id = gate.id
    await finish(ended)
    if cut is not None:  # what is held (the rest, [DONE]) was not rewritten: not sent
        yield error_event(cut)
        return
    if held:
        yield held
    if ended.error is not None:
        raise ended.error
