"""Versioned datasets: immutable snapshots of training examples, split and deduplicated.

``create_version`` selects stored completions (:mod:`distillery.datasets.select`), puts accepted
corrections in place of the original outputs, checks every example with the fine-tuning JSONL
rules, removes (or groups) duplicates (:mod:`distillery.datasets.dedupe`), assigns each example
to train/validation/test by a stable hash (:mod:`distillery.datasets.split`), counts tokens,
estimates the training cost, and stores the version with a copy of every row: later edits of
stored completions or annotations never change an existing version.

It also guards against mixing prompt versions: when the selected completions carry more than one
value of the ``prompt_version_key`` metadata key (``prompt_version`` by default) the version gets
a warning, or, with ``strict``, is refused with a 409 and nothing is stored.
"""

from __future__ import annotations

import builtins
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distillery.costs.prices import PriceTable
from distillery.datasets.dedupe import DEFAULT_NEAR_THRESHOLD, DedupeMode, example_text
from distillery.datasets.dedupe import find_duplicates as _find_duplicates
from distillery.datasets.select import DatasetSource, example_from_completion, select_completions
from distillery.datasets.split import SPLITS, assign, group_key, parse_ratios
from distillery.embedders import Embedder
from distillery.errors import ConflictError, InvalidRequestError
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.settings import TERMS_FORBID_TRAINING, FilesConfig
from distillery.store.completions import CompletionsRepo
from distillery.store.datasets import (
    Dataset,
    DatasetItem,
    DatasetsRepo,
    DatasetVersion,
    NewDatasetItem,
)
from distillery.store.records import Page, StoredCompletion
from distillery.wire.fine_tuning_jsonl import (
    TokenCounter,
    dump_line,
    example_problems,
    example_tokens,
    parse_jsonl,
    token_counter,
)
from distillery.wire.params import parse_params

if TYPE_CHECKING:
    from distillery.annotations.service import AnnotationsService
    from distillery.files.service import FilesService
    from distillery.store.files import StoredFile

MAX_LISTED = 1000  # duplicates / invalid rows listed in a version's stats (counts are complete)


class DatasetSpec(BaseModel):
    """How to build a version. ``split`` ratios must sum to 1."""

    model_config = ConfigDict(extra="forbid")
    source: DatasetSource = Field(default_factory=DatasetSource)
    split: dict[str, float] | None = None
    dedupe: DedupeMode = "exact"
    near_threshold: float = Field(default=DEFAULT_NEAR_THRESHOLD, gt=0, le=1)
    keep_duplicates: bool = False
    prompt_version_key: str = Field(default="prompt_version", min_length=1, max_length=64)
    strict: bool = False
    training_model: str | None = None
    epochs: int | None = Field(default=None, ge=1, le=50)
    acknowledge_terms: bool = False


class ImportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: dict[str, float] | None = None
    dedupe: DedupeMode = "exact"
    near_threshold: float = Field(default=DEFAULT_NEAR_THRESHOLD, gt=0, le=1)
    keep_duplicates: bool = False
    training_model: str | None = None
    epochs: int | None = Field(default=None, ge=1, le=50)


@dataclass
class _Candidate:
    completion_id: str | None
    example: dict[str, Any]
    corrected: bool = False
    # lineage: the model that produced it, its prompt and prompt version (None for imports)
    source: tuple[str, str | None, str | None] | None = None


def _sources_view(
    counts: Counter[tuple[str, str | None, str | None, bool]],
) -> dict[str, Any]:
    """Where a split's examples came from: per teacher model, per prompt and prompt version."""
    teachers: Counter[str] = Counter()
    prompts: dict[tuple[str | None, str | None], dict[str, int]] = {}
    for (model, prompt, version, corrected), n in counts.items():
        teachers[model] += n
        row = prompts.setdefault((prompt, version), {"examples": 0, "corrected": 0})
        row["examples"] += n
        row["corrected"] += n if corrected else 0
    return {
        "teachers": dict(sorted(teachers.items())),
        "prompts": [
            {"prompt": p, "prompt_version": v, **row}
            for (p, v), row in sorted(
                prompts.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))
            )
        ],
    }


