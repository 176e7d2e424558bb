"""Exact and near-duplicate detection over training examples.

- ``exact``: the same normalized conversation (every message, the output included; NFKC,
  case-folded, whitespace collapsed).
- ``near``: also examples whose embeddings (all-MiniLM-L6-v2 from
  :mod:`distillery.embedders`, loaded only when used) have a cosine similarity at or above
  ``threshold`` with an earlier kept example.

The first example of each group is kept (selection order: oldest first); every other one is a
:class:`Duplicate` of it. The caller removes duplicates, or keeps them on the same side of the
split as the example they duplicate (leakage-safe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from distillery.datasets.split import normalize
from distillery.embedders import Embedder, default_embedder
from distillery.wire.content import message_text

DedupeMode = Literal["exact", "near", "none"]
DEFAULT_NEAR_THRESHOLD = 0.95


@dataclass(frozen=True)
class Duplicate:
    index: int  # the duplicate
    of: int  # the kept example it duplicates
    kind: Literal["exact", "near"]
    similarity: float


def example_text(example: Mapping[str, Any]) -> str:
    """The whole conversation as one normalized string (roles included)."""
    parts = []
    for message in example.get("messages") or []:
        if isinstance(message, Mapping):
            text = message_text(message)
            if not text and message.get("tool_calls"):
                text = str(message.get("tool_calls"))
            parts.append(f"{message.get('role')}: {text}")
    return normalize("\n".join(parts))


def find_exact(texts: Sequence[str]) -> list[Duplicate]:
    first: dict[str, int] = {}
    found: list[Duplicate] = []
    for i, text in enumerate(texts):
        if text in first:
            found.append(Duplicate(i, first[text], "exact", 1.0))
        else:
            first[text] = i
    return found


def find_near(
    texts: Sequence[str],
    embedder: Embedder,
    *,
    threshold: float = DEFAULT_NEAR_THRESHOLD,
    skip: set[int] | None = None,
    chunk: int = 512,
) -> list[Duplicate]:
    """Greedy near-duplicate search: each example against the earlier kept ones."""
    import numpy as np

    skip = skip or set()
    order = [i for i in range(len(texts)) if i not in skip]
    if len(order) < 2:
        return []
    vectors = np.asarray(embedder.embed([texts[i] for i in order]), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)
    kept = np.zeros(len(order), dtype=bool)
    found: list[Duplicate] = []
    for start in range(0, len(order), chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        for r in range(sims.shape[0]):
            i = start + r
            row = np.where(kept[:i], sims[r, :i], -np.inf)
            j = int(np.argmax(row)) if i else -1
            if i and row[j] >= threshold:
                found.append(Duplicate(order[i], order[j], "near", float(row[j])))
            else:
                kept[i] = True
    return found


def find_duplicates(
    texts: Sequence[str],
    mode: DedupeMode,
    *,
    threshold: float = DEFAULT_NEAR_THRESHOLD,
    embedder: Embedder | None = None,
) -> list[Duplicate]:
    """Duplicates by ``mode``, sorted by index (``near`` uses the local MiniLM by default)."""
    if mode == "none":
        return []
    found = find_exact(texts)
    if mode == "near":
        if embedder is None:
            embedder = default_embedder()
        found += find_near(
            texts,
            embedder,
            threshold=threshold,
            skip={d.index for d in found},
        )
    return sorted(found, key=lambda d: d.index)
