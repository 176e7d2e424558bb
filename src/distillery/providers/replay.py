"""``kind = "replay"``: a recorded teacher, answering chat completions from recorded exchanges.

Each recording file is JSONL in the shape ``distillery completions import`` accepts, one exchange
a line: ``messages``, ``model``, any other request field (``temperature``, ``tools``,
``response_format``, ...), ``response`` (a ChatCompletion object, or just the assistant's text;
``completion`` is another name for it; with neither, a last ``assistant`` message is the answer,
as in OpenAI's fine-tuning JSONL) and optional ``metadata``, ``created_at``, ``id`` (not part of
the request). A request is answered when its normalised form (``wire.chat.normalised_request``:
every field but ``stream``, ``stream_options``, ``user``, ``store``, ``metadata``,
``service_tier``) equals a recording's; two recordings of the same normalised request: the later
one (the later file, the later line) wins. Anything else is a 404 ``recording_not_found`` naming
the provider and the model: never a guess or a nearest match.

A line of ``distillery completions export`` (a stored ChatCompletion with its ``request``) is a
recording too: ``distillery completions export recordings.jsonl --metadata prompt=router``
records a prompt's captured traffic, to be replayed as its teacher.

The answer is the recorded ChatCompletion with its recorded usage, a fresh ``chatcmpl-`` id and
``created`` now; streamed, the same answer as OpenAI's chunk events (``wire.sse``). The files are
read, and every line checked, when the provider is built: a malformed line is a ``ConfigError``
naming the file and the line number.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field

from distillery import ids
from distillery.errors import ConfigError, NotFoundError
from distillery.providers.base import ModelInfo, ProviderContext, ProviderKind
from distillery.settings import ProviderConfig
from distillery.wire.chat import recorded_exchange, request_digest
from distillery.wire.sse import completion_events


class ReplayProviderConfig(ProviderConfig):
    """``kind = "replay"``: a recorded teacher answering from JSONL recordings."""

    KIND = "replay"
    models: list[str] = Field(
        default_factory=list,
        description="Model names it answers as; empty: every model named in its recordings.",
    )
    recordings: list[str] = Field(
        default_factory=list,
        description="JSONL files of recorded exchanges (the lines `distillery completions import` "
        "accepts); a relative path is relative to the distillery home. On identical requests the "
        "later recording wins.",
    )


# what a stored completion's export carries beside the ChatCompletion, not part of the answer
_STORED_FIELDS = ("request", "metadata", "request_id", "latency_ms", "cost_usd", "status", "error")


def _exported(line: Mapping[str, Any]) -> dict[str, Any]:
    """A line of ``distillery completions export`` (a stored ChatCompletion with its ``request``)
    in the importer's shape: the request's fields, and the ChatCompletion as ``response``."""
    request = {k: v for k, v in line["request"].items() if k != "responses"}
    return {**request, "response": {k: v for k, v in line.items() if k not in _STORED_FIELDS}}


def parse_recording(line: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(request, answer)`` of one recorded line; a ``ValueError`` says what is wrong."""
    if isinstance(line.get("request"), Mapping) and "choices" in line:
        line = _exported(line)
    messages = line.get("messages")
    if isinstance(messages, list) and not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
    ):
        raise ValueError("each message must be an object with a 'role'")
    request, answer = recorded_exchange(line, created=int(line.get("created_at") or 0))
    if not request["messages"]:
        raise ValueError("no request messages before the assistant's answer")
    return request, answer


def load_recordings(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Digest of the normalised request -> ``(request, answer)``, the later line winning."""
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"replay recordings {str(path)!r} cannot be read: {exc}") from exc
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = orjson.loads(raw)
                if not isinstance(line, dict):
                    raise ValueError("each line must be a JSON object")
                request, answer = parse_recording(line)
            except (orjson.JSONDecodeError, ValueError) as exc:
                raise ConfigError(
                    f"replay recordings {str(path)!r}, line {number}: {exc}"
                ) from None
            found[request_digest(request)] = {"model": request["model"], "answer": answer}
    return found


class ReplayProvider:
    """Answers the requests it has a recording of, as they were answered then."""

    kind = "replay"

    def __init__(self, name: str, config: ReplayProviderConfig, *, home: Path) -> None:
        self.name = name
        self.config = config
        paths = [p if p.is_absolute() else home / p for p in map(Path, config.recordings)]
        self._recordings = load_recordings(paths)
        recorded = [r["model"] for r in self._recordings.values()]
        self._models = list(dict.fromkeys(config.models or recorded))

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, owned_by=self.name) for m in self._models]

    def serves(self, model: str) -> bool:
        return model in self._models

    def _answer(self, body: Mapping[str, Any]) -> dict[str, Any]:
        found = self._recordings.get(request_digest(body))
        if found is None:
            raise NotFoundError(
                f"The replay provider {self.name!r} has no recording of this request "
                f"(model {body.get('model')!r}).",
                code="recording_not_found",
            )
        answer: dict[str, Any] = found["answer"]
        return {**answer, "id": ids.new_id(ids.CHAT_COMPLETION), "created": int(time.time())}

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._answer(body)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        answer = self._answer(body)  # a miss raises on the first step, before any byte
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
        for event in completion_events(answer, include_usage=include_usage):
            yield event

    async def aclose(self) -> None:
        return None


REPLAY = ProviderKind(
    kind="replay",
    config=ReplayProviderConfig,
    build=lambda name, config, context: _build(name, config, context),
    summary="A recorded teacher: answers chat requests from recorded JSONL exchanges, offline.",
)


def _build(name: str, config: ReplayProviderConfig, context: ProviderContext) -> ReplayProvider:
    return ReplayProvider(name, config, home=context.home)
