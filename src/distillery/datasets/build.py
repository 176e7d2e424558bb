"""The steps that turn candidate examples into the rows and statistics of a dataset version.

In order (:meth:`DatasetsService._store` runs them): every candidate is checked with the
fine-tuning JSONL rules (:func:`check_examples`; invalid ones are counted and listed, none valid
is a 400); duplicates are found (``dedupe``) and each one is given the split key of the example
it duplicates (:func:`split_keys`), so a duplicate never lands in another split than its original
(no leakage); each example is assigned to train/validation/test by a stable hash of its key and
its tokens counted (:func:`assign_splits`; duplicates are dropped unless kept); then the
version's statistics are written: size warnings, the duplicates found, where each split's
examples came from (teachers, prompts and prompt versions) and the estimated training cost
(``epochs`` x tokens, each example capped at the token limit, at the model's training price).
Lists in the statistics stop at ``MAX_LISTED`` entries; their counts are complete.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distillery.costs import savings
from distillery.costs.prices import PriceTable
from distillery.datasets.dedupe import DedupeMode, Duplicate
from distillery.datasets.specs import DatasetSpec, ImportSpec
from distillery.datasets.split import SPLITS, assign, group_key
from distillery.errors import InvalidRequestError
from distillery.store.datasets import NewDatasetItem
from distillery.wire.fine_tuning_jsonl import (
    TokenCounter,
    auto_n_epochs,
    example_problems,
    example_tokens,
)

MAX_LISTED = 1000  # duplicates / invalid rows listed in a version's stats (counts are complete)

SourceKey = tuple[str, str | None, str | None, bool]  # teacher, prompt, prompt version, corrected


@dataclass
class Candidate:
    completion_id: str | None
    example: dict[str, Any]
    corrected: bool = False
    # lineage: the model that produced it, its prompt and prompt version (None for imports)
    source: tuple[str, str | None, str | None] | None = None
    # "synthetic" / "relabel" (None: captured or imported); stored on the item
    origin: str | None = None
    # a split fixed by the caller (a synthesis keeps its seeds' splits and puts its own rows
    # in train only); None: assigned by the stable hash
    split: str | None = None


@dataclass(frozen=True)
class BuildOptions:
    """The building options a spec carries (both kinds of spec have them)."""

    ratios: dict[str, float]
    dedupe: DedupeMode
    near_threshold: float
    keep_duplicates: bool
    training_model: str | None
    epochs: int | None

    @classmethod
    def of(cls, spec: DatasetSpec | ImportSpec, ratios: dict[str, float]) -> BuildOptions:
        return cls(
            ratios=ratios,
            dedupe=spec.dedupe,
            near_threshold=spec.near_threshold,
            keep_duplicates=spec.keep_duplicates,
            training_model=spec.training_model,
            epochs=spec.epochs,
        )


@dataclass
class Assignment:
    """The version's rows and what each split holds."""

    items: list[NewDatasetItem] = field(default_factory=list)
    per_split: dict[str, dict[str, int]] = field(
        default_factory=lambda: {s: {"examples": 0, "tokens": 0, "corrected": 0} for s in SPLITS}
    )
    sources: dict[str, Counter[SourceKey]] = field(
        default_factory=lambda: {s: Counter() for s in SPLITS}
    )
    origins: dict[str, Counter[str]] = field(default_factory=lambda: {s: Counter() for s in SPLITS})
    train_tokens: list[int] = field(default_factory=list)


def check_examples(
    candidates: list[Candidate],
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """The valid candidates and the invalid ones (completion id, first problem); none valid is
    a 400."""
    invalid: list[dict[str, Any]] = []
    valid: list[Candidate] = []
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
    return valid, invalid


def split_keys(
    valid: list[Candidate], duplicates: list[Duplicate]
) -> tuple[list[str], dict[int, int]]:
    """Each example's split key (a duplicate takes its original's) and duplicate -> original."""
    keys = [group_key(c.example) for c in valid]
    duplicate_of = {d.index: d.of for d in duplicates}
    for d in duplicates:  # a duplicate goes where its original goes (leakage-safe)
        root = d.of
        while root in duplicate_of:
            root = duplicate_of[root]
        keys[d.index] = keys[root]
    return keys, duplicate_of


def assign_splits(
    valid: list[Candidate],
    keys: list[str],
    duplicate_of: dict[int, int],
    *,
    ratios: dict[str, float],
    keep_duplicates: bool,
    counter: TokenCounter,
) -> Assignment:
    """The rows of the version: each kept example in its split, with its token count."""
    out = Assignment()
    for i, cand in enumerate(valid):
        if i in duplicate_of and not keep_duplicates:
            continue
        split = cand.split or assign(keys[i], ratios)
        tokens, _ = example_tokens(cand.example, counter)
        out.items.append(
            NewDatasetItem(
                split=split,
                completion_id=cand.completion_id,
                example=cand.example,
                corrected=cand.corrected,
                tokens=tokens,
                origin=cand.origin,
            )
        )
        origin = cand.origin or ("captured" if cand.completion_id else "imported")
        out.origins[split][origin] += 1
        out.per_split[split]["examples"] += 1
        out.per_split[split]["tokens"] += tokens
        out.per_split[split]["corrected"] += int(cand.corrected)
        if cand.source is not None:
            out.sources[split][(*cand.source, cand.corrected)] += 1
        if split == "train":
            out.train_tokens.append(tokens)
    return out


def size_warnings(assignment: Assignment, max_tokens_per_example: int) -> list[str]:
    """Examples that training will truncate; a train split too small to fine-tune on."""
    warnings = []
    over = sum(1 for it in assignment.items if it.tokens > max_tokens_per_example)
    if over:
        warnings.append(
            f"{over} example(s) exceed {max_tokens_per_example} tokens and will "
            "be truncated in training."
        )
    train = assignment.per_split["train"]["examples"]
    if train and train < 10:
        warnings.append(f"The train split has {train} example(s); fine-tuning needs at least 10.")
    return warnings


def duplicates_stats(
    valid: list[Candidate], duplicates: list[Duplicate], *, mode: DedupeMode, kept: bool
) -> dict[str, Any]:
    """What deduplication found: counts and the first ``MAX_LISTED`` pairs (by completion id,
    or by 1-based example number for imports)."""
    return {
        "mode": mode,
        "found": len(duplicates),
        "removed": 0 if kept else len(duplicates),
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
    }


def sources_view(counts: Counter[SourceKey]) -> dict[str, Any]:
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


def training_cost(
    prices: PriceTable,
    max_tokens_per_example: int,
    train_tokens: list[int],
    *,
    model: str | None,
    epochs: int | None,
) -> dict[str, Any]:
    """Billed tokens (``epochs`` x tokens, each example capped at the limit) and their price."""
    n_epochs = epochs or auto_n_epochs(len(train_tokens))
    billed = n_epochs * sum(min(max_tokens_per_example, t) for t in train_tokens)
    price = prices.get(model) if model else None
    per_million = price.training if price is not None else None
    usd = None
    if model is not None and per_million is not None:
        usd = round(savings.training_cost(prices, model, trained_tokens=billed), 6)
    return {
        "model": model,
        "epochs": n_epochs,
        "billed_tokens": billed,
        "price_per_million_tokens": per_million,
        "usd": usd,
    }
