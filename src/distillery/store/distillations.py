"""Distillations (``distillery.distill``): one row per prompt distilled, claimed by one runner.

A runner takes a distillation with one conditional ``UPDATE`` (queued, or running under a runner
that stopped sending heartbeats), so two processes sharing the database never run the same one.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, insert, or_, select, update

from distillery.errors import NotFoundError
from distillery.store.base import Store
from distillery.store.records import Page
from distillery.store.tables import DistillationRow

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class DistillationRecord:
    id: str
    created_at: int
    status: str
    prompt: str
    worker_id: str | None
    heartbeat_at: float | None
    body: dict[str, Any]


def _record(row: DistillationRow) -> DistillationRecord:
    return DistillationRecord(
        id=row.id,
        created_at=row.created_at,
        status=row.status,
        prompt=row.prompt,
        worker_id=row.worker_id,
        heartbeat_at=row.heartbeat_at,
        body=dict(row.body),
    )


class DistillationsRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(
        self,
        distillation_id: str,
        *,
        created_at: int,
        status: str,
        prompt: str,
        body: dict[str, Any],
        worker_id: str | None = None,
        heartbeat_at: float | None = None,
    ) -> DistillationRecord:
        with self.store.write() as session:
            session.execute(
                insert(DistillationRow).values(
                    id=distillation_id,
                    created_at=created_at,
                    status=status,
                    prompt=prompt[:512],
                    worker_id=worker_id,
                    heartbeat_at=heartbeat_at,
                    body=body,
                )
            )
        return self.get(distillation_id)

    def get(self, distillation_id: str) -> DistillationRecord:
        with self.store.read() as session:
            row = session.scalar(
                select(DistillationRow).where(DistillationRow.id == distillation_id)
            )
            if row is None:
                raise NotFoundError(
                    f"No distillation with id '{distillation_id}'.", param="distillation_id"
                )
            return _record(row)

    def list(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Order = "desc",
        status: str | None = None,
    ) -> Page[DistillationRecord]:
        stmt = select(DistillationRow)
        if status is not None:
            stmt = stmt.where(DistillationRow.status == status)
        with self.store.read() as session:
            if after is not None:
                seq = session.scalar(select(DistillationRow.seq).where(DistillationRow.id == after))
                if seq is None:
                    raise NotFoundError(f"No distillation with id '{after}'.", param="after")
                stmt = stmt.where(
                    DistillationRow.seq > seq if order == "asc" else DistillationRow.seq < seq
                )
            key = DistillationRow.seq.asc() if order == "asc" else DistillationRow.seq.desc()
            rows = list(session.scalars(stmt.order_by(key).limit(limit + 1)))
            return Page([_record(r) for r in rows[:limit]], len(rows) > limit)

    def update(
        self,
        distillation_id: str,
        *,
        body: dict[str, Any],
        status: str | None = None,
        worker_id: str | None = None,
        heartbeat_at: float | None = None,
        expect_status: tuple[str, ...] | None = None,
    ) -> bool:
        """Write the body (and status); ``worker_id`` only while that runner holds it;
        ``expect_status`` only from those statuses. Returns whether a row changed."""
        cond = [DistillationRow.id == distillation_id]
        if worker_id is not None:
            cond.append(DistillationRow.worker_id == worker_id)
        if expect_status is not None:
            cond.append(DistillationRow.status.in_(list(expect_status)))
        values: dict[str, Any] = {"body": body}
        if status is not None:
            values["status"] = status
        if heartbeat_at is not None:
            values["heartbeat_at"] = heartbeat_at
        with self.store.write() as session:
            result = session.execute(update(DistillationRow).where(*cond).values(**values))
            return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def claimable(
        self, *, stale_before: float, limit: int = 5
    ) -> builtins.list[DistillationRecord]:
        """Queued distillations, and running ones whose runner went silent, oldest first."""
        stale = or_(
            DistillationRow.worker_id.is_(None),
            DistillationRow.heartbeat_at.is_(None),
            DistillationRow.heartbeat_at < stale_before,
        )
        stmt = (
            select(DistillationRow)
            .where(
                or_(
                    DistillationRow.status == "queued",
                    and_(DistillationRow.status == "running", stale),
                )
            )
            .order_by(DistillationRow.seq)
            .limit(limit)
        )
        with self.store.read() as session:
            return [_record(r) for r in session.scalars(stmt)]

    def claim(
        self, distillation_id: str, *, worker_id: str, now: float, stale_before: float
    ) -> bool:
        """Atomically take a queued distillation, or a running one from a silent runner."""
        stale = or_(
            DistillationRow.worker_id.is_(None),
            DistillationRow.heartbeat_at.is_(None),
            DistillationRow.heartbeat_at < stale_before,
        )
        stmt = (
            update(DistillationRow)
            .where(
                DistillationRow.id == distillation_id,
                or_(
                    DistillationRow.status == "queued",
                    and_(DistillationRow.status == "running", stale),
                ),
            )
            .values(worker_id=worker_id, status="running", heartbeat_at=now)
        )
        with self.store.write() as session:
            return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def release(self, distillation_id: str, *, worker_id: str) -> None:
        """Give a running distillation back (its runner is stopping): the next runner resumes."""
        with self.store.write() as session:
            session.execute(
                update(DistillationRow)
                .where(
                    DistillationRow.id == distillation_id,
                    DistillationRow.worker_id == worker_id,
                    DistillationRow.status == "running",
                )
                .values(worker_id=None, heartbeat_at=None, status="queued")
            )
