"""The composition of the core: builds every service from settings, once per process.

This is the only module that wires backends together (for example it registers the local
provider from ``distillery.serving`` into the provider registry, so ``capture`` never knows a
local student exists).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillery.capture.service import CaptureService
from distillery.capture.writer import CompletionWriter
from distillery.costs.prices import PriceTable
from distillery.providers.registry import ProviderRegistry, register_kind
from distillery.security.redact import RedactingFilter
from distillery.settings import Config, Settings
from distillery.store import Store
from distillery.store.completions import CompletionsRepo
from distillery.store.keys import KeysRepo

log = logging.getLogger("distillery")


@dataclass
class Services:
    """Everything an edge needs, built once per process."""

    settings: Settings
    config: Config
    store: Store
    providers: ProviderRegistry
    prices: PriceTable
    completions: CompletionsRepo
    keys: KeysRepo
    writer: CompletionWriter
    capture: CaptureService
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.settings.home

    async def aclose(self) -> None:
        await self.providers.aclose()
        self.writer.close()

    def close_sync(self) -> None:
        self.writer.close()
        self.store.close()


def _register_local_kind() -> None:
    # Imported here: distillery.serving imports no torch until a local model is used.
    from distillery.serving.local_provider import LocalProvider

    register_kind("local", LocalProvider)  # type: ignore[arg-type]


def build_services(settings: Settings | None = None, config: Config | None = None) -> Services:
    settings = settings or Settings()
    config = config or Config.load(settings.config_path())
    settings.home.mkdir(parents=True, exist_ok=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    store = Store.open(settings.resolved_database_url())
    completions = CompletionsRepo(store)
    provider_configs = dict(config.providers)
    try:
        _register_local_kind()
    except ImportError as exc:  # local serving unavailable: serve the remote providers only
        log.warning("local models unavailable (%s); serving remote providers only", exc)
        provider_configs = {n: p for n, p in provider_configs.items() if p.kind != "local"}
    providers = ProviderRegistry.from_config(provider_configs)
    prices = PriceTable(config.prices)
    writer = CompletionWriter(completions.insert_many)
    capture = CaptureService(
        providers=providers, writer=writer, gateway=config.gateway, prices=prices
    )
    return Services(
        settings=settings,
        config=config,
        store=store,
        providers=providers,
        prices=prices,
        completions=completions,
        keys=KeysRepo(store),
        writer=writer,
        capture=capture,
    )
