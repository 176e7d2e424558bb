"""The composition of the core: builds every service from settings, once per process.

This is the only module that wires backends together: providers and trainers are built by their
kinds (``distillery.plugins``: the built-in ones and installed plugins alike) with what only this
module knows (the store's fine-tuned models, the home folder), so ``capture`` never knows a local
student exists.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from distillery.capture.chat import ChatCompletions
from distillery.capture.exchange import Recorder
from distillery.capture.redaction import build_redactor
from distillery.capture.writer import CompletionWriter
from distillery.costs.prices import PriceTable
from distillery.lifecycle import Hooks, Lifecycle, Periodic, SupervisedTask
from distillery.providers.base import AddsModels, ProviderContext
from distillery.providers.registry import ProviderRegistry
from distillery.providers.vllm import publish_adapter
from distillery.security.redact import RedactingFilter
from distillery.settings import Config, Settings
from distillery.store import Store
from distillery.store.completions import CompletionsRepo
from distillery.store.keys import KeysRepo
from distillery.store.models import FineTunedModelsRepo
from distillery.weights import ModelPreparation

if TYPE_CHECKING:
    from distillery.capture.embeddings import EmbeddingsService
    from distillery.capture.legacy import LegacyCompletions
    from distillery.capture.responses import ResponsesService
    from distillery.capture.stored import StoredCompletions
    from distillery.costs.service import CostsService
    from distillery.store.dashboard import Activity, Counts
    from distillery.store.models import FineTunedModel
    from distillery.training.jobs import FineTuningService
    from distillery.training.local.export import ModelExports
    from distillery.training.registry import TrainingRegistry

if TYPE_CHECKING:
    from distillery.routing.gateway import RoutedGateway
    from distillery.routing.service import RoutesService

if TYPE_CHECKING:
    from distillery.annotations.service import AnnotationsService
    from distillery.curation.service import CurationService
    from distillery.datasets.lineage import LineageService
    from distillery.datasets.service import DatasetsService
    from distillery.evals.calibration import JudgeCalibration
    from distillery.evals.service import EvalsService
    from distillery.files.service import FilesService

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
    recorder: Recorder  # builds and writes every endpoint's records
    chat: ChatCompletions  # POST /v1/chat/completions (capture.chat)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)

    @property
    def home(self) -> Path:
        return self.settings.home

    # --- files, annotations, datasets (the data a student learns from) --------------------------
    @functools.cached_property
    def files(self) -> FilesService:
        from distillery.files.service import FilesService
        from distillery.store.files import FilesRepo

        return FilesService(
            FilesRepo(self.store), self.home / "files", self.config.files, home=self.home
        )

    @functools.cached_property
    def annotations(self) -> AnnotationsService:
        from distillery.annotations.service import AnnotationsService
        from distillery.store.annotations import AnnotationsRepo

        return AnnotationsService(AnnotationsRepo(self.store), self.completions)

    @functools.cached_property
    def datasets(self) -> DatasetsService:
        from distillery.datasets.service import DatasetsService
        from distillery.store.datasets import DatasetsRepo

        return DatasetsService(
            DatasetsRepo(self.store),
            self.completions,
            prices=self.prices,
            config=self.config.files,
            home=self.home,
            annotations=self.annotations,
            files=self.files,
            terms=self.config.terms_of,
        )

    @functools.cached_property
    def curation(self) -> CurationService:
        """Synthetic data and relabelling (``distillery.curation``)."""
        from distillery.curation.service import CurationService

        return CurationService(
            datasets=self.datasets,
            completions=self.completions,
            providers=self.providers,
            prices=self.prices,
            evals=self.evals,
            terms=self.config.terms_of,
        )

    @functools.cached_property
    def lineage(self) -> LineageService:
        from distillery.datasets.lineage import LineageService
        from distillery.store.datasets import DatasetsRepo
        from distillery.store.jobs import JobsRepo

        return LineageService(
            datasets=DatasetsRepo(self.store),
            models=FineTunedModelsRepo(self.store),
            jobs=JobsRepo(self.store),
            completions=self.completions,
            annotations=self.annotations,
        )

    def __post_init__(self) -> None:
        self._declare_components()

    def _declare_components(self) -> None:
        """The background work of a server, started in this order and stopped in reverse
        (``distillery.lifecycle``; ``/health`` reports each by name)."""
        import asyncio

        from distillery.capture.retention import PURGE_INTERVAL_S, purge_expired

        # eval runs: resume unfinished ones when a server starts, pause them when it stops
        self.lifecycle.add(
            Hooks("evals", start=lambda: self.evals.resume(), stop=lambda: self.evals.shutdown())
        )

        async def purge() -> None:
            await asyncio.to_thread(
                purge_expired, self.completions, self.config.gateway.retention_days
            )

        # retention: purge at start, then every hour (a failed purge is retried an hour later)
        self.lifecycle.add(Periodic("retention", PURGE_INTERVAL_S, purge, at_start=True))

        async def maintain() -> None:
            await asyncio.to_thread(self.writer.maintain)

        # every second: restart a dead or stuck writer, replay the spool once the database is
        # back (so an outage heals while running, not at the next start)
        self.lifecycle.add(Periodic("capture", 1.0, maintain))

        # route outcomes: written in batches by a task; at stop, the background work in flight
        # (shadow answers, grades) ends first, and what is left is written last
        async def flush_outcomes() -> None:
            await asyncio.to_thread(self.gateway.outcomes.flush)

        self.lifecycle.add(
            SupervisedTask(
                "route_outcomes",
                lambda: self.gateway.outcomes.run(),
                before_stop=lambda: self.gateway.drain(),
                after_stop=flush_outcomes,
            )
        )

        ticks = 0

        async def reload_routes() -> None:
            """Pick up routes changed by other processes; every minute, expired cache goes."""
            nonlocal ticks
            await asyncio.to_thread(self.routes.refresh)
            ticks = (ticks + 1) % 30
            if ticks == 0:
                await asyncio.to_thread(
                    self.routes.repo.cache_clear, expired_before=int(time.time())
                )

        self.lifecycle.add(Periodic("routes", 2.0, reload_routes))
        self.lifecycle.add(ModelPreparation())  # reports the embedded students' first conversion

    @functools.cached_property
    def stored_completions(self) -> StoredCompletions:
        """The stored completions as the edges list, read, edit and delete them."""
        from distillery.capture.stored import StoredCompletions

        return StoredCompletions(self.completions)

    @functools.cached_property
    def responses(self) -> ResponsesService:
        """OpenAI's Responses API, proxied or answered locally (``distillery.capture.responses``)."""
        from distillery.capture.responses import ResponsesService

        return ResponsesService(
            providers=self.providers,
            recorder=self.recorder,
            completions=self.completions,
            gateway=self.config.gateway,
        )

    @functools.cached_property
    def legacy_completions(self) -> LegacyCompletions:
        """The legacy ``/v1/completions``, proxied and captured (``distillery.capture.legacy``)."""
        from distillery.capture.legacy import LegacyCompletions

        return LegacyCompletions(
            providers=self.providers, recorder=self.recorder, gateway=self.config.gateway
        )

    @functools.cached_property
    def embeddings(self) -> EmbeddingsService:
        """``/v1/embeddings``: proxied, or the local MiniLM (``distillery.capture.embeddings``)."""
        from distillery.capture.embeddings import EmbeddingsService

        return EmbeddingsService(self.providers)

    # --- costs, and the dashboard's overview ------------------------------------------------------
    @functools.cached_property
    def costs(self) -> CostsService:
        """The costs report, spend per model, training costs (``distillery.costs``)."""
        from distillery.costs.service import CostsService

        return CostsService(self.store, self.prices)

    def overview_counts(self) -> Counts:
        """How many completions, datasets, evals, eval runs, jobs and fine-tuned models."""
        from distillery.store.dashboard import DashboardRepo

        return DashboardRepo(self.store).counts()

    def recent_activity(self, *, limit: int = 12) -> list[Activity]:
        """The latest completions, datasets, eval runs and fine-tuning jobs, newest first."""
        from distillery.store.dashboard import DashboardRepo

        return DashboardRepo(self.store).recent_activity(limit=limit)

    # --- routes (a prompt's traffic moved to its student) ----------------------------------------
    @functools.cached_property
    def routes(self) -> RoutesService:
        """Routes, the parity gate and their stats (``distillery.routing.service``)."""
        from distillery.evals.graders.judging import ProviderJudge
        from distillery.evals.graders.registry import build_grader
        from distillery.routing.service import RoutesService
        from distillery.routing.table import RouteTable
        from distillery.store.routes import RoutesRepo

        judge = ProviderJudge(self.providers)
        return RoutesService(
            repo=RoutesRepo(self.store),
            table=RouteTable(),
            providers=self.providers,
            compare=lambda run_ids, baseline: self.evals.compare(run_ids, baseline=baseline),
            grader_factory=lambda cfg, param: build_grader(cfg, judge=judge, param=param),
            training_costs=lambda: self.costs.training_costs(),
            judge_check=None
            if (floor := self.config.evals.judge_min_kappa) is None
            else lambda cfg, param: self.judge_calibration.check_floor(cfg, floor, param),
        )

    @functools.cached_property
    def gateway(self) -> RoutedGateway:
        """Every capturing endpoint's requests, with the routes and the cache applied."""
        from distillery.routing.gateway import RoutedGateway

        gateway = RoutedGateway(
            table=self.routes.table,
            repo=self.routes.repo,
            prices=self.prices,
            cache_ttl_s=self.config.gateway.cache_ttl_s,
        )
        gateway.on_rollback = self.routes.auto_rollback
        self.routes.before_read = gateway.outcomes.flush
        return gateway

    @functools.cached_property
    def evals(self) -> EvalsService:
        """The Evals API, eval runs and run comparisons (``distillery.evals.service``)."""
        from distillery.evals.service import EvalsService

        return EvalsService(
            store=self.store,
            completions=self.completions,
            providers=self.providers,
            home=self.home,
            concurrency=self.config.evals.concurrency,
        )

    @functools.cached_property
    def judge_calibration(self) -> JudgeCalibration:
        """LLM judges calibrated against people's ratings (``distillery.evals.calibration``)."""
        from distillery.evals.calibration import JudgeCalibration
        from distillery.evals.graders.judging import ProviderJudge
        from distillery.store.calibrations import CalibrationsRepo

        return JudgeCalibration(
            self.annotations,
            self.completions,
            ProviderJudge(self.providers),
            repo=CalibrationsRepo(self.store),
            concurrency=self.config.evals.concurrency,
        )

    # --- fine-tuning (jobs, their worker, fine-tuned models) -------------------------------------
    @functools.cached_property
    def fine_tuned_models(self) -> FineTunedModelsRepo:
        return FineTunedModelsRepo(self.store)

    @functools.cached_property
    def exports(self) -> ModelExports:
        """Fine-tuned students as PEFT, merged or GGUF (``distillery.training.local.export``)."""
        from distillery.training.local.export import ModelExports

        return ModelExports(self.fine_tuned_models, self.config.providers, self.home)

    @functools.cached_property
    def fine_tuning(self) -> FineTuningService:
        """Fine-tuning jobs (``distillery.training.jobs``); ``distillery.worker`` runs them."""
        from distillery.store.jobs import JobsRepo
        from distillery.training.inputs import ServiceFiles
        from distillery.training.jobs import FineTuningService

        return FineTuningService(
            jobs=JobsRepo(self.store),
            models=self.fine_tuned_models,
            registry=_training_registry(self.config, self.home),
            files=ServiceFiles(self.files),
            home=self.home,
            on_model=lambda model: _serve_remote_model(self.providers, model),
        )

    async def aclose(self) -> None:
        await self.providers.aclose()
        self.writer.close()

    def close_sync(self) -> None:
        self.writer.close()
        self.store.close()


