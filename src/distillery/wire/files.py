"""``/v1/files`` objects: ``FileObject`` as in ``openai.types`` (``expires_at`` and
``status_details`` absent when there is none, as the SDK types declare them optional)."""

from __future__ import annotations

from typing import Literal

from distillery.wire.base import WireModel


class FileObject(WireModel):
    id: str
    bytes: int
    created_at: int
    filename: str
    object: Literal["file"] = "file"
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    expires_at: int | None = None
    status_details: str | None = None


class FileDeleted(WireModel):
    id: str
    deleted: bool
    object: Literal["file"] = "file"


class FileCreateParams(WireModel):
    """The multipart form of ``POST /v1/files``: the file's bytes and its ``purpose``."""

    file: bytes
    purpose: Literal["fine-tune", "evals"]  # files.service.PURPOSES
