"""The overview's cross-area reads (store/dashboard.py): counts per area, the latest activity
across areas newest first, and the training costs fine-tuned models carry (both DBs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from distillery.costs.report import training_costs
from distillery.store import Store
from distillery.store.completions import CompletionsRepo
from distillery.store.dashboard import DashboardRepo
from distillery.store.jobs import JobsRepo
from distillery.store.models import FineTunedModelsRepo
from distillery.store.records import NewCompletion


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store.open(db_url)
    yield store
    store.close()


def _completion(i: int, created_at: int) -> NewCompletion:
    return NewCompletion(
        id=f"chatcmpl-d{i}",
        created_at=created_at,
        model=f"model-{i}",
        provider="p",
        status="completed",
        stream=False,
        request={"model": f"model-{i}", "messages": []},
        response=None,
        error=None,
        metadata={},
    )


def _job(jobs: JobsRepo, job_id: str, created_at: int) -> None:
    jobs.insert(
        job_id=job_id,
        created_at=created_at,
        status="queued",
        backend="local",
        body={"id": job_id, "object": "fine_tuning.job"},
        state={},
    )


def test_counts_and_recent_activity_across_areas(store: Store) -> None:
    dashboard = DashboardRepo(store)
    assert dashboard.counts().completions == 0 and dashboard.recent_activity() == []

    CompletionsRepo(store).insert_many([_completion(i, 1_000 + i) for i in range(3)])
    jobs = JobsRepo(store)
    _job(jobs, "ftjob-old", 500)
    _job(jobs, "ftjob-new", 2_000)
    FineTunedModelsRepo(store).register("ft:m:x:1", base_model="m", provider="local")

    n = dashboard.counts()
    assert (n.completions, n.jobs, n.fine_tuned_models) == (3, 2, 1)
    assert (n.datasets, n.evals, n.eval_runs) == (0, 0, 0)

    recent = dashboard.recent_activity(limit=4)
    assert [(a.kind, a.id) for a in recent] == [
        ("job", "ftjob-new"),
        ("completion", "chatcmpl-d2"),
        ("completion", "chatcmpl-d1"),
        ("completion", "chatcmpl-d0"),
    ]
    assert recent[0].label == "local" and recent[0].status == "queued"
    assert recent[1].label == "model-2" and recent[1].status == "completed"


def test_training_costs_are_each_models_recorded_cost(store: Store) -> None:
    models = FineTunedModelsRepo(store)
    models.register("ft:a", base_model="m", provider="local", metadata={"training_cost_usd": 2.5})
    models.register("ft:b", base_model="m", provider="local")  # none recorded: free
    assert training_costs(store) == {"ft:a": 2.5, "ft:b": 0.0}
