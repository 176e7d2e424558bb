"""Training inputs and outputs as files of the Files API (``$DISTILLERY_HOME/files/<file_id>``)."""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from distillery import ids
from distillery.files.service import PURPOSES, FilesService
from distillery.store.files import StoredFile


@dataclass(frozen=True)
class InputFile:
    id: str
    filename: str
    purpose: str
    path: Path
    bytes: int


class FileSource(Protocol):
    def get(self, file_id: str) -> InputFile:
        """The file, or ``NotFoundError``."""
        ...

    def add(self, content: bytes, *, filename: str, purpose: str) -> InputFile:
        """Store new content as a file (training inputs from a path, result files)."""
        ...


class ServiceFiles:
    """``FileSource`` over the Files API service.

    Uploads (``fine-tune``) go through ``FilesService.create`` and its checks; result files
    (``fine-tune-results``, which clients cannot upload) are written beside them the same way.
    """

    def __init__(self, files: FilesService) -> None:
        self.files = files

    def _input(self, record: StoredFile) -> InputFile:
        return InputFile(
            id=record.id,
            filename=record.filename,
            purpose=record.purpose,
            path=self.files.root / record.id,
            bytes=record.bytes,
        )

    def get(self, file_id: str) -> InputFile:
        return self._input(self.files.get(file_id))

    def add(self, content: bytes, *, filename: str, purpose: str) -> InputFile:
        if purpose in PURPOSES:
            return self._input(
                self.files.create(io.BytesIO(content), filename=filename, purpose=purpose)
            )
        file_id = ids.new_id(ids.FILE)
        self.files.root.mkdir(parents=True, exist_ok=True)
        tmp = self.files.root / f".{file_id}.part"
        tmp.write_bytes(content)
        os.replace(tmp, self.files.root / file_id)
        record = StoredFile(
            id=file_id,
            created_at=int(time.time()),
            filename=filename,
            purpose=purpose,
            bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            status="processed",
        )
        self.files.repo.insert(record)
        return self._input(record)
