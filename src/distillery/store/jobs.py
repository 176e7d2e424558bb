"""Fine-tuning jobs, their events and checkpoints.

A job row holds the OpenAI ``fine_tuning.job`` object in ``body``; ``status`` is the authority (the
object's ``status`` is filled from it on the way out). Claiming is one conditional ``UPDATE``, so
two workers never take the same job: ``UPDATE ... SET worker_id=?, status=? WHERE id=? AND
status=?`` (plus "heartbeat stale" when reclaiming a running job). Event and checkpoint ids are
chosen by the caller and inserted once, so mirroring the same backend output twice is harmless.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Select, and_, or_, select, update

from distillery.errors import NotFoundError
from distillery.store.base import Store
from distillery.store.records import Page
from distillery.store.tables import FineTuningCheckpointRow, FineTuningEventRow, FineTuningJobRow

Order = Literal["asc", "desc"]
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobRecord:
    seq: int
    id: str
    created_at: int
    status: str
    backend: str
    body: dict[str, Any]
    worker_id: str | None
    heartbeat_at: float | None
    cancel_requested: bool
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_object(self) -> dict[str, Any]:
        """The OpenAI ``fine_tuning.job`` object."""
        return {**self.body, "status": self.status}


@dataclass(frozen=True)
class BodyRecord:
    """An event or a checkpoint: its OpenAI object in ``body``."""

    seq: int
    id: str
    job_id: str
    created_at: int
    body: dict[str, Any]


def _job(row: FineTuningJobRow) -> JobRecord:
    return JobRecord(
        seq=row.seq,
        id=row.id,
        created_at=row.created_at,
        status=row.status,
        backend=row.backend,
        body=dict(row.body),
        worker_id=row.worker_id,
        heartbeat_at=row.heartbeat_at,
        cancel_requested=bool(row.cancel_requested),
        state=dict(row.state or {}),
    )


def _body(row: FineTuningEventRow | FineTuningCheckpointRow) -> BodyRecord:
    return BodyRecord(
        seq=row.seq, id=row.id, job_id=row.job_id, created_at=row.created_at, body=dict(row.body)
    )


def _not_found(job_id: str) -> NotFoundError:
    return NotFoundError(
        f"No fine-tuning job found with id '{job_id}'.", param="fine_tuning_job_id"
    )


class JobsRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- jobs ------------------------------------------------------------------------------------

    def insert(
        self,
        *,
        job_id: str,
        created_at: int,
        status: str,
        backend: str,
        body: dict[str, Any],
        state: dict[str, Any],
    ) -> JobRecord:
        row = FineTuningJobRow(
            id=job_id,
            created_at=created_at,
            status=status,
            backend=backend,
            body=body,
            state=state,
            cancel_requested=False,
        )
        with self.store.write() as session:
            session.add(row)
            session.flush()
            return _job(row)

    def get(self, job_id: str) -> JobRecord:
        with self.store.read() as session:
            row = session.scalar(select(FineTuningJobRow).where(FineTuningJobRow.id == job_id))
            if row is None:
                raise _not_found(job_id)
            return _job(row)

    def list(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Order = "desc",
        metadata: Mapping[str, str] | None = None,
        status: str | None = None,
    ) -> Page[JobRecord]:
        stmt = select(FineTuningJobRow)
        if status is not None:
            stmt = stmt.where(FineTuningJobRow.status == status)
        if after is not None:
            after_seq = self._seq(FineTuningJobRow, FineTuningJobRow.id, after, "after")
            col = FineTuningJobRow.seq
            stmt = stmt.where(col > after_seq if order == "asc" else col < after_seq)
        stmt = stmt.order_by(
            FineTuningJobRow.seq.asc() if order == "asc" else FineTuningJobRow.seq.desc()
        )
        if not metadata:
            with self.store.read() as session:
                rows = list(session.scalars(stmt.limit(limit + 1)))
                jobs = [_job(r) for r in rows]
            return Page(data=jobs[:limit], has_more=len(jobs) > limit)
        # Jobs are few: filter metadata pairs while scanning in order.
        wanted = dict(metadata)
        found: builtins.list[JobRecord] = []
        with self.store.read() as session:
            for row in session.scalars(stmt.execution_options(yield_per=200)):
                meta = (row.body or {}).get("metadata") or {}
                if all(meta.get(k) == v for k, v in wanted.items()):
                    found.append(_job(row))
                    if len(found) > limit:
                        break
        return Page(data=found[:limit], has_more=len(found) > limit)

    def ids_in(
        self, statuses: Sequence[str], *, backends: Sequence[str] | None = None
    ) -> builtins.list[str]:
        stmt = select(FineTuningJobRow.id).where(FineTuningJobRow.status.in_(list(statuses)))
        if backends is not None:
            stmt = stmt.where(FineTuningJobRow.backend.in_(list(backends)))
        with self.store.read() as session:
            return list(session.scalars(stmt.order_by(FineTuningJobRow.seq)))

    def claimable(
        self, *, stale_before: float, backends: Sequence[str] | None = None, limit: int = 10
    ) -> builtins.list[JobRecord]:
        """Jobs a worker may try to claim, oldest first: files to validate, queued jobs, and
        running or validating jobs whose worker stopped sending heartbeats."""
        unowned_or_stale = or_(
            FineTuningJobRow.worker_id.is_(None),
            FineTuningJobRow.heartbeat_at.is_(None),
            FineTuningJobRow.heartbeat_at < stale_before,
        )
        stmt = select(FineTuningJobRow).where(
            or_(
                FineTuningJobRow.status == "queued",
                and_(
                    FineTuningJobRow.status.in_(["validating_files", "running"]), unowned_or_stale
                ),
            )
        )
        if backends is not None:
            stmt = stmt.where(FineTuningJobRow.backend.in_(list(backends)))
        stmt = stmt.order_by(FineTuningJobRow.seq).limit(limit)
        with self.store.read() as session:
            return [_job(r) for r in session.scalars(stmt)]

    def claim(
        self,
        job_id: str,
        *,
        worker_id: str,
        from_status: str,
        to_status: str,
        now: float,
        stale_before: float | None = None,
    ) -> bool:
        """Atomically take a job; ``stale_before`` also takes it from a worker gone silent."""
        cond = [FineTuningJobRow.id == job_id, FineTuningJobRow.status == from_status]
        if stale_before is not None:
            cond.append(
                or_(
                    FineTuningJobRow.worker_id.is_(None),
                    FineTuningJobRow.heartbeat_at.is_(None),
                    FineTuningJobRow.heartbeat_at < stale_before,
                )
            )
        stmt = (
            update(FineTuningJobRow)
            .where(*cond)
            .values(worker_id=worker_id, status=to_status, heartbeat_at=now)
        )
        with self.store.write() as session:
            return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def heartbeat(self, job_ids: Iterable[str], *, worker_id: str, now: float) -> set[str]:
        """Refresh this worker's claims; returns the ids it still owns."""
        ids = list(job_ids)
        if not ids:
            return set()
        with self.store.write() as session:
            session.execute(
                update(FineTuningJobRow)
                .where(FineTuningJobRow.id.in_(ids), FineTuningJobRow.worker_id == worker_id)
                .values(heartbeat_at=now)
            )
            owned = session.scalars(
                select(FineTuningJobRow.id).where(
                    FineTuningJobRow.id.in_(ids), FineTuningJobRow.worker_id == worker_id
                )
            )
            return set(owned)

    def update(
        self,
        job_id: str,
        *,
        status: str | None = None,
        body: Mapping[str, Any] | None = None,
        state: Mapping[str, Any] | None = None,
        worker_id: str | Literal[False] | None = False,
        heartbeat_at: float | Literal[False] | None = False,
        cancel_requested: bool | None = None,
        expect_status: Sequence[str] | None = None,
        expect_worker: str | None = None,
    ) -> JobRecord | None:
        """Merge ``body``/``state`` keys and set columns; ``None`` when the expectations fail."""
        with self.store.write() as session:
            stmt = select(FineTuningJobRow).where(FineTuningJobRow.id == job_id)
            if not self.store.sqlite:
                stmt = stmt.with_for_update()
            row = session.scalar(stmt)
            if row is None:
                raise _not_found(job_id)
            if expect_status is not None and row.status not in expect_status:
                return None
            if expect_worker is not None and row.worker_id != expect_worker:
                return None
            if status is not None:
                row.status = status
            if body:
                row.body = {**row.body, **body}
            if state:
                row.state = {**(row.state or {}), **state}
            if worker_id is not False:
                row.worker_id = worker_id
            if heartbeat_at is not False:
                row.heartbeat_at = heartbeat_at
            if cancel_requested is not None:
                row.cancel_requested = cancel_requested
            session.flush()
            return _job(row)

    # -- events and checkpoints ------------------------------------------------------------------

    def add_events(self, job_id: str, events: Sequence[tuple[str, int, dict[str, Any]]]) -> int:
        """Insert ``(id, created_at, body)`` events whose id is new; returns how many."""
        return self._add(FineTuningEventRow, job_id, events)

    def add_checkpoint(
        self, job_id: str, checkpoint_id: str, created_at: int, body: dict[str, Any]
    ) -> bool:
        return self._add(FineTuningCheckpointRow, job_id, [(checkpoint_id, created_at, body)]) == 1

    def _add(
        self,
        table: type[FineTuningEventRow] | type[FineTuningCheckpointRow],
        job_id: str,
        items: Sequence[tuple[str, int, dict[str, Any]]],
    ) -> int:
        if not items:
            return 0
        with self.store.write() as session:
            ids = [i for i, _, _ in items]
            existing = set(session.scalars(select(table.id).where(table.id.in_(ids))))
            fresh = [
                table(id=i, job_id=job_id, created_at=c, body=b)
                for i, c, b in items
                if i not in existing
            ]
            seen: set[str] = set()
            for row in fresh:
                if row.id not in seen:
                    seen.add(row.id)
                    session.add(row)
            return len(seen)

    def events(
        self, job_id: str, *, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> Page[BodyRecord]:
        return self._page(FineTuningEventRow, job_id, after, limit, order)

    def checkpoints(
        self, job_id: str, *, after: str | None = None, limit: int = 10, order: Order = "desc"
    ) -> Page[BodyRecord]:
        return self._page(FineTuningCheckpointRow, job_id, after, limit, order)

    def all_events(self, job_id: str) -> builtins.list[BodyRecord]:
        stmt = (
            select(FineTuningEventRow)
            .where(FineTuningEventRow.job_id == job_id)
            .order_by(FineTuningEventRow.seq)
        )
        with self.store.read() as session:
            return [_body(r) for r in session.scalars(stmt)]

    def _page(
        self,
        table: type[FineTuningEventRow] | type[FineTuningCheckpointRow],
        job_id: str,
        after: str | None,
        limit: int,
        order: Order,
    ) -> Page[BodyRecord]:
        self.get(job_id)
        stmt: Select[Any] = select(table).where(table.job_id == job_id)
        if after is not None:
            after_seq = self._seq(table, table.id, after, "after")
            stmt = stmt.where(table.seq > after_seq if order == "asc" else table.seq < after_seq)
        stmt = stmt.order_by(table.seq.asc() if order == "asc" else table.seq.desc())
        with self.store.read() as session:
            rows = [_body(r) for r in session.scalars(stmt.limit(limit + 1))]
        return Page(data=rows[:limit], has_more=len(rows) > limit)

    def _seq(self, table: Any, id_col: Any, value: str, param: str) -> int:
        with self.store.read() as session:
            seq = session.scalar(select(table.seq).where(id_col == value))
        if seq is None:
            raise NotFoundError(f"No object found with id '{value}'.", param=param)
        return int(seq)
