"""A dataset version's split written out as fine-tuning JSONL, one example per line.

Items are read lazily, in batches, in their stored order (``DatasetsRepo.iter_items``), so an
export of any size runs in constant memory. A path is written to a temporary file beside it and
renamed into place, so it never holds half an export.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO

from distillery.store.datasets import DatasetsRepo
from distillery.wire.fine_tuning_jsonl import dump_line


def write_jsonl(repo: DatasetsRepo, version_id: str, split: str | None, out: IO[bytes]) -> int:
    """Write the split's lines (all splits when None) to ``out``; returns the line count."""
    count = 0
    for item in repo.iter_items(version_id, split=split):
        out.write(dump_line(item.example))
        count += 1
    return count


def write_jsonl_file(repo: DatasetsRepo, version_id: str, split: str | None, path: Path) -> int:
    """:func:`write_jsonl` into ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as stream:
            count = write_jsonl(repo, version_id, split, stream)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return count
