"""Which backend trains a model: the trainer kind named, or the first one that can.

A trainer kind (``training.base.TrainerKind``: ``local``, ``openai`` or a plugin's, found through
``distillery.plugins``) says which providers' models it can train. A job's backend is, in order:
the job's ``distillery.backend``, then ``[training] backend`` when that kind can train the model,
then the first kind that can (the built-ins first). A backend is built once per (kind, provider)
with the kind's ``[training.backends.KIND]`` options, and the job records its kind, so a worker
that reclaims the job drives the same backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from distillery import plugins
from distillery.errors import ConfigError, InvalidRequestError, NotFoundError
from distillery.providers.local_config import LocalProviderConfig
from distillery.settings import ProviderConfig, TrainingConfig
from distillery.training.base import TrainerContext, TrainerKind, TrainingBackend


def trainer_kind(kind: str) -> TrainerKind:
    """The trainer kind ``kind`` names (built-in or a plugin's), or a ``ConfigError``."""
    found = plugins.load(plugins.TRAINERS_GROUP, kind)
    if not isinstance(found, TrainerKind):
        raise ConfigError(f"trainer kind {kind!r} is not a distillery.training.base.TrainerKind")
    return found


@dataclass(frozen=True)
class Resolved:
    backend: TrainingBackend
    kind: str  # the trainer kind, recorded with the job
    provider: str
    config: ProviderConfig
    model_path: str | None = None  # the base model's weights, when its provider names a path


class TrainingRegistry:
    """Backends for the configured providers, built on first use."""

    def __init__(
        self,
        providers: Mapping[str, ProviderConfig],
        home: Path,
        *,
        training: TrainingConfig | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.home = home
        self.training = training or TrainingConfig()
        self._built: dict[tuple[str, str], TrainingBackend] = {}

    @staticmethod
    def kinds() -> list[str]:
        return plugins.names(plugins.TRAINERS_GROUP)

    @staticmethod
    def kind(name: str) -> TrainerKind:
        return trainer_kind(name)

    def backend(self, kind: str, provider: str) -> TrainingBackend:
        """The ``kind`` backend for the models of ``provider`` (built once)."""
        built = self._built.get((kind, provider))
        if built is not None:
            return built
        config = self.providers.get(provider)
        if config is None:
            raise NotFoundError(f"no provider named {provider!r} is configured")
        trainer = self.kind(kind)
        try:
            options = trainer.config.model_validate(self.training.backends.get(kind, {}))
        except ValidationError as exc:
            raise ConfigError(f"[training.backends.{kind}]: {exc}") from exc
        backend = trainer.build(
            TrainerContext(
                provider=provider,
                provider_config=config,
                options=options,
                training=self.training,
                home=self.home,
                providers=self.providers,
            )
        )
        self._built[(kind, provider)] = backend
        return backend

    def resolve(self, model: str, *, backend: str | None = None) -> Resolved:
        """The backend that trains ``model`` (``backend``: the job's choice), or a 400."""
        if backend is not None and backend not in self.kinds():
            raise InvalidRequestError(
                f"Unknown trainer backend {backend!r}; known: {', '.join(self.kinds())}.",
                param="distillery.backend",
            )
        serving = [(n, c) for n, c in self.providers.items() if model in c.served_models()]
        for name, config in serving:
            kind = self._choose(config, backend)
            if kind is not None:
                return Resolved(
                    backend=self.backend(kind, name),
                    kind=kind,
                    provider=name,
                    config=config,
                    model_path=(
                        config.paths.get(model) if isinstance(config, LocalProviderConfig) else None
                    ),
                )
        if backend is not None and serving:
            raise InvalidRequestError(
                f"The trainer backend {backend!r} cannot train {model} (served by provider "
                f"{serving[0][0]!r}, kind {serving[0][1].kind}).",
                param="distillery.backend",
            )
        raise InvalidRequestError(
            f"Model {model} is not available for fine-tuning or does not exist. Fine-tune a base "
            "model of a local provider, or a model of an `openai`/`azure` provider.",
            param="model",
            code="model_not_available",
        )

    def _choose(self, config: ProviderConfig, requested: str | None) -> str | None:
        """The trainer kind for ``config``'s models: the requested one, the configured one, the
        first that can (None when none can)."""
        if requested is not None:
            return requested if self.kind(requested).trains(config) else None
        preferred = self.training.backend
        if preferred is not None and self.kind(preferred).trains(config):
            return preferred
        return next((k for k in self.kinds() if self.kind(k).trains(config)), None)

    def trainable_models(self) -> list[tuple[str, str]]:
        """``(model, provider)`` pairs that some backend can train."""
        return [
            (model, name)
            for name, config in self.providers.items()
            if self._choose(config, None) is not None
            for model in config.served_models()
        ]
