"""Datasets, their immutable versions and the rows copied into each version."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from distillery import ids
from distillery.errors import ConflictError, NotFoundError
from distillery.store.base import Store
from distillery.store.records import Page
from distillery.store.tables import DatasetFileRow, DatasetItemRow, DatasetRow, DatasetVersionRow

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    created_at: int
    description: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    latest_version: int | None = None


@dataclass(frozen=True)
class DatasetVersion:
    id: str
    dataset_id: str
    version: int
    created_at: int
    spec: dict[str, Any]
    stats: dict[str, Any]


@dataclass(frozen=True)
class NewDatasetItem:
    split: str
    completion_id: str | None
    example: dict[str, Any]
    corrected: bool = False
    tokens: int = 0
    origin: str | None = None  # "synthetic", "relabel"; None: captured or imported


@dataclass(frozen=True)
class DatasetItem:
    seq: int
    version_id: str
    split: str
    completion_id: str | None
    example: dict[str, Any]
    corrected: bool
    tokens: int
    origin: str | None = None


def _version(row: DatasetVersionRow) -> DatasetVersion:
    return DatasetVersion(
        id=row.id,
        dataset_id=row.dataset_id,
        version=row.version,
        created_at=row.created_at,
        spec=dict(row.spec),
        stats=dict(row.stats),
    )


def _item(row: DatasetItemRow) -> DatasetItem:
    return DatasetItem(
        seq=row.seq,
        version_id=row.version_id,
        split=row.split,
        completion_id=row.completion_id,
        example=row.example,
        corrected=row.corrected,
        tokens=row.tokens,
        origin=row.origin,
    )


def _latest(session: Session, dataset_id: str) -> int | None:
    return session.scalar(
        select(func.max(DatasetVersionRow.version)).where(
            DatasetVersionRow.dataset_id == dataset_id
        )
    )


def _dataset(session: Session, row: DatasetRow) -> Dataset:
    return Dataset(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        description=row.description,
        metadata=dict(row.meta or {}),
        latest_version=_latest(session, row.id),
    )


def _find(session: Session, ref: str) -> DatasetRow | None:
    row = session.scalar(select(DatasetRow).where(DatasetRow.id == ref))
    return row or session.scalar(select(DatasetRow).where(DatasetRow.name == ref))


class DatasetsRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create_version(
        self,
        *,
        name: str,
        spec: dict[str, Any],
        stats: dict[str, Any],
        items: Sequence[NewDatasetItem],
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        batch: int = 1000,
    ) -> tuple[Dataset, DatasetVersion]:
        """Add the next version of dataset ``name`` (created when new), rows and all, atomically."""
        now = int(time.time())
        try:
            with self.store.write() as session:
                row = session.scalar(select(DatasetRow).where(DatasetRow.name == name))
                if row is None:
                    row = DatasetRow(
                        id=ids.new_id(ids.DATASET),
                        name=name,
                        created_at=now,
                        description=description,
                        meta=metadata,
                    )
                    session.add(row)
                    session.flush()
                else:
                    if description is not None:
                        row.description = description
                    if metadata is not None:
                        row.meta = metadata
                number = (_latest(session, row.id) or 0) + 1
                version = DatasetVersionRow(
                    id=ids.new_id(ids.DATASET_VERSION),
                    dataset_id=row.id,
                    version=number,
                    created_at=now,
                    spec=spec,
                    stats=stats,
                )
                session.add(version)
                session.flush()
                for start in range(0, len(items), batch):
                    session.execute(
                        insert(DatasetItemRow),
                        [
                            {
                                "version_id": version.id,
                                "split": it.split,
                                "completion_id": it.completion_id,
                                "example": it.example,
                                "corrected": it.corrected,
                                "tokens": it.tokens,
                                "origin": it.origin,
                            }
                            for it in items[start : start + batch]
                        ],
                    )
                dataset = Dataset(
                    id=row.id,
                    name=row.name,
                    created_at=row.created_at,
                    description=row.description,
                    metadata=dict(row.meta or {}),
                    latest_version=number,
                )
                return dataset, _version(version)
        except IntegrityError as exc:
            raise ConflictError(
                f"Dataset {name!r} was changed concurrently; retry.", param="name"
            ) from exc

    def get(self, ref: str) -> Dataset:
        """A dataset by id or by name."""
        with self.store.read() as session:
            row = _find(session, ref)
            if row is None:
                raise NotFoundError(f"No dataset found with id or name '{ref}'.", param="id")
            return _dataset(session, row)

    def list(
        self, *, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> Page[Dataset]:
        stmt = select(DatasetRow)
        with self.store.read() as session:
            if after is not None:
                seq = session.scalar(select(DatasetRow.seq).where(DatasetRow.id == after))
                if seq is None:
                    raise NotFoundError(f"No dataset found with id '{after}'.", param="after")
                stmt = stmt.where(DatasetRow.seq > seq if order == "asc" else DatasetRow.seq < seq)
            stmt = stmt.order_by(DatasetRow.seq.asc() if order == "asc" else DatasetRow.seq.desc())
            rows = list(session.scalars(stmt.limit(limit + 1)))
            data = [_dataset(session, r) for r in rows[:limit]]
        return Page(data=data, has_more=len(rows) > limit)

    def delete(self, ref: str) -> Dataset:
        with self.store.write() as session:
            row = _find(session, ref)
            if row is None:
                raise NotFoundError(f"No dataset found with id or name '{ref}'.", param="id")
            dataset = _dataset(session, row)
            version_ids = select(DatasetVersionRow.id).where(DatasetVersionRow.dataset_id == row.id)
            session.execute(
                delete(DatasetItemRow).where(DatasetItemRow.version_id.in_(version_ids))
            )
            session.execute(delete(DatasetVersionRow).where(DatasetVersionRow.dataset_id == row.id))
            session.execute(delete(DatasetRow).where(DatasetRow.id == row.id))
            return dataset

    def get_version(self, dataset_id: str, version: int | None = None) -> DatasetVersion:
        """Version ``version`` of a dataset (the latest when None)."""
        with self.store.read() as session:
            number = version if version is not None else _latest(session, dataset_id)
            row = session.scalar(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.dataset_id == dataset_id,
                    DatasetVersionRow.version == number,
                )
            )
            if row is None:
                raise NotFoundError(
                    f"Dataset {dataset_id} has no version {version if version else '(none yet)'}.",
                    param="version",
                )
            return _version(row)

    def list_versions(self, dataset_id: str) -> builtins.list[DatasetVersion]:
        with self.store.read() as session:
            rows = session.scalars(
                select(DatasetVersionRow)
                .where(DatasetVersionRow.dataset_id == dataset_id)
                .order_by(DatasetVersionRow.version.asc())
            )
            return [_version(r) for r in rows]

    def list_items(
        self,
        version_id: str,
        *,
        split: str | None = None,
        after_seq: int | None = None,
        limit: int = 100,
    ) -> Page[DatasetItem]:
        stmt = select(DatasetItemRow).where(DatasetItemRow.version_id == version_id)
        if split is not None:
            stmt = stmt.where(DatasetItemRow.split == split)
        if after_seq is not None:
            stmt = stmt.where(DatasetItemRow.seq > after_seq)
        stmt = stmt.order_by(DatasetItemRow.seq.asc()).limit(limit + 1)
        with self.store.read() as session:
            rows = list(session.scalars(stmt))
            return Page(data=[_item(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def iter_items(
        self, version_id: str, *, split: str | None = None, batch: int = 1000
    ) -> Iterator[DatasetItem]:
        after: int | None = None
        while True:
            page = self.list_items(version_id, split=split, after_seq=after, limit=batch)
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.data[-1].seq

    # --- lineage ----------------------------------------------------------------------------------

    def record_file(self, file_id: str, version_id: str, split: str | None) -> None:
        """``file_id`` was exported from ``version_id`` (one split, or all when None)."""
        with self.store.write() as session:
            session.execute(
                insert(DatasetFileRow).values(
                    file_id=file_id, version_id=version_id, split=split, created_at=int(time.time())
                )
            )

    def file_sources(self, file_ids: Sequence[str]) -> dict[str, DatasetFile]:
        """The dataset version each of ``file_ids`` was exported from (files that were not are
        absent)."""
        with self.store.read() as session:
            rows = session.execute(
                select(DatasetFileRow, DatasetVersionRow, DatasetRow)
                .join(DatasetVersionRow, DatasetVersionRow.id == DatasetFileRow.version_id)
                .join(DatasetRow, DatasetRow.id == DatasetVersionRow.dataset_id)
                .where(DatasetFileRow.file_id.in_(list(file_ids)))
            ).all()
            return {
                f.file_id: DatasetFile(f.file_id, d.id, d.name, _version(v), f.split)
                for f, v, d in rows
            }

    def versions_holding(self, completion_id: str) -> builtins.list[VersionHolding]:
        """The dataset versions that hold a copy of ``completion_id``, oldest first."""
        with self.store.read() as session:
            rows = session.execute(
                select(
                    DatasetRow.id,
                    DatasetRow.name,
                    DatasetVersionRow.id,
                    DatasetVersionRow.version,
                    func.count(),
                )
                .select_from(DatasetItemRow)
                .join(DatasetVersionRow, DatasetVersionRow.id == DatasetItemRow.version_id)
                .join(DatasetRow, DatasetRow.id == DatasetVersionRow.dataset_id)
                .where(DatasetItemRow.completion_id == completion_id)
                .group_by(
                    DatasetRow.id, DatasetRow.name, DatasetVersionRow.id, DatasetVersionRow.version
                )
                .order_by(DatasetRow.name.asc(), DatasetVersionRow.version.asc())
            ).all()
            return [VersionHolding(*row) for row in rows]


@dataclass(frozen=True)
class DatasetFile:
    """A file exported from a dataset version."""

    file_id: str
    dataset_id: str
    dataset_name: str
    version: DatasetVersion
    split: str | None


@dataclass(frozen=True)
class VersionHolding:
    """A dataset version that holds a completion (``items``: how many of its rows)."""

    dataset_id: str
    dataset_name: str
    version_id: str
    version: int
    items: int
