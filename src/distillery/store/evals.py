"""Evals, eval runs and their output items (JSON ``body`` columns hold the OpenAI objects).

Also two small read-only lookups the eval data sources need from other areas' tables: an
uploaded file's record (``files``) and the rows of a dataset version (``dataset_items``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from distillery.errors import NotFoundError
from distillery.store.base import Store
from distillery.store.records import Page
from distillery.store.tables import (
    DatasetItemRow,
    DatasetRow,
    DatasetVersionRow,
    EvalOutputItemRow,
    EvalRow,
    EvalRunRow,
    FileRow,
)

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class EvalRecord:
    seq: int
    id: str
    created_at: int
    updated_at: int
    body: dict[str, Any]


@dataclass(frozen=True)
class EvalRunRecord:
    seq: int
    id: str
    eval_id: str
    created_at: int
    status: str
    body: dict[str, Any]


@dataclass(frozen=True)
class OutputItemRecord:
    seq: int
    id: str
    run_id: str
    datasource_item_id: int
    status: str
    body: dict[str, Any]


@dataclass(frozen=True)
class FileInfo:
    id: str
    filename: str
    purpose: str
    bytes: int
    status: str


@dataclass(frozen=True)
class DatasetExample:
    seq: int
    split: str
    completion_id: str | None
    example: dict[str, Any]


def _eval(row: EvalRow) -> EvalRecord:
    return EvalRecord(row.seq, row.id, row.created_at, row.updated_at, dict(row.body))


def _run(row: EvalRunRow) -> EvalRunRecord:
    return EvalRunRecord(row.seq, row.id, row.eval_id, row.created_at, row.status, dict(row.body))


def _item(row: EvalOutputItemRow) -> OutputItemRecord:
    return OutputItemRecord(
        row.seq, row.id, row.run_id, row.datasource_item_id, row.status, dict(row.body)
    )


def _eval_missing(eval_id: str) -> NotFoundError:
    return NotFoundError(f"Eval with id '{eval_id}' not found.", param="eval_id")


def _run_missing(run_id: str) -> NotFoundError:
    return NotFoundError(f"Eval run with id '{run_id}' not found.", param="run_id")


class EvalsRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- evals -----------------------------------------------------------------------------------

    def insert_eval(self, eval_id: str, created_at: int, body: dict[str, Any]) -> EvalRecord:
        with self.store.write() as session:
            row = EvalRow(id=eval_id, created_at=created_at, updated_at=created_at, body=body)
            session.add(row)
            session.flush()
            return _eval(row)

    def get_eval(self, eval_id: str) -> EvalRecord:
        with self.store.read() as session:
            row = session.scalar(select(EvalRow).where(EvalRow.id == eval_id))
            if row is None:
                raise _eval_missing(eval_id)
            return _eval(row)

    def list_evals(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Order = "asc",
        order_by: Literal["created_at", "updated_at"] = "created_at",
    ) -> Page[EvalRecord]:
        key = EvalRow.updated_at if order_by == "updated_at" else EvalRow.created_at
        stmt = select(EvalRow)
        with self.store.read() as session:
            if after is not None:
                anchor = session.execute(
                    select(key, EvalRow.seq).where(EvalRow.id == after)
                ).first()
                if anchor is None:
                    raise NotFoundError(f"Eval with id '{after}' not found.", param="after")
                value, seq = anchor
                if order == "asc":
                    stmt = stmt.where((key > value) | ((key == value) & (EvalRow.seq > seq)))
                else:
                    stmt = stmt.where((key < value) | ((key == value) & (EvalRow.seq < seq)))
            if order == "asc":
                stmt = stmt.order_by(key.asc(), EvalRow.seq.asc())
            else:
                stmt = stmt.order_by(key.desc(), EvalRow.seq.desc())
            rows = list(session.scalars(stmt.limit(limit + 1)))
            return Page([_eval(r) for r in rows[:limit]], len(rows) > limit)

    def update_eval(self, eval_id: str, body: dict[str, Any], updated_at: int) -> EvalRecord:
        with self.store.write() as session:
            row = session.scalar(select(EvalRow).where(EvalRow.id == eval_id))
            if row is None:
                raise _eval_missing(eval_id)
            row.body = body
            row.updated_at = updated_at
            session.flush()
            return _eval(row)

    def delete_eval(self, eval_id: str) -> None:
        with self.store.write() as session:
            if session.scalar(select(EvalRow.seq).where(EvalRow.id == eval_id)) is None:
                raise _eval_missing(eval_id)
            run_ids = select(EvalRunRow.id).where(EvalRunRow.eval_id == eval_id)
            session.execute(delete(EvalOutputItemRow).where(EvalOutputItemRow.run_id.in_(run_ids)))
            session.execute(delete(EvalRunRow).where(EvalRunRow.eval_id == eval_id))
            session.execute(delete(EvalRow).where(EvalRow.id == eval_id))

    # -- runs ------------------------------------------------------------------------------------

    def insert_run(
        self, run_id: str, eval_id: str, created_at: int, status: str, body: dict[str, Any]
    ) -> EvalRunRecord:
        with self.store.write() as session:
            row = EvalRunRow(
                id=run_id, eval_id=eval_id, created_at=created_at, status=status, body=body
            )
            session.add(row)
            session.flush()
            return _run(row)

    def get_run(self, run_id: str, *, eval_id: str | None = None) -> EvalRunRecord:
        with self.store.read() as session:
            row = session.scalar(select(EvalRunRow).where(EvalRunRow.id == run_id))
            if row is None or (eval_id is not None and row.eval_id != eval_id):
                raise _run_missing(run_id)
            return _run(row)

    def list_runs(
        self,
        eval_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Order = "asc",
        status: str | None = None,
    ) -> Page[EvalRunRecord]:
        stmt = select(EvalRunRow).where(EvalRunRow.eval_id == eval_id)
        if status is not None:
            stmt = stmt.where(EvalRunRow.status == status)
        with self.store.read() as session:
            if after is not None:
                seq = session.scalar(select(EvalRunRow.seq).where(EvalRunRow.id == after))
                if seq is None:
                    raise NotFoundError(f"Eval run with id '{after}' not found.", param="after")
                stmt = stmt.where(EvalRunRow.seq > seq if order == "asc" else EvalRunRow.seq < seq)
            col = EvalRunRow.seq
            stmt = stmt.order_by(col.asc() if order == "asc" else col.desc()).limit(limit + 1)
            rows = list(session.scalars(stmt))
            return Page([_run(r) for r in rows[:limit]], len(rows) > limit)

    def runs_with_status(self, statuses: Sequence[str]) -> list[EvalRunRecord]:
        with self.store.read() as session:
            stmt = select(EvalRunRow).where(EvalRunRow.status.in_(list(statuses)))
            return [_run(r) for r in session.scalars(stmt.order_by(EvalRunRow.seq))]

    def update_run(
        self,
        run_id: str,
        body: dict[str, Any],
        *,
        only_if_status: Sequence[str] | None = None,
    ) -> EvalRunRecord | None:
        """Replace the run object (its ``status`` too); with ``only_if_status``, only when the
        stored status is one of those (so a cancel is never overwritten). None when skipped."""
        with self.store.write() as session:
            stmt = update(EvalRunRow).where(EvalRunRow.id == run_id)
            if only_if_status is not None:
                stmt = stmt.where(EvalRunRow.status.in_(list(only_if_status)))
            result = session.execute(stmt.values(body=body, status=body["status"]))
            if not getattr(result, "rowcount", 0):
                return None
            row = session.scalar(select(EvalRunRow).where(EvalRunRow.id == run_id))
            return _run(row) if row is not None else None

    def run_status(self, run_id: str) -> str | None:
        with self.store.read() as session:
            return session.scalar(select(EvalRunRow.status).where(EvalRunRow.id == run_id))

    def delete_run(self, run_id: str, *, eval_id: str | None = None) -> None:
        with self.store.write() as session:
            row = session.scalar(select(EvalRunRow).where(EvalRunRow.id == run_id))
            if row is None or (eval_id is not None and row.eval_id != eval_id):
                raise _run_missing(run_id)
            session.execute(delete(EvalOutputItemRow).where(EvalOutputItemRow.run_id == run_id))
            session.execute(delete(EvalRunRow).where(EvalRunRow.id == run_id))

    # -- output items ----------------------------------------------------------------------------

    def insert_output_item(
        self,
        item_id: str,
        run_id: str,
        datasource_item_id: int,
        status: str,
        body: dict[str, Any],
    ) -> bool:
        """Insert one graded item; False when the run already has that datasource item."""
        try:
            with self.store.write() as session:
                session.add(
                    EvalOutputItemRow(
                        id=item_id,
                        run_id=run_id,
                        datasource_item_id=datasource_item_id,
                        status=status,
                        body=body,
                    )
                )
        except IntegrityError:
            return False
        return True

    def graded_item_ids(self, run_id: str) -> set[int]:
        with self.store.read() as session:
            stmt = select(EvalOutputItemRow.datasource_item_id).where(
                EvalOutputItemRow.run_id == run_id
            )
            return set(session.scalars(stmt))

    def status_counts(self, run_id: str) -> dict[str, int]:
        with self.store.read() as session:
            stmt = (
                select(EvalOutputItemRow.status, func.count())
                .where(EvalOutputItemRow.run_id == run_id)
                .group_by(EvalOutputItemRow.status)
            )
            return {status: int(n) for status, n in session.execute(stmt)}

    def _items_query(self, run_id: str, status: str | None) -> Select[EvalOutputItemRow]:
        stmt = select(EvalOutputItemRow).where(EvalOutputItemRow.run_id == run_id)
        if status is not None:
            stmt = stmt.where(EvalOutputItemRow.status == status)
        return stmt

    def list_output_items(
        self,
        run_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Order = "asc",
        status: str | None = None,
    ) -> Page[OutputItemRecord]:
        """A page of a run's output items in datasource order (``datasource_item_id``)."""
        stmt = self._items_query(run_id, status)
        col = EvalOutputItemRow.datasource_item_id
        with self.store.read() as session:
            if after is not None:
                anchor = session.scalar(
                    select(col).where(
                        EvalOutputItemRow.id == after, EvalOutputItemRow.run_id == run_id
                    )
                )
                if anchor is None:
                    raise NotFoundError(f"Output item with id '{after}' not found.", param="after")
                stmt = stmt.where(col > anchor if order == "asc" else col < anchor)
            stmt = stmt.order_by(col.asc() if order == "asc" else col.desc()).limit(limit + 1)
            rows = list(session.scalars(stmt))
            return Page([_item(r) for r in rows[:limit]], len(rows) > limit)

    def iterate_output_items(self, run_id: str, *, batch: int = 500) -> Iterator[OutputItemRecord]:
        """Every output item of a run, in datasource order."""
        last = -1
        while True:
            with self.store.read() as session:
                stmt = (
                    self._items_query(run_id, None)
                    .where(EvalOutputItemRow.datasource_item_id > last)
                    .order_by(EvalOutputItemRow.datasource_item_id)
                    .limit(batch)
                )
                rows = [_item(r) for r in session.scalars(stmt)]
            yield from rows
            if len(rows) < batch:
                return
            last = rows[-1].datasource_item_id

    def get_output_item(self, run_id: str, item_id: str) -> OutputItemRecord:
        with self.store.read() as session:
            row = session.scalar(select(EvalOutputItemRow).where(EvalOutputItemRow.id == item_id))
            if row is None or row.run_id != run_id:
                raise NotFoundError(
                    f"Output item with id '{item_id}' not found.", param="output_item_id"
                )
            return _item(row)

    # -- other areas' tables, read only -----------------------------------------------------------

    def file_info(self, file_id: str) -> FileInfo:
        with self.store.read() as session:
            row = session.scalar(select(FileRow).where(FileRow.id == file_id))
            if row is None:
                raise NotFoundError(f"No such File object: {file_id}", param="file_id")
            return FileInfo(row.id, row.filename, row.purpose, row.bytes, row.status)

    def dataset_version_id(self, dataset: str, version: int | None) -> tuple[str, int]:
        """The version id and number of a dataset (by id or name); latest when ``version`` is None."""
        with self.store.read() as session:
            ds = session.scalar(
                select(DatasetRow.id).where(
                    (DatasetRow.id == dataset) | (DatasetRow.name == dataset)
                )
            )
            if ds is None:
                raise NotFoundError(f"Dataset '{dataset}' not found.", param="dataset_id")
            stmt = select(DatasetVersionRow.id, DatasetVersionRow.version).where(
                DatasetVersionRow.dataset_id == ds
            )
            if version is not None:
                stmt = stmt.where(DatasetVersionRow.version == version)
            found = session.execute(
                stmt.order_by(DatasetVersionRow.version.desc()).limit(1)
            ).first()
            if found is None:
                raise NotFoundError(
                    f"Dataset '{dataset}' has no version {version if version is not None else ''}.",
                    param="version",
                )
            return str(found[0]), int(found[1])

    def dataset_examples(self, version_id: str, split: str | None) -> list[DatasetExample]:
        with self.store.read() as session:
            stmt = select(DatasetItemRow).where(DatasetItemRow.version_id == version_id)
            if split is not None:
                stmt = stmt.where(DatasetItemRow.split == split)
            return [
                DatasetExample(r.seq, r.split, r.completion_id, dict(r.example))
                for r in session.scalars(stmt.order_by(DatasetItemRow.seq))
            ]
