"""Uploaded files: metadata rows (the bytes live on disk, named by id, see ``distillery.files``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, select

from distillery.errors import NotFoundError
from distillery.store.base import Store
from distillery.store.records import Page
from distillery.store.tables import FileRow
from distillery.wire.files import FileObject


@dataclass(frozen=True)
class StoredFile:
    id: str
    created_at: int
    filename: str
    purpose: str
    bytes: int
    sha256: str
    status: str
    status_details: str | None = None
    expires_at: int | None = None

    def to_file_object(self) -> dict[str, Any]:
        """OpenAI's ``FileObject``."""
        status = self.status if self.status in ("uploaded", "processed", "error") else "error"
        return FileObject(
            id=self.id,
            bytes=self.bytes,
            created_at=self.created_at,
            filename=self.filename,
            purpose=self.purpose,
            status=status,  # type: ignore[arg-type]
            status_details=self.status_details,
            expires_at=self.expires_at,
        ).to_wire()


def _record(row: FileRow) -> StoredFile:
    return StoredFile(
        id=row.id,
        created_at=row.created_at,
        filename=row.filename,
        purpose=row.purpose,
        bytes=row.bytes,
        sha256=row.sha256,
        status=row.status,
        status_details=row.status_details,
        expires_at=row.expires_at,
    )


def _not_found(file_id: str) -> NotFoundError:
    return NotFoundError(f"No such File object: {file_id}", param="id")


class FilesRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def insert(self, record: StoredFile) -> None:
        with self.store.write() as session:
            session.add(
                FileRow(
                    id=record.id,
                    created_at=record.created_at,
                    filename=record.filename,
                    purpose=record.purpose,
                    bytes=record.bytes,
                    sha256=record.sha256,
                    status=record.status,
                    status_details=record.status_details,
                    expires_at=record.expires_at,
                )
            )

    def get(self, file_id: str) -> StoredFile:
        with self.store.read() as session:
            row = session.scalar(select(FileRow).where(FileRow.id == file_id))
            if row is None:
                raise _not_found(file_id)
            return _record(row)

    def list(
        self,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 10_000,
        order: Literal["asc", "desc"] = "desc",
    ) -> Page[StoredFile]:
        stmt = select(FileRow)
        if purpose is not None:
            stmt = stmt.where(FileRow.purpose == purpose)
        with self.store.read() as session:
            if after is not None:
                after_seq = session.scalar(select(FileRow.seq).where(FileRow.id == after))
                if after_seq is None:
                    raise NotFoundError(f"No such File object: {after}", param="after")
                stmt = stmt.where(
                    FileRow.seq > after_seq if order == "asc" else FileRow.seq < after_seq
                )
            stmt = stmt.order_by(FileRow.seq.asc() if order == "asc" else FileRow.seq.desc())
            rows = list(session.scalars(stmt.limit(limit + 1)))
            return Page(data=[_record(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def delete(self, file_id: str) -> StoredFile:
        with self.store.write() as session:
            row = session.scalar(select(FileRow).where(FileRow.id == file_id))
            if row is None:
                raise _not_found(file_id)
            record = _record(row)
            session.execute(delete(FileRow).where(FileRow.id == file_id))
            return record
