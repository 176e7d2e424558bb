"""A third-party plugin, written as one outside the package would be (test code only).

It adds a provider kind ``echo`` (answers with its ``prefix`` and the last user message; a model
it fine-tuned answers what it memorised) and a trainer kind ``memorize`` (learns each training
example's last user message -> assistant answer). Both find each other through the home folder,
as a real pair would through their own storage. ``../pyproject.toml`` declares the entry points;
the tests install it by writing its ``.dist-info`` (what pip writes) on ``sys.path``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from distillery.errors import InvalidRequestError
from distillery.providers.base import ModelInfo, ProviderContext, ProviderKind
from distillery.settings import ProviderConfig
from distillery.training.base import (
    FineTuneSpec,
    Hyperparameters,
    JobProgress,
    TrainerContext,
    TrainerKind,
    TrainingEvent,
)


def _memory_dir(home: Path) -> Path:
    return home / "echo-memory"


def _last_user(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


# -- the provider kind -------------------------------------------------------------------------


class EchoConfig(ProviderConfig):
    """``kind = "echo"``: answers with ``prefix`` and the last user message."""

    KIND = "echo"
    prefix: str = Field(default="echo: ", description="What every answer starts with.")


class EchoProvider:
    kind = "echo"

    def __init__(self, name: str, config: EchoConfig, home: Path) -> None:
        self.name = name
        self.config = config
        self.home = home
        self._fine_tunes: list[str] = []

    def models(self) -> list[ModelInfo]:
        ids = [*self.config.models, *self._fine_tunes]
        return [ModelInfo(id=m, owned_by="echo-plugin") for m in ids]

    def serves(self, model: str) -> bool:
        return model in self.config.models or model in self._fine_tunes

    def add_model(self, model_id: str) -> None:
        """A model the ``memorize`` trainer fine-tuned on one of this provider's models."""
        if model_id not in self._fine_tunes:
            self._fine_tunes.append(model_id)

    def remove_model(self, model_id: str) -> None:
        if model_id in self._fine_tunes:
            self._fine_tunes.remove(model_id)

    def _answer(self, body: dict[str, Any]) -> str:
        question = _last_user(list(body.get("messages") or []))
        memory = _memory_dir(self.home) / f"{uuid.uuid5(uuid.NAMESPACE_URL, body['model'])}.json"
        if memory.is_file():
            learned = json.loads(memory.read_text(encoding="utf-8"))
            if question in learned:
                return str(learned[question])
        return self.config.prefix + question

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise InvalidRequestError("messages must be a non-empty list", param="messages")
        text = self._answer(body)
        tokens = len(text.split())
        return {
            "id": f"chatcmpl-echo{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1},
        }

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        answer = await self.create(body)
        base = {k: answer[k] for k in ("id", "created", "model")}
        base["object"] = "chat.completion.chunk"
        text = answer["choices"][0]["message"]["content"]
        deltas = [{"role": "assistant", "content": ""}] + [
            {"content": word} for word in text.split(" ")
        ]
        for i, delta in enumerate(deltas):
            if i > 1:
                delta["content"] = " " + delta["content"]
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            yield b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"
        end = {"index": 0, "delta": {}, "finish_reason": "stop"}
        yield b"data: " + json.dumps({**base, "choices": [end]}).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        return None


def _build_provider(name: str, config: EchoConfig, context: ProviderContext) -> EchoProvider:
    return EchoProvider(name, config, context.home)


ECHO = ProviderKind(
    kind="echo",
    config=EchoConfig,
    build=_build_provider,
    summary="Echoes the last user message (a plugin).",
)


# -- the trainer kind --------------------------------------------------------------------------


class MemorizeOptions(BaseModel):
    """``[training.backends.memorize]``."""

    model_config = ConfigDict(extra="forbid")
    polls_to_finish: int = Field(default=2, ge=1, description="Polls a run takes to finish.")


class MemorizeBackend:
    name: ClassVar[str] = "memorize"

    def __init__(self, home: Path, options: MemorizeOptions) -> None:
        self.home = home
        self.options = options
        self.concurrency = 4
        self._polls: dict[str, int] = {}

    def validate(self, spec: FineTuneSpec) -> Hyperparameters:
        if spec.extras:
            first = sorted(spec.extras)[0]
            raise InvalidRequestError(f"memorize takes no '{first}'", param=f"distillery.{first}")
        n_epochs = spec.hyperparameters.n_epochs
        return Hyperparameters(n_epochs=1 if n_epochs == "auto" else n_epochs, batch_size=1)

    def start(self, spec: FineTuneSpec, *, resume: str | None = None) -> str:
        learned: dict[str, str] = {}
        for line in spec.training_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                messages = json.loads(line)["messages"]
                learned[_last_user(messages[:-1])] = messages[-1]["content"]
        model_id = f"ft:{spec.model}:{spec.suffix or 'memorized'}:{spec.job_id[-8:]}"
        folder = _memory_dir(self.home)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid5(uuid.NAMESPACE_URL, model_id)}.json"
        (folder / name).write_text(json.dumps(learned, ensure_ascii=False), encoding="utf-8")
        handle = spec.job_dir / "memorize.json"
        handle.parent.mkdir(parents=True, exist_ok=True)
        handle.write_text(json.dumps({"model": model_id, "n": len(learned)}), encoding="utf-8")
        return str(handle)

    def poll(self, handle: str) -> JobProgress:
        run = json.loads(Path(handle).read_text(encoding="utf-8"))
        if run.get("cancelled"):
            return JobProgress(status="cancelled")
        polls = self._polls[handle] = self._polls.get(handle, 0) + 1
        if polls < self.options.polls_to_finish:
            return JobProgress(status="running", step=0, total_steps=1)
        event = TrainingEvent(key="done", message=f"Memorised {run['n']} answers")
        return JobProgress(
            status="succeeded",
            events=[event],
            step=1,
            total_steps=1,
            trained_tokens=run["n"],
            remote_model=run["model"],
        )

    def cancel(self, handle: str) -> None:
        path = Path(handle)
        run = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**run, "cancelled": True}), encoding="utf-8")


def _trains(config: ProviderConfig) -> bool:
    return isinstance(config, EchoConfig)


def _build_trainer(context: TrainerContext) -> MemorizeBackend:
    return MemorizeBackend(context.home, context.options)


MEMORIZE = TrainerKind(
    kind="memorize",
    trains=_trains,
    build=_build_trainer,
    config=MemorizeOptions,
    summary="Memorises each example's answer (a plugin).",
)
