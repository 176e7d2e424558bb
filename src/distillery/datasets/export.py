"""A dataset version's split written out as fine-tuning JSONL, one example per line.

Items are read lazily, in batches, in their stored order (``DatasetsRepo.iter_items``), so an
export of any size runs in constant memory. A path is written to a temporary file beside it and
renamed into place, so it never holds half an export.

With ``lineage`` each line also carries ``"metadata": {"origin", "completion_id", "corrected"}``:
``origin`` is ``captured`` (or ``imported``), ``synthetic`` or ``relabel``, so a synthetic row is
marked as such wherever the file goes. It is off by default: a provider's fine-tuning upload
gets the lines exactly as OpenAI's format has them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any

from distillery.store.datasets import DatasetItem, DatasetsRepo
from distillery.wire.fine_tuning_jsonl import dump_line


def origin_of(item: DatasetItem) -> str:
    """Where a row came from: ``synthetic``, ``relabel``, ``captured`` or ``imported``."""
    if item.origin:
        return item.origin
    return "captured" if item.completion_id else "imported"


def line_of(item: DatasetItem, *, lineage: bool = False) -> dict[str, Any]:
    """The training line of an item (with its lineage under ``metadata`` when asked)."""
    if not lineage:
        return item.example
    marks: dict[str, Any] = {"origin": origin_of(item), "completion_id": item.completion_id}
    if item.corrected:
        marks["corrected"] = True
    return {**item.example, "metadata": marks}


def write_jsonl(
    repo: DatasetsRepo,
    version_id: str,
    split: str | None,
    out: IO[bytes],
    *,
    lineage: bool = False,
) -> int:
    """Write the split's lines (all splits when None) to ``out``; returns the line count."""
    count = 0
    for item in repo.iter_items(version_id, split=split):
        out.write(dump_line(line_of(item, lineage=lineage)))
        count += 1
    return count


def write_jsonl_file(
    repo: DatasetsRepo,
    version_id: str,
    split: str | None,
    path: Path,
    *,
    lineage: bool = False,
) -> int:
    """:func:`write_jsonl` into ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as stream:
            count = write_jsonl(repo, version_id, split, stream, lineage=lineage)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return count
