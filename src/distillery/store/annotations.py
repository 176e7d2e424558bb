"""Annotation queues and items: race-safe claims, optimistic concurrency on edits.

A claim is a compare-and-set: ``UPDATE ... WHERE id = :id AND version = :seen AND (pending or
claim expired)``. Exactly one of two concurrent claimers changes the row (PostgreSQL re-checks the
``WHERE`` on the locked row under READ COMMITTED; SQLite serialises writers), the other sees 0
rows updated and tries the next candidate. Every change bumps ``version``; an edit names the
version it read and fails with 409 when the row has moved on, so no edit is lost silently.

Also here: a small read-only query of eval output items (``eval_output_items``) so queues can be
built from eval runs without importing ``distillery.evals``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from distillery import ids
from distillery.errors import ConflictError, NotFoundError
from distillery.store.base import Store
from distillery.store.records import Page
from distillery.store.tables import (
    AnnotationItemRow,
    AnnotationQueueRow,
    EvalOutputItemRow,
    EvalRunRow,
)

Order = Literal["asc", "desc"]
STATUSES = ("pending", "claimed", "accepted", "skipped")
_CANDIDATES = 8


@dataclass(frozen=True)
class AnnotationQueue:
    id: str
    name: str
    created_at: int
    source: dict[str, Any]
    priority: str
    metadata: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AnnotationItem:
    id: str
    queue_id: str
    completion_id: str
    priority: float
    status: str
    claimed_by: str | None
    claimed_at: int | None
    corrected_output: str | None
    rating: int | None
    tags: list[str]
    comment: str | None
    version: int
    updated_at: int


@dataclass(frozen=True)
class EvalOutput:
    """One output item of an eval run, as stored by the evals service (read-only here)."""

    run_id: str
    datasource_item_id: int
    status: str
    body: dict[str, Any]


def _item(row: AnnotationItemRow) -> AnnotationItem:
    return AnnotationItem(
        id=row.id,
        queue_id=row.queue_id,
        completion_id=row.completion_id,
        priority=row.priority,
        status=row.status,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        corrected_output=row.corrected_output,
        rating=row.rating,
        tags=list(row.tags or []),
        comment=row.comment,
        version=row.version,
        updated_at=row.updated_at,
    )


def _counts(session: Session, queue_id: str) -> dict[str, int]:
    rows = session.execute(
        select(AnnotationItemRow.status, func.count())
        .where(AnnotationItemRow.queue_id == queue_id)
        .group_by(AnnotationItemRow.status)
    ).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: int(n) for status, n in rows})
    counts["total"] = sum(counts[s] for s in STATUSES)
    return counts


def _queue(session: Session, row: AnnotationQueueRow) -> AnnotationQueue:
    return AnnotationQueue(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        source=dict(row.source),
        priority=row.priority,
        metadata=dict(row.meta or {}),
        counts=_counts(session, row.id),
    )


def _available(expire_before: int) -> Any:
    return or_(
        AnnotationItemRow.status == "pending",
        and_(
            AnnotationItemRow.status == "claimed",
            AnnotationItemRow.claimed_at < expire_before,
        ),
    )


class AnnotationsRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- queues ---------------------------------------------------------------------------------

    def create_queue(
        self,
        *,
        name: str,
        source: dict[str, Any],
        priority: str,
        items: Sequence[tuple[str, float]],
        metadata: dict[str, Any] | None = None,
        batch: int = 1000,
    ) -> AnnotationQueue:
        """A queue with one pending item per ``(completion_id, priority)``, in one transaction."""
        now = int(time.time())
        with self.store.write() as session:
            row = AnnotationQueueRow(
                id=ids.new_id(ids.ANNOTATION_QUEUE),
                name=name,
                created_at=now,
                source=source,
                priority=priority,
                meta=metadata,
            )
            session.add(row)
            session.flush()
            for start in range(0, len(items), batch):
                session.execute(
                    insert(AnnotationItemRow),
                    [
                        {
                            "id": ids.new_id(ids.ANNOTATION_ITEM),
                            "queue_id": row.id,
                            "completion_id": completion_id,
                            "priority": prio,
                            "status": "pending",
                            "version": 0,
                            "updated_at": now,
                            "tags": None,
                        }
                        for completion_id, prio in items[start : start + batch]
                    ],
                )
            return _queue(session, row)

    def get_queue(self, queue_id: str) -> AnnotationQueue:
        with self.store.read() as session:
            row = session.scalar(
                select(AnnotationQueueRow).where(AnnotationQueueRow.id == queue_id)
            )
            if row is None:
                raise NotFoundError(f"No annotation queue found with id '{queue_id}'.", param="id")
            return _queue(session, row)

    def list_queues(
        self, *, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> Page[AnnotationQueue]:
        q = AnnotationQueueRow
        stmt = select(q)
        with self.store.read() as session:
            if after is not None:
                seq = session.scalar(select(q.seq).where(q.id == after))
                if seq is None:
                    raise NotFoundError(
                        f"No annotation queue found with id '{after}'.", param="after"
                    )
                stmt = stmt.where(q.seq > seq if order == "asc" else q.seq < seq)
            stmt = stmt.order_by(q.seq.asc() if order == "asc" else q.seq.desc()).limit(limit + 1)
            rows = list(session.scalars(stmt))
            return Page(data=[_queue(session, r) for r in rows[:limit]], has_more=len(rows) > limit)

    # --- items ----------------------------------------------------------------------------------

    def get_item(self, queue_id: str, item_id: str) -> AnnotationItem:
        with self.store.read() as session:
            row = session.scalar(
                select(AnnotationItemRow).where(
                    AnnotationItemRow.id == item_id, AnnotationItemRow.queue_id == queue_id
                )
            )
            if row is None:
                raise NotFoundError(
                    f"No item '{item_id}' in annotation queue '{queue_id}'.", param="item_id"
                )
            return _item(row)

    def list_items(
        self,
        queue_id: str,
        *,
        status: str | None = None,
        after: str | None = None,
        limit: int = 20,
    ) -> Page[AnnotationItem]:
        """Items in review order (priority, then insertion)."""
        a = AnnotationItemRow
        stmt = select(a).where(a.queue_id == queue_id)
        if status is not None:
            stmt = stmt.where(a.status == status)
        with self.store.read() as session:
            if after is not None:
                cursor = session.execute(
                    select(a.priority, a.seq).where(a.id == after, a.queue_id == queue_id)
                ).first()
                if cursor is None:
                    raise NotFoundError(f"No item '{after}' in this queue.", param="after")
                prio, seq = cursor
                stmt = stmt.where(or_(a.priority < prio, and_(a.priority == prio, a.seq > seq)))
            stmt = stmt.order_by(a.priority.desc(), a.seq.asc()).limit(limit + 1)
            rows = list(session.scalars(stmt))
            return Page(data=[_item(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def claim_next(
        self, queue_id: str, reviewer: str, *, claim_timeout_s: int, now: int | None = None
    ) -> AnnotationItem | None:
        """Atomically claim the highest-priority pending (or abandoned) item; None when none."""
        now = int(time.time()) if now is None else now
        expire_before = now - claim_timeout_s
        a = AnnotationItemRow
        while True:
            with self.store.read() as session:
                candidates = session.execute(
                    select(a.id, a.version)
                    .where(a.queue_id == queue_id, _available(expire_before))
                    .order_by(a.priority.desc(), a.seq.asc())
                    .limit(_CANDIDATES)
                ).all()
            if not candidates:
                return None
            for item_id, seen in candidates:
                with self.store.write() as session:
                    result = session.execute(
                        update(a)
                        .where(a.id == item_id, a.version == seen, _available(expire_before))
                        .values(
                            status="claimed",
                            claimed_by=reviewer,
                            claimed_at=now,
                            version=seen + 1,
                            updated_at=now,
                        )
                        .execution_options(synchronize_session=False)
                    )
                    if result.rowcount == 1:  # type: ignore[attr-defined]
                        row = session.scalar(select(a).where(a.id == item_id))
                        assert row is not None
                        return _item(row)
            # every candidate was taken by someone else meanwhile: look again

    def update_item(
        self, queue_id: str, item_id: str, *, expected_version: int, changes: dict[str, Any]
    ) -> AnnotationItem:
        """Apply ``changes`` if the item is still at ``expected_version`` (else 409)."""
        a = AnnotationItemRow
        now = int(time.time())
        with self.store.write() as session:
            result = session.execute(
                update(a)
                .where(a.id == item_id, a.queue_id == queue_id, a.version == expected_version)
                .values(**changes, version=expected_version + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                current = session.scalar(
                    select(a.version).where(a.id == item_id, a.queue_id == queue_id)
                )
                if current is None:
                    raise NotFoundError(
                        f"No item '{item_id}' in annotation queue '{queue_id}'.", param="item_id"
                    )
                raise ConflictError(
                    f"Item {item_id} was changed by someone else (it is at version {current}, "
                    f"your edit was based on version {expected_version}); reload it and retry.",
                    param="version",
                    code="version_conflict",
                )
            row = session.scalar(select(a).where(a.id == item_id))
            assert row is not None
            return _item(row)

    def accepted_corrections(self, completion_ids: Sequence[str]) -> dict[str, AnnotationItem]:
        """The latest accepted item with a corrected output, per completion id."""
        a = AnnotationItemRow
        found: dict[str, AnnotationItem] = {}
        ids_ = list(dict.fromkeys(completion_ids))
        with self.store.read() as session:
            for start in range(0, len(ids_), 500):
                rows = session.scalars(
                    select(a)
                    .where(
                        a.completion_id.in_(ids_[start : start + 500]),
                        a.status == "accepted",
                        a.corrected_output.is_not(None),
                    )
                    .order_by(a.updated_at.asc(), a.seq.asc())
                )
                for row in rows:
                    found[row.completion_id] = _item(row)  # later ones win
        return found

    def accepted_completion_ids(self, queue_id: str) -> list[str]:
        a = AnnotationItemRow
        self.get_queue(queue_id)
        with self.store.read() as session:
            return list(
                session.scalars(
                    select(a.completion_id)
                    .where(a.queue_id == queue_id, a.status == "accepted")
                    .order_by(a.priority.desc(), a.seq.asc())
                )
            )

    # --- eval runs (read-only) ------------------------------------------------------------------

    def eval_output_items(self, run_id: str, *, param: str = "run_id") -> list[EvalOutput]:
        with self.store.read() as session:
            if session.scalar(select(EvalRunRow.id).where(EvalRunRow.id == run_id)) is None:
                raise NotFoundError(f"No eval run found with id '{run_id}'.", param=param)
            rows = session.scalars(
                select(EvalOutputItemRow)
                .where(EvalOutputItemRow.run_id == run_id)
                .order_by(EvalOutputItemRow.seq.asc())
            )
            return [
                EvalOutput(
                    run_id=r.run_id,
                    datasource_item_id=r.datasource_item_id,
                    status=r.status,
                    body=dict(r.body or {}),
                )
                for r in rows
            ]
