"""Read-only queries across areas, for the dashboard's overview: counts per area and the latest
activity across areas.

``DashboardRepo`` returns frozen records; nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, literal, select
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from distillery.store.base import Store
from distillery.store.tables import (
    CompletionRow,
    DatasetRow,
    EvalRow,
    EvalRunRow,
    FineTunedModelRow,
    FineTuningJobRow,
)

Column = ColumnElement[Any] | QueryableAttribute[Any]


@dataclass(frozen=True)
class Counts:
    completions: int
    datasets: int
    evals: int
    eval_runs: int
    jobs: int
    fine_tuned_models: int


@dataclass(frozen=True)
class Activity:
    kind: str  # completion | dataset | eval_run | job
    id: str
    created_at: int
    label: str
    status: str | None


class DashboardRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def counts(self) -> Counts:
        """How many completions, datasets, evals, eval runs, jobs and fine-tuned models."""
        return _counts(self.store)

    def recent_activity(self, *, limit: int = 12) -> list[Activity]:
        """The latest completions, datasets, eval runs and fine-tuning jobs, newest first."""
        return _recent_activity(self.store, limit=limit)


def _counts(store: Store) -> Counts:
    def n(col: Column) -> Select[tuple[int]]:
        return select(func.count(col))

    with store.read() as session:
        return Counts(
            completions=int(session.scalar(n(CompletionRow.seq)) or 0),
            datasets=int(session.scalar(n(DatasetRow.seq)) or 0),
            evals=int(session.scalar(n(EvalRow.seq)) or 0),
            eval_runs=int(session.scalar(n(EvalRunRow.seq)) or 0),
            jobs=int(session.scalar(n(FineTuningJobRow.seq)) or 0),
            fine_tuned_models=int(session.scalar(n(FineTunedModelRow.seq)) or 0),
        )


def _recent_activity(store: Store, *, limit: int) -> list[Activity]:
    def latest(
        kind: str,
        id_col: Column,
        created: Column,
        label: Column,
        status: Column,
        seq: Column,
    ) -> Select[str, Any, Any, Any, Any]:
        return (
            select(literal(kind).label("kind"), id_col, created, label, status)
            .order_by(seq.desc())
            .limit(limit)
        )

    parts = [
        latest(
            "completion",
            CompletionRow.id,
            CompletionRow.created_at,
            CompletionRow.model,
            CompletionRow.status,
            CompletionRow.seq,
        ),
        latest(
            "dataset",
            DatasetRow.id,
            DatasetRow.created_at,
            DatasetRow.name,
            literal(None),
            DatasetRow.seq,
        ),
        latest(
            "eval_run",
            EvalRunRow.id,
            EvalRunRow.created_at,
            EvalRunRow.eval_id,
            EvalRunRow.status,
            EvalRunRow.seq,
        ),
        latest(
            "job",
            FineTuningJobRow.id,
            FineTuningJobRow.created_at,
            FineTuningJobRow.backend,
            FineTuningJobRow.status,
            FineTuningJobRow.seq,
        ),
    ]
    out: list[Activity] = []
    with store.read() as session:
        for part in parts:
            for kind, id_, created, label, status in session.execute(part):
                out.append(Activity(str(kind), str(id_), int(created), str(label), status))
    out.sort(key=lambda a: a.created_at, reverse=True)
    return out[:limit]


__all__ = [
    "Activity",
    "Counts",
    "DashboardRepo",
]
