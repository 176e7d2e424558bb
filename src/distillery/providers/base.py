"""The Provider seam.

A provider turns an OpenAI chat-completions request body into a response. It works on plain JSON
dicts and raw SSE bytes rather than typed objects so that the gateway forwards what it received and
passes streamed chunks through byte for byte. Remote HTTP APIs (``openai``, ``azure``) and the
in-process student (``local``, in ``distillery.serving``) implement the same protocol.

The other OpenAI endpoints a client may point here are optional capabilities of a provider:
``EmbeddingsProvider`` (``/v1/embeddings``), ``LegacyCompletionsProvider`` (``/v1/completions``)
and ``ResponsesProvider`` (``/v1/responses``), which the remote HTTP APIs implement; the registry
routes them to a provider that lists the model and has the capability (a Responses request for a
model without one is answered through chat completions, ``distillery.capture.responses``).

A provider *kind* (:class:`ProviderKind`) is what a ``[providers.NAME]`` table's ``kind`` names:
its config model and how to build a provider from a table, given a :class:`ProviderContext` (what
the composition root knows that a provider may need: the home folder and the fine-tuned models).
Built-in kinds and plugins are found the same way (``distillery.plugins``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from distillery.settings import ProviderConfig


@dataclass(frozen=True)
class ModelInfo:
    id: str
    owned_by: str
    created: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """Serves chat completions for the models it lists."""

    name: str
    kind: str

    def models(self) -> list[ModelInfo]:
        """The models this provider serves now."""
        ...

    def serves(self, model: str) -> bool:
        """Whether ``model`` is served here (fine-tuned ids may be resolved lazily)."""
        ...

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Non-streaming completion: the ChatCompletion JSON object.

        Raises a ``DistilleryError`` subclass (mapped to the OpenAI error envelope) on failure.
        """
        ...

    def stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """Streaming completion: raw SSE bytes (``data: {...}\\n\\n`` events, ``data: [DONE]``).

        Errors before the first byte raise; errors mid-stream end the iterator with an error event.
        """
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EmbeddingsProvider(Protocol):
    """A provider that also answers ``POST /v1/embeddings`` for the models it lists."""

    name: str

    def serves(self, model: str) -> bool: ...

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """OpenAI's ``CreateEmbeddingResponse`` JSON object for an embeddings request body."""
        ...


@runtime_checkable
class LegacyCompletionsProvider(Protocol):
    """A provider that also answers the legacy ``POST /v1/completions`` (``text_completion``)."""

    name: str

    def serves(self, model: str) -> bool: ...

    async def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``text_completion`` JSON object (non-streaming)."""
        ...

    def completions_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """Raw SSE bytes of a streamed legacy completion, as :meth:`Provider.stream`."""
        ...


# Capabilities a kind declares by implementing them whole (checked with ``isinstance``; the
# contract tests in tests/contracts fail a kind that has part of one).
@runtime_checkable
class HoldsSecrets(Protocol):
    """A provider with credentials (its key, secret-looking headers): masked in every log line."""

    secrets: tuple[str, ...]


@runtime_checkable
class AddsModels(Protocol):
    """A provider whose model list grows at run time: the models it fine-tuned itself."""

    def add_model(self, model_id: str) -> None: ...

    def remove_model(self, model_id: str) -> None: ...


@runtime_checkable
class HostsAdapters(Protocol):
    """A provider serving LoRA students on a shared base; it forgets a deleted one."""

    def unregister_adapter(self, model_id: str) -> None: ...


CAPABILITIES: dict[type, tuple[str, ...]] = {
    HoldsSecrets: ("secrets",),
    AddsModels: ("add_model", "remove_model"),
    HostsAdapters: ("unregister_adapter",),
}


class FineTune(Protocol):
    """What a provider needs to know of a fine-tuned model (``store.models.FineTunedModel``)."""

    @property
    def id(self) -> str: ...

    @property
    def base_model(self) -> str: ...

    @property
    def adapter_path(self) -> str | None: ...

    @property
    def created_at(self) -> int: ...


class FineTuneLookup(Protocol):
    def __call__(self, model_id: str, /) -> FineTune | None: ...


@dataclass(frozen=True)
class ProviderContext:
    """What a provider kind may use when it is built, beyond its own table."""

    home: Path
    fine_tunes: FineTuneLookup | None = None  # ``ft:`` id -> the fine-tuned model, or None


@dataclass(frozen=True)
class ProviderKind:
    """A provider kind: what ``kind = "..."`` names (built-in or a plugin's entry point).

    ``build(name, config, context)`` gets ``config`` validated with ``config`` (the kind's model,
    a subclass of ``settings.ProviderConfig``) and returns a :class:`Provider`.
    """

    kind: str
    config: type[ProviderConfig]
    build: Callable[[str, Any, ProviderContext], Provider]
    summary: str = ""


@runtime_checkable
class ResponsesProvider(Protocol):
    """A provider that also answers OpenAI's Responses API (``POST /v1/responses``)."""

    name: str
    responses_api: bool  # False: a subclass that must be asked through chat completions

    def serves(self, model: str) -> bool: ...

    async def responses(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``Response`` JSON object (non-streaming)."""
        ...

    def responses_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """Raw SSE bytes of a streamed response (``response.*`` events), as
        :meth:`Provider.stream`."""
        ...