def _training_registry(config: Config, home: Path) -> TrainingRegistry:
    """Each model trains with its trainer kind (``[training] backend``, a job's choice, or the
    first kind that can train it)."""
    from distillery.training.registry import TrainingRegistry

    return TrainingRegistry(config.providers, home, training=config.training)


def _serve_remote_model(providers: ProviderRegistry, model: FineTunedModel) -> None:
    """A model a provider fine-tuned is served through that provider."""
    provider = providers.providers.get(model.provider)
    if model.adapter_path is None and isinstance(provider, AddsModels):
        provider.add_model(model.id)
    if model.adapter_path is not None:  # a LoRA student: to the vllm servers of its base
        publish_adapter(providers.providers.values(), model)


def build_services(settings: Settings | None = None, config: Config | None = None) -> Services:
    settings = settings or Settings()
    config = config or Config.load(settings.config_path())
    settings.home.mkdir(parents=True, exist_ok=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    store = Store.open(settings.resolved_database_url())
    completions = CompletionsRepo(store)
    # vllm servers first: a student published there is answered there, not in-process
    provider_configs = dict(sorted(config.providers.items(), key=lambda c: c[1].kind != "vllm"))
    context = ProviderContext(home=settings.home, fine_tunes=FineTunedModelsRepo(store).get)
    providers = ProviderRegistry.from_config(provider_configs, context=context)
    for model in FineTunedModelsRepo(store).list():
        _serve_remote_model(providers, model)
    prices = PriceTable(config.prices)
    writer = CompletionWriter(
        completions.insert_many,
        spool=settings.home / "spool" / "completions.jsonl",
        exists=completions.exists,
        redactor=build_redactor(config.capture.redaction),
    )
    writer.replay_spool()  # never raises for a record: what the database refuses is dead-lettered
    recorder = Recorder(writer, prices)
    return Services(
        settings=settings,
        config=config,
        store=store,
        providers=providers,
        prices=prices,
        completions=completions,
        keys=KeysRepo(store),
        writer=writer,
        recorder=recorder,
        chat=ChatCompletions(providers=providers, recorder=recorder, gateway=config.gateway),
    )
