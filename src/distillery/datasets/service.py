"""Versioned datasets: immutable snapshots of training examples, split and deduplicated.

``create_version`` selects stored completions (:mod:`distillery.datasets.select`), refuses or
flags the selection (mixed prompt versions, teachers' terms: :mod:`distillery.datasets.guards`),
puts accepted corrections in place of the original outputs, checks every example with the
fine-tuning JSONL rules, removes (or groups) duplicates (:mod:`distillery.datasets.dedupe`),
assigns each example to train/validation/test by a stable hash (:mod:`distillery.datasets.split`),
counts tokens, estimates the training cost (those steps: :mod:`distillery.datasets.build`), and
stores the version with a copy of every row: later edits of stored completions or annotations
never change an existing version. ``import_jsonl`` builds a version the same way from an uploaded
fine-tuning JSONL file.

This module is the service the HTTP and CLI edges call: building, reading, exporting
(:mod:`distillery.datasets.export`) and the JSON views (:mod:`distillery.datasets.views`). The
request bodies are in :mod:`distillery.datasets.specs`.
"""

from __future__ import annotations

import builtins
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from distillery.costs.prices import PriceTable
from distillery.datasets import views
from distillery.datasets.build import (
    MAX_LISTED,
    BuildOptions,
    Candidate,
    assign_splits,
    check_examples,
    duplicates_stats,
    size_warnings,
    sources_view,
    split_keys,
    training_cost,
)
from distillery.datasets.dedupe import example_text, find_duplicates
from distillery.datasets.export import line_of, write_jsonl, write_jsonl_file
from distillery.datasets.guards import check_prompt_versions, check_terms
from distillery.datasets.select import example_from_completion, select_completions
from distillery.datasets.specs import DatasetSpec, ImportSpec
from distillery.datasets.split import SPLITS, parse_ratios
from distillery.embedders import Embedder
from distillery.errors import InvalidRequestError
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.settings import FilesConfig
from distillery.store.completions import CompletionsRepo
from distillery.store.datasets import Dataset, DatasetItem, DatasetsRepo, DatasetVersion
from distillery.store.records import Page
from distillery.wire.fine_tuning_jsonl import TokenCounter, parse_jsonl, token_counter
from distillery.wire.params import parse_params

if TYPE_CHECKING:
    from distillery.annotations.service import AnnotationsService
    from distillery.files.service import FilesService
    from distillery.store.files import StoredFile