def default_epochs(n_examples: int) -> int:
    """OpenAI's cookbook rule: 3 epochs, more for tiny sets, fewer for huge ones."""
    epochs = 3
    if n_examples and n_examples * epochs < 100:
        epochs = min(25, 100 // n_examples)
    elif n_examples * epochs > 25_000:
        epochs = max(1, 25_000 // n_examples)
    return epochs


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
        warnings: list[str] = []
        versions = Counter(
            c.metadata.get(spec.prompt_version_key)
            for c in chosen
            if c.metadata.get(spec.prompt_version_key) is not None
        )
        if len(versions) > 1:
            listed = ", ".join(f"{v} ({n})" for v, n in versions.most_common())
            message = (
                f"The selection mixes {len(versions)} values of metadata "
                f"'{spec.prompt_version_key}': {listed}. A student trained on mixed prompt "
                "versions learns neither; filter on one value."
            )
            if spec.strict:
                raise ConflictError(
                    message, param=spec.prompt_version_key, code="mixed_prompt_versions"
                )
            warnings.append(message)
        terms = self._check_terms(chosen, spec.acknowledge_terms)
        corrections = (
            self.annotations.corrections([c.id for c in chosen]) if self.annotations else {}
        )
        candidates = []
        for c in chosen:
            fix = corrections.get(c.id)
            corrected = fix.corrected_output if fix is not None else None
            source = (c.model, c.metadata.get("prompt"), c.metadata.get(spec.prompt_version_key))
            candidates.append(
                _Candidate(
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
        return self._store(
            name,
            candidates,
            spec_dump=spec.model_dump(mode="json"),
            ratios=ratios,
            dedupe=spec.dedupe,
            near_threshold=spec.near_threshold,
            keep_duplicates=spec.keep_duplicates,
            training_model=spec.training_model,
            epochs=spec.epochs,
            stats=stats,
            description=description,
            metadata=metadata,
            progress=progress,
        )

    def _check_terms(
        self, chosen: builtins.list[StoredCompletion], acknowledged: bool
    ) -> dict[str, Any]:
        """The teachers' terms of a selection: 409 when some forbid training and the request
        does not say ``acknowledge_terms: true``; otherwise what the version records."""
        counts = Counter(c.model for c in chosen)
        terms = {m: self.terms(m) if self.terms is not None else None for m in counts}
        restricted: dict[str, dict[str, Any]] = {
            m: {"terms": t, "count": counts[m]}
            for m, t in sorted(terms.items())
            if t in TERMS_FORBID_TRAINING
        }
        if restricted and not acknowledged:
            n = sum(r["count"] for r in restricted.values())
            listed = ", ".join(f"{m} ({r['terms']}, {r['count']})" for m, r in restricted.items())
            raise ConflictError(
                f"{n} of the {len(chosen)} selected completions come from models whose terms "
                f"restrict training on their outputs: {listed}. Send acknowledge_terms: true to "
                "build the dataset anyway (recorded with the version).",
                param="acknowledge_terms",
                code="teacher_terms",
            )
        return {
            "models": {m: {"terms": terms[m], "count": n} for m, n in sorted(counts.items())},
            "restricted": restricted,
            "acknowledged": bool(restricted) and acknowledged,
        }

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
        candidates = [_Candidate(None, ex) for _, ex in examples]
        dump = {**spec.model_dump(mode="json"), "source": {"jsonl": source_name}}
        stats: dict[str, Any] = {
            "selected": len(examples),
            "skipped_no_output": 0,
            "prompt_versions": {},
            "warnings": [str(w) for w in rep.warnings if w.kind == "example_over_token_limit"][:20],
        }
        return self._store(
            name,
            candidates,
            spec_dump=dump,
            ratios=ratios,
            dedupe=spec.dedupe,
            near_threshold=spec.near_threshold,
            keep_duplicates=spec.keep_duplicates,
            training_model=spec.training_model,
            epochs=spec.epochs,
            stats=stats,
            description=description,
            metadata=metadata,
            progress=progress,
        )

    def _store(
        self,
        name: str,
        candidates: list[_Candidate],
        *,
        spec_dump: dict[str, Any],
        ratios: dict[str, float],
        dedupe: DedupeMode,
        near_threshold: float,
        keep_duplicates: bool,
        training_model: str | None,
        epochs: int | None,
        stats: dict[str, Any],
        description: str | None,
        metadata: dict[str, Any] | None,
        progress: ProgressCallback | None,
    ) -> DatasetVersion:
        invalid: list[dict[str, Any]] = []
        valid: list[_Candidate] = []
        for cand in candidates:
            problems = example_problems(cand.example)
            if problems:
                invalid.append({"completion_id": cand.completion_id, "error": problems[0][1]})
            else:
                valid.append(cand)
        if not valid:
            raise InvalidRequestError(
                "None of the selected completions makes a valid training example "
                f"(first problem: {invalid[0]['error']}).",
                param="source",
                code="empty_selection",
            )
        report(progress, ProgressEvent("dedupe", 0, len(valid), message=dedupe))
        texts = [example_text(c.example) for c in valid]
        embedder = self.embedder
        duplicates = _find_duplicates(texts, dedupe, threshold=near_threshold, embedder=embedder)
        report(progress, ProgressEvent("dedupe", len(valid), len(valid)))
        keys = [group_key(c.example) for c in valid]
        duplicate_of = {d.index: d.of for d in duplicates}
        for d in duplicates:  # a duplicate goes where its original goes (leakage-safe)
            root = d.of
            while root in duplicate_of:
                root = duplicate_of[root]
            keys[d.index] = keys[root]
        items: list[NewDatasetItem] = []
        per_split = {s: {"examples": 0, "tokens": 0, "corrected": 0} for s in SPLITS}
        sources: dict[str, Counter[tuple[str, str | None, str | None, bool]]] = {
            s: Counter() for s in SPLITS
        }
        train_tokens: list[int] = []
        for i, cand in enumerate(valid):
            if i in duplicate_of and not keep_duplicates:
                continue
            split = assign(keys[i], ratios)
            tokens, _ = example_tokens(cand.example, self.counter)
            items.append(
                NewDatasetItem(
                    split=split,
                    completion_id=cand.completion_id,
                    example=cand.example,
                    corrected=cand.corrected,
                    tokens=tokens,
                )
            )
            per_split[split]["examples"] += 1
            per_split[split]["tokens"] += tokens
            per_split[split]["corrected"] += int(cand.corrected)
            if cand.source is not None:
                sources[split][(*cand.source, cand.corrected)] += 1
            if split == "train":
                train_tokens.append(tokens)
        over = sum(1 for it in items if it.tokens > self.config.max_tokens_per_example)
        if over:
            stats["warnings"].append(
                f"{over} example(s) exceed {self.config.max_tokens_per_example} tokens and will "
                "be truncated in training."
            )
        if per_split["train"]["examples"] and per_split["train"]["examples"] < 10:
            stats["warnings"].append(
                f"The train split has {per_split['train']['examples']} example(s); fine-tuning "
                "needs at least 10."
            )
        stats.update(
            {
                "invalid": len(invalid),
                "invalid_items": invalid[:MAX_LISTED],
                "duplicates": {
                    "mode": dedupe,
                    "found": len(duplicates),
                    "removed": 0 if keep_duplicates else len(duplicates),
                    "items": [
                        {
                            "completion_id": valid[d.index].completion_id,
                            "duplicate_of": valid[d.of].completion_id,
                            "kind": d.kind,
                            "similarity": round(d.similarity, 4),
                            **(
                                {}
                                if valid[d.index].completion_id
                                else {"example": d.index + 1, "duplicate_of_example": d.of + 1}
                            ),
                        }
                        for d in duplicates[:MAX_LISTED]
                    ],
                },
                "corrected": sum(1 for it in items if it.corrected),
                "examples": len(items),
                "splits": per_split,
                "sources": {s: _sources_view(c) for s, c in sources.items() if c},
                "tokens": sum(it.tokens for it in items),
                "tokenizer": self.counter.name,
                "training_cost": self.training_cost(
                    train_tokens, model=training_model, epochs=epochs
                ),
            }
        )
        spec_dump = {**spec_dump, "split": ratios}
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
        n_epochs = epochs or default_epochs(len(train_tokens))
        cap = self.config.max_tokens_per_example
        billed = n_epochs * sum(min(cap, t) for t in train_tokens)
        price = self.prices.get(model) if model else None
        per_million = price.training if price is not None else None
        return {
            "model": model,
            "epochs": n_epochs,
            "billed_tokens": billed,
            "price_per_million_tokens": per_million,
            "usd": round(billed * per_million / 1_000_000, 6) if per_million is not None else None,
        }

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
        self, ref: str, version: int | None = None, *, split: str | None = "train"
    ) -> Iterator[dict[str, Any]]:
        """The training lines of a split (checked now, read lazily in batches)."""
        _check_split(split)
        v = self.get_version(ref, version)
        return (item.example for item in self.repo.iter_items(v.id, split=split))

    def export_jsonl(
        self,
        ref: str,
        out: IO[bytes] | Path,
        *,
        version: int | None = None,
        split: str | None = "train",
    ) -> int:
        """Write a split (all splits when None) as fine-tuning JSONL; returns the line count.

        A path is written to a temporary file and renamed, so it never holds half an export.
        """
        _check_split(split)
        v = self.get_version(ref, version)
        if isinstance(out, Path):
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as stream:
                    count = self._write(v.id, split, stream)
                os.replace(tmp, out)
            finally:
                Path(tmp).unlink(missing_ok=True)
            return count
        return self._write(v.id, split, out)

    def _write(self, version_id: str, split: str | None, out: IO[bytes]) -> int:
        count = 0
        for item in self.repo.iter_items(version_id, split=split):
            out.write(dump_line(item.example))
            count += 1
        return count

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
            count = self._write(v.id, split, buffer)  # type: ignore[arg-type]
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

    @staticmethod
    def dataset_view(dataset: Dataset, version: DatasetVersion | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": dataset.id,
            "object": "distillery.dataset",
            "name": dataset.name,
            "description": dataset.description,
            "created_at": dataset.created_at,
            "metadata": dataset.metadata,
            "latest_version": dataset.latest_version,
        }
        if version is not None:
            out["version"] = DatasetsService.version_view(version)
        return out

    @staticmethod
    def version_view(version: DatasetVersion) -> dict[str, Any]:
        return {
            "id": version.id,
            "object": "distillery.dataset.version",
            "dataset_id": version.dataset_id,
            "version": version.version,
            "created_at": version.created_at,
            "spec": version.spec,
            "stats": version.stats,
        }

    @staticmethod
    def item_view(item: DatasetItem) -> dict[str, Any]:
        return {
            "id": str(item.seq),
            "object": "distillery.dataset.item",
            "version_id": item.version_id,
            "split": item.split,
            "completion_id": item.completion_id,
            "corrected": item.corrected,
            "tokens": item.tokens,
            "example": item.example,
        }


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise InvalidRequestError("A dataset needs a name of 1 to 256 characters.", param="name")


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise InvalidRequestError(
            f"Unknown split {split!r}: use {', '.join(SPLITS)}.", param="split"
        )
