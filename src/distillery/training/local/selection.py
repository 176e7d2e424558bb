"""Choosing what a local run keeps: the data's shape for the recipe, the held-out split, and the
checkpoint that scores best on the task's measure (``measure.py``).

- :func:`data_shape`: what :meth:`LocalSFTConfig.resolve_auto` reads (examples, the shared prompt
  prefix, tokens after it, the label space).
- :func:`hold_out`: without a validation file, ``holdout`` training examples are set aside, taken
  round-robin over the labels in a seeded order so every label is represented as far as the count
  allows (deterministic for a seed).
- :func:`choose` / :func:`should_stop`: the curve of validation scores per epoch, with epoch 0
  the model before training. The best score wins (a tie goes to the lower validation loss, then
  the earlier epoch); the run stops once ``patience`` epochs in a row have not beaten the best.
  When no epoch beats epoch 0 the base model is kept and the run says the student did not learn
  the task.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distillery.training.local.config import DataShape
from distillery.training.local.data import TokenizedExample
from distillery.training.local.measure import TaskMeasure, compact, json_object
from distillery.training.local.packing import shared_prefix_length


def label_of(measure: TaskMeasure, example: TokenizedExample) -> str:
    """The example's label for stratifying (its first field's value, or the whole answer)."""
    if measure.kind == "fields":
        obj = json_object(example.answer) or {}
        return compact(obj.get(measure.fields[0]))
    if measure.kind == "answer":
        return example.answer.strip()
    return ""


def hold_out(
    examples: Sequence[TokenizedExample], count: int, measure: TaskMeasure, seed: int
) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    """(kept for training, held out): ``count`` examples round-robin over the labels."""
    if count <= 0 or count >= len(examples):
        return list(examples), []
    rng = random.Random(seed * 7_919 + len(examples))
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_label[label_of(measure, ex)].append(i)
    queues = [rng.sample(idx, len(idx)) for _, idx in sorted(by_label.items())]
    rng.shuffle(queues)
    held: set[int] = set()
    while len(held) < count:
        for queue in queues:
            # a label keeps at least one training example
            if len(queue) > 1 and len(held) < count:
                held.add(queue.pop())
        if all(len(q) <= 1 for q in queues):
            break
    kept = [ex for i, ex in enumerate(examples) if i not in held]
    return kept, [examples[i] for i in sorted(held)]


def data_shape(examples: Sequence[TokenizedExample], measure: TaskMeasure) -> DataShape:
    """What the automatic recipe reads from the training examples."""
    prefix = shared_prefix_length(examples)
    rest = sum(ex.n_tokens - prefix for ex in examples) / max(1, len(examples))
    return DataShape(len(examples), prefix, rest, measure.n_labels)


@dataclass(frozen=True)
class Point:
    """One epoch's validation figures (epoch 0: before training)."""

    epoch: int
    score: float | None
    valid_loss: float | None

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "score": self.score, "valid_loss": self.valid_loss}


def _key(point: Point) -> tuple[float, float, int]:
    loss = point.valid_loss if point.valid_loss is not None else float("inf")
    return (point.score if point.score is not None else float("-inf"), -loss, -point.epoch)


def choose(points: Sequence[Point]) -> Point:
    """The best point of the curve (score, then lower loss, then the earlier epoch)."""
    return max(points, key=_key)


def should_stop(points: Sequence[Point], patience: int) -> bool:
    """Whether the last ``patience`` epochs all failed to beat the best one before them."""
    if patience <= 0 or len(points) <= patience:
        return False
    best_before = choose(points[:-patience])
    return all(_key(p) <= _key(best_before) for p in points[-patience:])


def explain(
    points: Sequence[Point], chosen: Point, measure: TaskMeasure, *, stopped_after: int | None
) -> str:
    """One sentence on the choice: the curve, the epoch kept and why."""
    curve = ", ".join(
        f"epoch {p.epoch}: {p.score:.1%}" if p.score is not None else f"epoch {p.epoch}: -"
        for p in points
    )
    what = measure.describe()
    stop = f"; stopped early after epoch {stopped_after}" if stopped_after is not None else ""
    if chosen.epoch == 0:
        return (
            f"No epoch beat the base model on the validation split ({what}: {curve}){stop}: "
            "the base model is kept; the student did not learn the task."
        )
    last = points[-1].epoch
    tail = "the last epoch" if chosen.epoch == last else f"epoch {chosen.epoch} of {last}"
    return f"Kept {tail}, the best on the validation split by {what} ({curve}){stop}."
