"""Cold start: synthesis and relabelling as one service the HTTP, CLI and dashboard edges call.

``synthesize`` checks everything that can be checked before the teacher is asked anything (the
body, the teacher's route, its terms, a dollar cap's price, the graders, the seed version), then
either returns the estimate (``dry_run``) or runs the synthesis (``curation.synthesize``) and
stores its result as the next version of the seed dataset: every row of the seed version in its
split, the accepted synthetic rows in train, the curation report in ``stats.synthesis``.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distillery.curation.plan import Seeds, SynthesisSpec, load_seeds
from distillery.curation.synthesize import Synthesis, estimate, new_budget
from distillery.curation.teacher import Teacher, check_cap
from distillery.datasets.build import BuildOptions, Candidate
from distillery.datasets.guards import TermsOf, check_model_terms
from distillery.embedders import Embedder, default_embedder
from distillery.evals.graders.base import Grader
from distillery.evals.graders.judging import ProviderJudge
from distillery.evals.graders.registry import build_grader
from distillery.progress import ProgressCallback
from distillery.providers.registry import ProviderRegistry
from distillery.store.completions import CompletionsRepo
from distillery.store.records import NewCompletion
from distillery.wire.content import message_text
from distillery.wire.fine_tuning_jsonl import build_example
from distillery.wire.params import parse_params

if TYPE_CHECKING:
    from distillery.costs.prices import PriceTable
    from distillery.datasets.service import DatasetsService
    from distillery.evals.service import EvalsService
    from distillery.store.datasets import DatasetItem, DatasetVersion


class CurationService:
    def __init__(
        self,
        *,
        datasets: DatasetsService,
        completions: CompletionsRepo,
        providers: ProviderRegistry,
        prices: PriceTable,
        evals: EvalsService | None = None,
        embedder: Embedder | None = None,
        terms: TermsOf | None = None,
    ) -> None:
        self.datasets = datasets
        self.completions = completions
        self.providers = providers
        self.prices = prices
        self.evals = evals
        self._embedder = embedder
        self.terms = terms

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.datasets.embedder or default_embedder()
        return self._embedder

    # -- synthesis -------------------------------------------------------------------------------

    async def synthesize(
        self,
        dataset_ref: str,
        body: Mapping[str, Any] | SynthesisSpec,
        *,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """The estimate (``dry_run``) or the new dataset version with its curation report."""
        spec = body if isinstance(body, SynthesisSpec) else parse_params(SynthesisSpec, body)
        self.providers.route(spec.teacher)  # 404 for a model nobody serves
        check_cap(self.prices, spec.teacher, spec.max_usd, "max_usd")
        terms = check_model_terms(
            Counter({spec.teacher: spec.n}), self.terms, spec.acknowledge_terms
        )
        graders = self._graders(spec)
        dataset = await asyncio.to_thread(self.datasets.get, dataset_ref)
        seed_version = await asyncio.to_thread(self.datasets.get_version, dataset.id, spec.version)
        items = await asyncio.to_thread(
            lambda: list(self.datasets.repo.iter_items(seed_version.id, split=None))
        )
        seeds = await asyncio.to_thread(load_seeds, items, self.completions, spec)
        failing = await asyncio.to_thread(self._failing_inputs, spec)
        plan_estimate = estimate(
            spec,
            seeds,
            prices=self.prices,
            count=self.datasets.counter.count,
            seconds_per_call=await asyncio.to_thread(self._seconds_per_call, spec.teacher),
            needs_topics=not seeds.labels and not spec.coverage.topics,
        )
        if spec.dry_run:
            return {
                **plan_estimate,
                "dataset_id": dataset.id,
                "seed_version": seed_version.version,
                "label_field": seeds.label_field,
                "labels": seeds.labels,
                "languages": seeds.languages,
                "warnings": seeds.warnings,
            }
        teacher = Teacher(
            self.providers,
            self.prices,
            spec.teacher,
            new_budget(spec),
            concurrency=spec.concurrency,
        )
        run = Synthesis(
            spec,
            seeds,
            teacher,
            embedder=self.embedder,
            graders=graders,
            failing_inputs=failing,
            progress=progress,
            store=_SyntheticRows(self.completions),
        )
        outcome = await run.run()
        outcome.report["estimate"] = plan_estimate
        version = await asyncio.to_thread(
            self._store_version,
            dataset.name,
            seed_version,
            items,
            seeds,
            [(str(row.completion_id), row) for row in outcome.accepted],
            spec,
            outcome.report,
            terms,
            progress,
        )
        return self.datasets.dataset_view(self.datasets.get(dataset.id), version)

    def _store_version(
        self,
        name: str,
        seed_version: DatasetVersion,
        items: list[DatasetItem],
        seeds: Seeds,
        synthetic: list[tuple[str, Any]],
        spec: SynthesisSpec,
        report: dict[str, Any],
        terms: dict[str, Any],
        progress: ProgressCallback | None,
    ) -> DatasetVersion:
        candidates = [
            Candidate(it.completion_id, it.example, it.corrected, origin=it.origin, split=it.split)
            for it in items  # every row of the seed version, in its split
        ]
        source = (spec.teacher, seeds.prompt, None)
        for completion_id, row in synthetic:
            candidates.append(
                Candidate(
                    completion_id,
                    _example(seeds, row.input, row.answer),
                    source=source,
                    origin="synthetic",
                    split="train",
                )
            )
        ratios = seed_version.spec.get("split") or {"train": 1.0, "validation": 0.0, "test": 0.0}
        options = BuildOptions(
            ratios=ratios,
            dedupe="none",  # the synthetic inputs were deduplicated against every seed already
            near_threshold=1.0,
            keep_duplicates=True,
            training_model=seed_version.spec.get("training_model"),
            epochs=seed_version.spec.get("epochs"),
        )
        stats: dict[str, Any] = {
            "selected": len(candidates),
            "skipped_no_output": 0,
            "prompt_versions": {},
            "warnings": list(report["warnings"]),
            "terms": terms,
            "synthesis": report,
        }
        dump = {
            "source": {"synthesis": report["id"], "seed_version": seed_version.version},
            "synthesis": spec.model_dump(mode="json", exclude={"dry_run"}),
        }
        return self.datasets.store_candidates(
            name,
            candidates,
            spec_dump=dump,
            options=options,
            stats=stats,
            description=spec.description_of_version,
            metadata=None,
            progress=progress,
        )

    def _graders(self, spec: SynthesisSpec) -> list[Grader]:
        judge = ProviderJudge(self.providers)
        return [
            build_grader(cfg, judge=judge, embedder=self._embedder, param=f"graders[{i}]")
            for i, cfg in enumerate(spec.graders or [])
        ]

    def _failing_inputs(self, spec: SynthesisSpec) -> list[str]:
        """The inputs of the items an eval run failed (``coverage.failing_run_id``)."""
        run_id = spec.coverage.failing_run_id
        if run_id is None or self.evals is None:
            return []
        out = []
        for item in self.evals.output_items(run_id):
            if item.get("status") != "fail":
                continue
            messages = (item.get("sample") or {}).get("input") or []
            text = next(
                (
                    message_text(m)
                    for m in reversed(messages)
                    if isinstance(m, Mapping) and m.get("role") == "user"
                ),
                None,
            )
            if text is None:
                found = (item.get("datasource_item") or {}).get("input")
                text = found if isinstance(found, str) else None
            if text:
                out.append(text)
        return out

    def _seconds_per_call(self, model: str) -> float | None:
        """The teacher's median latency over its last stored answers (None: never seen)."""
        page = self.completions.list(model=model, limit=100, order="desc", status="completed")
        found = [c.latency_ms for c in page.data if c.latency_ms]
        return round(statistics.median(found) / 1000, 3) if found else None

    # -- relabelling -----------------------------------------------------------------------------

    async def relabel(
        self, body: Mapping[str, Any], progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Selected stored inputs answered again by another teacher (``curation.relabel``): the
        estimate (``dry_run``), or the new answers stored beside the old ones, compared, and the
        disagreements in a new annotation queue."""
        from distillery.curation.relabel import relabel

        return await relabel(
            body,
            completions=self.completions,
            annotations=self.datasets.annotations,
            providers=self.providers,
            prices=self.prices,
            terms=self.terms,
            count=lambda text: self.datasets.counter.count(text),
            seconds_per_call=self._seconds_per_call,
            progress=progress,
        )


class _SyntheticRows:
    """A synthesis's accepted rows, kept as stored completions as it goes."""

    def __init__(self, completions: CompletionsRepo) -> None:
        self.completions = completions

    def save(self, records: list[NewCompletion]) -> None:
        self.completions.insert_many(records)

    def mark_dropped(self, completion_ids: list[str | None]) -> None:
        for found in self.completions.get_many([c for c in completion_ids if c]):
            marked = {**found.metadata, "synthesis_rejected": "over_quota"}
            self.completions.update_metadata(found.id, marked)


def _example(seeds: Seeds, text: str, answer: Mapping[str, Any] | None) -> dict[str, Any]:
    choices = (answer or {}).get("choices") or [{}]
    message = choices[0].get("message") or {}
    return build_example(seeds.messages_for(text), message)