class DatasetsService:
    def __init__(
        self,
        repo: DatasetsRepo,
        completions: CompletionsRepo,
        *,
        prices: PriceTable,
        config: FilesConfig,
        home: Path | None = None,
        annotations: AnnotationsService | None = None,
        files: FilesService | None = None,
        embedder: Embedder | None = None,
        counter: TokenCounter | None = None,
        terms: Callable[[str], str | None] | None = None,
    ) -> None:
        self.repo = repo
        self.completions = completions
        self.prices = prices
        self.config = config
        self.home = home
        self.annotations = annotations
        self.files = files
        self.embedder = embedder
        self._counter = counter
        self.terms = terms

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = token_counter(self.home)
        return self._counter

    # --- building -------------------------------------------------------------------------------

    def create_version(
        self,
        name: str,
        spec: DatasetSpec | Mapping[str, Any],
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        progress: ProgressCallback | None = None,
    ) -> DatasetVersion:
        """Snapshot the completions of ``spec.source`` as the next version of dataset ``name``.

        Raises 400 (``param="split"``) for ratios that do not sum to 1, 400 (``param="source"``)
        when the source matches nothing, 409 with ``strict`` when prompt versions are mixed.
        """
        spec = parse_params(DatasetSpec, dict(spec) if isinstance(spec, Mapping) else spec)
        _check_name(name)
        ratios = parse_ratios(spec.split)
        report(progress, ProgressEvent("select", 0, None, message=spec.source.describe()))
        selection = select_completions(self.completions, spec.source, annotations=self.annotations)
        chosen = selection.completions
        if not chosen:
            raise InvalidRequestError(
                f"{spec.source.describe()[0].upper()}{spec.source.describe()[1:]} matches no "
                "stored completion with an output: nothing to put in the dataset.",
                param="source",
                code="empty_selection",
            )
        versions, warnings = check_prompt_versions(
            chosen, spec.prompt_version_key, strict=spec.strict
        )
        terms = check_terms(chosen, self.terms, spec.acknowledge_terms)
        corrections = (
            self.annotations.corrections([c.id for c in chosen]) if self.annotations else {}
        )
        candidates = []
        for c in chosen:
            fix = corrections.get(c.id)
            corrected = fix.corrected_output if fix is not None else None
            source = (c.model, c.metadata.get("prompt"), c.metadata.get(spec.prompt_version_key))
            candidates.append(
                Candidate(
                    c.id, example_from_completion(c, corrected), corrected is not None, source
                )
            )
        report(progress, ProgressEvent("select", len(chosen), len(chosen)))
        stats: dict[str, Any] = {
            "selected": len(chosen) + selection.no_output,
            "skipped_no_output": selection.no_output,
            "prompt_versions": dict(versions),
            "warnings": warnings,
            "terms": terms,
        }
        return self.store_candidates(
            name,
            candidates,
            spec_dump=spec.model_dump(mode="json"),
            options=BuildOptions.of(spec, ratios),
            stats=stats,
            description=description,
            metadata=metadata,
            progress=progress,
        )

    def import_jsonl(
        self,
        name: str,
        stream: IO[bytes],
        spec: ImportSpec | Mapping[str, Any] | None = None,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        source_name: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> DatasetVersion:
        """A new dataset version from fine-tuning JSONL; any invalid line is a 400 naming it."""
        spec = parse_params(
            ImportSpec, dict(spec or {}) if not isinstance(spec, ImportSpec) else spec
        )
        _check_name(name)
        ratios = parse_ratios(spec.split)
        examples, rep = parse_jsonl(
            stream,
            counter=self.counter,
            max_tokens=self.config.max_tokens_per_example,
            max_line_bytes=self.config.max_line_bytes,
        )
        if not rep.ok:
            raise InvalidRequestError(rep.error_message(), param="file", code="invalid_file_format")
        if not examples:
            raise InvalidRequestError(
                "The file has no examples.", param="file", code="invalid_file"
            )
        candidates = [Candidate(None, ex) for _, ex in examples]
        dump = {**spec.model_dump(mode="json"), "source": {"jsonl": source_name}}
        stats: dict[str, Any] = {
            "selected": len(examples),
            "skipped_no_output": 0,
            "prompt_versions": {},
            "warnings": [str(w) for w in rep.warnings if w.kind == "example_over_token_limit"][:20],
        }
        return self.store_candidates(
            name,
            candidates,
            spec_dump=dump,
            options=BuildOptions.of(spec, ratios),
            stats=stats,
            description=description,
            metadata=metadata,
            progress=progress,
        )

    def store_candidates(
        self,
        name: str,
        candidates: list[Candidate],
        *,
        spec_dump: dict[str, Any],
        options: BuildOptions,
        stats: dict[str, Any],
        description: str | None,
        metadata: dict[str, Any] | None,
        progress: ProgressCallback | None,
    ) -> DatasetVersion:
        """Check, deduplicate, split and count the candidates, then store them as the next
        version of ``name`` with its statistics (the steps are in ``build``)."""
        valid, invalid = check_examples(candidates)
        report(progress, ProgressEvent("dedupe", 0, len(valid), message=options.dedupe))
        texts = [example_text(c.example) for c in valid]
        duplicates = find_duplicates(
            texts, options.dedupe, threshold=options.near_threshold, embedder=self.embedder
        )
        report(progress, ProgressEvent("dedupe", len(valid), len(valid)))
        keys, duplicate_of = split_keys(valid, duplicates)
        assignment = assign_splits(
            valid,
            keys,
            duplicate_of,
            ratios=options.ratios,
            keep_duplicates=options.keep_duplicates,
            counter=self.counter,
        )
        items = assignment.items
        stats["warnings"].extend(size_warnings(assignment, self.config.max_tokens_per_example))
        stats.update(
            {
                "invalid": len(invalid),
                "invalid_items": invalid[:MAX_LISTED],
                "duplicates": duplicates_stats(
                    valid, duplicates, mode=options.dedupe, kept=options.keep_duplicates
                ),
                "corrected": sum(1 for it in items if it.corrected),
                "examples": len(items),
                "splits": assignment.per_split,
                "sources": {s: sources_view(c) for s, c in assignment.sources.items() if c},
                "origins": {s: dict(sorted(c.items())) for s, c in assignment.origins.items() if c},
                "tokens": sum(it.tokens for it in items),
                "tokenizer": self.counter.name,
                "training_cost": self.training_cost(
                    assignment.train_tokens, model=options.training_model, epochs=options.epochs
                ),
            }
        )
        spec_dump = {**spec_dump, "split": options.ratios}
        report(progress, ProgressEvent("store", 0, len(items)))
        _, version = self.repo.create_version(
            name=name,
            spec=spec_dump,
            stats=stats,
            items=items,
            description=description,
            metadata=metadata,
        )
        report(progress, ProgressEvent("store", len(items), len(items)))
        return version

    def training_cost(
        self, train_tokens: list[int], *, model: str | None, epochs: int | None
    ) -> dict[str, Any]:
        """Billed tokens (``epochs`` x tokens, each example capped at the limit) and their price."""
        return training_cost(
            self.prices,
            self.config.max_tokens_per_example,
            train_tokens,
            model=model,
            epochs=epochs,
        )

    # --- reading --------------------------------------------------------------------------------

    def get(self, ref: str) -> Dataset:
        return self.repo.get(ref)

    def list(
        self, *, after: str | None = None, limit: int = 20, order: Literal["asc", "desc"] = "desc"
    ) -> Page[Dataset]:
        return self.repo.list(after=after, limit=limit, order=order)

    def delete(self, ref: str) -> Dataset:
        return self.repo.delete(ref)

    def get_version(self, ref: str, version: int | None = None) -> DatasetVersion:
        """Version ``version`` (latest when None) of the dataset with this id or name."""
        return self.repo.get_version(self.repo.get(ref).id, version)

    def list_versions(self, ref: str) -> builtins.list[DatasetVersion]:
        return self.repo.list_versions(self.repo.get(ref).id)

    def list_items(
        self,
        ref: str,
        version: int | None = None,
        *,
        split: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> Page[DatasetItem]:
        _check_split(split)
        v = self.get_version(ref, version)
        return self.repo.list_items(v.id, split=split, after_seq=after, limit=limit)

    # --- export ---------------------------------------------------------------------------------

    def iter_examples(
        self,
        ref: str,
        version: int | None = None,
        *,
        split: str | None = "train",
        lineage: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """The training lines of a split (checked now, read lazily in batches); with
        ``lineage`` each carries its origin under ``metadata`` (``export.line_of``)."""
        _check_split(split)
        v = self.get_version(ref, version)
        return (line_of(item, lineage=lineage) for item in self.repo.iter_items(v.id, split=split))

    def export_jsonl(
        self,
        ref: str,
        out: IO[bytes] | Path,
        *,
        version: int | None = None,
        split: str | None = "train",
        lineage: bool = False,
    ) -> int:
        """Write a split (all splits when None) as fine-tuning JSONL; returns the line count.

        A path is written to a temporary file and renamed, so it never holds half an export.
        """
        _check_split(split)
        v = self.get_version(ref, version)
        if isinstance(out, Path):
            return write_jsonl_file(self.repo, v.id, split, out, lineage=lineage)
        return write_jsonl(self.repo, v.id, split, out, lineage=lineage)

    def export_to_file(
        self, ref: str, *, version: int | None = None, split: str | None = "train"
    ) -> StoredFile:
        """Export a split as a ``fine-tune`` file (``/v1/files``); its id goes to a job."""
        if self.files is None:
            raise InvalidRequestError("files are not available", param="file")
        _check_split(split)
        dataset = self.repo.get(ref)
        v = self.repo.get_version(dataset.id, version)
        with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as buffer:
            count = write_jsonl(self.repo, v.id, split, buffer)  # type: ignore[arg-type]
            if count == 0:
                raise InvalidRequestError(
                    f"Split {split!r} of {dataset.name} v{v.version} has no examples.",
                    param="split",
                )
            buffer.seek(0)
            file = self.files.create(
                buffer,  # type: ignore[arg-type]
                filename=f"{dataset.name}-v{v.version}-{split or 'all'}.jsonl",
                purpose="fine-tune",
            )
        self.repo.record_file(file.id, v.id, split)  # lineage: a job's file -> this version
        return file

    # --- views ----------------------------------------------------------------------------------

    dataset_view = staticmethod(views.dataset_view)
    version_view = staticmethod(views.version_view)
    item_view = staticmethod(views.item_view)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise InvalidRequestError("A dataset needs a name of 1 to 256 characters.", param="name")


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise InvalidRequestError(
            f"Unknown split {split!r}: use {', '.join(SPLITS)}.", param="split"
        )


# Dataset and DatasetVersion: the records the service returns, for the edges
__all__ = [
    "MAX_LISTED",
    "Dataset",
    "DatasetSpec",
    "DatasetVersion",
    "DatasetsService",
    "ImportSpec",
]
