"""The JSON shapes of datasets, versions and items (``/v1/distillery/datasets`` and the CLI).

A dataset carries its latest version number (and, when asked, a version inline); a version its
spec (what it was built from, split ratios resolved) and stats (counts, splits, duplicates,
sources, origins, warnings, terms, training cost, the curation report of a synthesis); an item
its split, where it came from (completion id, corrected, ``origin``: synthetic or relabel)
and the training example itself. Items are listed by their sequence number as ``id``.
"""

from __future__ import annotations

from typing import Any

from distillery.store.datasets import Dataset, DatasetItem, DatasetVersion


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
        out["version"] = version_view(version)
    return out


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


def item_view(item: DatasetItem) -> dict[str, Any]:
    return {
        "id": str(item.seq),
        "object": "distillery.dataset.item",
        "version_id": item.version_id,
        "split": item.split,
        "completion_id": item.completion_id,
        "corrected": item.corrected,
        "origin": item.origin,
        "tokens": item.tokens,
        "example": item.example,
    }
