"""Provider registry: builds providers from configuration and routes a model name to one.

Each ``[providers.NAME]`` table is built by its kind (``providers.base.ProviderKind``), found
through ``distillery.plugins``: the built-in kinds and installed plugins come through the same
door. A kind whose dependencies are missing (an ``ImportError`` while building it, e.g. no torch
for ``local``) is logged and left out, and the other providers are served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from distillery import plugins
from distillery.errors import ConfigError, InvalidRequestError, NotFoundError
from distillery.providers.base import (
    AddsModels,
    EmbeddingsProvider,
    HostsAdapters,
    LegacyCompletionsProvider,
    ModelInfo,
    Provider,
    ProviderContext,
    ProviderKind,
    ResponsesProvider,
)
from distillery.settings import ProviderConfig

log = logging.getLogger(__name__)


def provider_kind(kind: str) -> ProviderKind:
    """The kind ``kind`` names (built-in or a plugin's), or a ``ConfigError``."""
    found = plugins.load(plugins.PROVIDERS_GROUP, kind)
    if not isinstance(found, ProviderKind):
        raise ConfigError(f"provider kind {kind!r} is not a distillery.providers.base.ProviderKind")
    return found


class ProviderRegistry:
    """The configured providers; ``route(model)`` finds the one that serves a model."""

    def __init__(self, providers: dict[str, Provider] | None = None) -> None:
        self.providers: dict[str, Provider] = dict(providers or {})
        self._routes: dict[str, Provider] = {}
        self._retired: set[str] = set()  # fine-tunes deleted in this process

    @classmethod
    def from_config(
        cls,
        configs: Mapping[str, ProviderConfig],
        *,
        context: ProviderContext | None = None,
    ) -> ProviderRegistry:
        """Build every configured provider with its kind."""
        context = context or ProviderContext(home=Path.cwd())
        built: dict[str, Provider] = {}
        for name, cfg in configs.items():
            kind = provider_kind(cfg.kind)
            try:
                provider = kind.build(name, cfg, context)
            except ImportError as exc:
                log.warning("provider %r (%s) unavailable: %s", name, cfg.kind, exc)
                continue
            if not isinstance(provider, Provider):
                raise ConfigError(f"provider kind {cfg.kind!r} built no Provider for {name!r}")
            built[name] = provider
        return cls(built)

    def add(self, provider: Provider, *, first: bool = False) -> None:
        """Serve ``provider`` too; ``first``: before the others, for the models both serve."""
        others = {k: v for k, v in self.providers.items() if k != provider.name}
        self.providers = (
            {provider.name: provider, **others} if first else others | {provider.name: provider}
        )
        self._routes.clear()

    def route(self, model: str) -> Provider:
        cached = self._routes.get(model)
        if cached is not None:
            return cached
        if model in self._retired:
            raise _model_not_found(model)
        for provider in self.providers.values():
            if provider.serves(model):
                if not model.startswith("ft:"):
                    self._routes[model] = provider
                return provider
        raise _model_not_found(model)

    def route_embeddings(self, model: str) -> EmbeddingsProvider:
        """The provider that serves ``model`` and answers ``/v1/embeddings``."""
        found = self._route_capable(
            model, lambda p: isinstance(p, EmbeddingsProvider), "/v1/embeddings"
        )
        assert isinstance(found, EmbeddingsProvider)
        return found

    def route_completions(self, model: str) -> LegacyCompletionsProvider:
        """The provider that serves ``model`` and answers the legacy ``/v1/completions``."""
        found = self._route_capable(
            model, lambda p: isinstance(p, LegacyCompletionsProvider), "/v1/completions"
        )
        assert isinstance(found, LegacyCompletionsProvider)
        return found

    def route_responses(self, model: str) -> Provider | ResponsesProvider:
        """The provider for ``POST /v1/responses``: one that serves ``model`` and proxies the
        Responses API when there is one, else the provider that serves it (answered by
        translating to chat completions)."""

        def capable(p: Provider) -> bool:
            return isinstance(p, ResponsesProvider) and p.responses_api

        provider = self.route(model)  # 404 for a model nobody serves
        if capable(provider):
            return provider
        for other in self.providers.values():
            if other is not provider and capable(other) and other.serves(model):
                return other
        return provider

    def _route_capable(
        self, model: str, capable: Callable[[Provider], bool], endpoint: str
    ) -> Provider:
        provider = self.route(model)  # 404 for a model nobody serves
        if capable(provider):
            return provider
        for other in self.providers.values():  # another provider may list it with the endpoint
            if other is not provider and capable(other) and other.serves(model):
                return other
        raise InvalidRequestError(
            f"The model `{model}` is served by provider {provider.name!r} ({provider.kind}), "
            f"which does not answer {endpoint}: use a model of an openai or azure provider.",
            param="model",
            code="model_not_supported",
        )

    def retire(self, model_id: str) -> None:
        """Stop serving and listing ``model_id`` (a fine-tune deleted through the API)."""
        self._retired.add(model_id)
        self._routes.pop(model_id, None)
        for provider in self.providers.values():
            if isinstance(provider, AddsModels):
                provider.remove_model(model_id)
            if isinstance(provider, HostsAdapters):
                provider.unregister_adapter(model_id)

    def models(self) -> list[ModelInfo]:
        seen: dict[str, ModelInfo] = {}
        for provider in self.providers.values():
            for info in provider.models():
                if info.id not in self._retired:
                    seen.setdefault(info.id, info)
        return list(seen.values())

    def get(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            raise NotFoundError(f"no provider named {name!r}") from None

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": p.name, "kind": p.kind, "models": [m.id for m in p.models()]}
            for p in self.providers.values()
        ]


def _model_not_found(model: str) -> NotFoundError:
    return NotFoundError(
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )
