"""Which backend trains a model: chosen from the provider that serves the base model.

A model of a ``local`` provider trains with the local LoRA backend; a model of an ``openai`` or
``azure`` provider trains through that provider's fine-tuning API. Backends register per provider
kind with ``register_backend`` (the same door a plugin would use); the composition root
(``services.py``) registers the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from distillery.errors import InvalidRequestError, NotFoundError
from distillery.settings import ProviderConfig
from distillery.training.base import TrainingBackend

BackendFactory = Callable[[str, ProviderConfig, Path], TrainingBackend]
"""``factory(provider_name, provider_config, home)``."""

_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(provider_kind: str, factory: BackendFactory) -> None:
    _FACTORIES[provider_kind] = factory


@dataclass(frozen=True)
class Resolved:
    backend: TrainingBackend
    provider: str
    config: ProviderConfig


class TrainingRegistry:
    """Backends for the configured providers, built on first use."""

    def __init__(
        self,
        providers: Mapping[str, ProviderConfig],
        home: Path,
        *,
        factories: Mapping[str, BackendFactory] | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.home = home
        self._factories = dict(factories) if factories is not None else None
        self._built: dict[str, TrainingBackend] = {}

    def _factory(self, kind: str) -> BackendFactory | None:
        factories = self._factories if self._factories is not None else _FACTORIES
        return factories.get(kind)

    def for_provider(self, provider: str) -> TrainingBackend:
        built = self._built.get(provider)
        if built is not None:
            return built
        config = self.providers.get(provider)
        if config is None:
            raise NotFoundError(f"no provider named {provider!r} is configured")
        factory = self._factory(config.kind)
        if factory is None:
            raise InvalidRequestError(
                f"provider {provider!r} ({config.kind}) has no fine-tuning backend", param="model"
            )
        backend = factory(provider, config, self.home)
        self._built[provider] = backend
        return backend

    def resolve(self, model: str) -> Resolved:
        """The backend that can train ``model``, or a 400 naming ``model``."""
        for name, config in self.providers.items():
            served = set(config.models) | set(config.deployments)
            if model in served and self._factory(config.kind) is not None:
                return Resolved(backend=self.for_provider(name), provider=name, config=config)
        raise InvalidRequestError(
            f"Model {model} is not available for fine-tuning or does not exist. Fine-tune a base "
            "model of a local provider, or a model of an `openai`/`azure` provider.",
            param="model",
            code="model_not_available",
        )

    def trainable_models(self) -> list[tuple[str, str]]:
        """``(model, provider)`` pairs that some backend can train."""
        return [
            (model, name)
            for name, config in self.providers.items()
            if self._factory(config.kind) is not None
            for model in dict.fromkeys([*config.models, *config.deployments])
        ]
