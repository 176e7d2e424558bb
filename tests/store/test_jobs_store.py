"""Fine-tuning jobs in the store: atomic claims, heartbeats, idempotent mirroring (both DBs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from distillery.store import Store
from distillery.store.jobs import JobsRepo
from distillery.store.models import FineTunedModelsRepo


@pytest.fixture
def repo(db_url: str) -> Iterator[JobsRepo]:
    store = Store.open(db_url)
    yield JobsRepo(store)
    store.close()


def _job(repo: JobsRepo, job_id: str, status: str = "queued", metadata: dict | None = None) -> None:
    repo.insert(
        job_id=job_id,
        created_at=int(time.time()),
        status=status,
        backend="local",
        body={"id": job_id, "object": "fine_tuning.job", "metadata": metadata},
        state={"provider": "local"},
    )


def test_two_workers_never_claim_the_same_job(repo: JobsRepo) -> None:
    for i in range(5):
        _job(repo, f"ftjob-race{i}")
    wins: list[tuple[str, str]] = []
    barrier = threading.Barrier(8)

    def worker(name: str) -> None:
        barrier.wait()
        for i in range(5):
            if repo.claim(
                f"ftjob-race{i}",
                worker_id=name,
                from_status="queued",
                to_status="running",
                now=time.time(),
            ):
                wins.append((f"ftjob-race{i}", name))

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(job for job, _ in wins) == [f"ftjob-race{i}" for i in range(5)]
    for job_id, name in wins:
        record = repo.get(job_id)
        assert record.status == "running" and record.worker_id == name


def test_stale_running_job_is_reclaimable_and_heartbeats_keep_it(repo: JobsRepo) -> None:
    _job(repo, "ftjob-stale")
    assert repo.claim(
        "ftjob-stale", worker_id="a", from_status="queued", to_status="running", now=100.0
    )
    # fresh heartbeat: another worker cannot take it
    assert not repo.claim(
        "ftjob-stale", worker_id="b", from_status="running", to_status="running",
        now=130.0, stale_before=70.0,
    )  # fmt: skip
    assert repo.heartbeat(["ftjob-stale"], worker_id="a", now=150.0) == {"ftjob-stale"}
    assert [j.id for j in repo.claimable(stale_before=140.0)] == []
    # silent for longer than the stale limit: b takes over, a notices at its next heartbeat
    assert [j.id for j in repo.claimable(stale_before=200.0)] == ["ftjob-stale"]
    assert repo.claim(
        "ftjob-stale", worker_id="b", from_status="running", to_status="running",
        now=260.0, stale_before=200.0,
    )  # fmt: skip
    assert repo.heartbeat(["ftjob-stale"], worker_id="a", now=261.0) == set()
    assert repo.get("ftjob-stale").worker_id == "b"


def test_conditional_update_and_state_merge(repo: JobsRepo) -> None:
    _job(repo, "ftjob-upd", status="running")
    assert repo.update("ftjob-upd", status="succeeded", expect_status=("queued",)) is None
    done = repo.update(
        "ftjob-upd", status="succeeded", body={"fine_tuned_model": "ft:x::1"}, state={"a": 1}
    )
    assert done is not None and done.status == "succeeded" and done.finished
    assert done.to_object()["status"] == "succeeded"
    assert done.body["fine_tuned_model"] == "ft:x::1" and done.state == {
        "provider": "local",
        "a": 1,
    }


def test_events_are_mirrored_once_and_paginate_newest_first(repo: JobsRepo) -> None:
    _job(repo, "ftjob-ev")
    events = [(f"ftevent-{i:03d}", 1000 + i, {"id": f"ftevent-{i:03d}", "n": i}) for i in range(5)]
    assert repo.add_events("ftjob-ev", events) == 5
    assert repo.add_events("ftjob-ev", [*events, ("ftevent-new", 2000, {"id": "ftevent-new"})]) == 1
    page = repo.events("ftjob-ev", limit=3)
    assert [e.id for e in page.data] == ["ftevent-new", "ftevent-004", "ftevent-003"]
    assert page.has_more
    rest = repo.events("ftjob-ev", after=page.data[-1].id, limit=10)
    assert [e.id for e in rest.data] == ["ftevent-002", "ftevent-001", "ftevent-000"]
    assert not rest.has_more
    assert repo.add_checkpoint("ftjob-ev", "ftckpt-1", 1, {"id": "ftckpt-1"})
    assert not repo.add_checkpoint("ftjob-ev", "ftckpt-1", 1, {"id": "ftckpt-1"})


def test_list_filters_metadata(repo: JobsRepo) -> None:
    _job(repo, "ftjob-m1", metadata={"team": "a"})
    _job(repo, "ftjob-m2", metadata={"team": "b"})
    _job(repo, "ftjob-m3", metadata={"team": "a"})
    page = repo.list(metadata={"team": "a"})
    assert [j.id for j in page.data] == ["ftjob-m3", "ftjob-m1"]
    assert [j.id for j in repo.list(order="asc", limit=2).data] == ["ftjob-m1", "ftjob-m2"]


def test_fine_tuned_models_register_is_idempotent(db_url: str) -> None:
    store = Store.open(db_url)
    models = FineTunedModelsRepo(store)
    first = models.register("ft:base:s:abc", base_model="base", provider="local", adapter_path="/a")
    again = models.register("ft:base:s:abc", base_model="base", provider="local", adapter_path="/b")
    assert again == first and models.get("ft:base:s:abc") == first
    assert models.get("ft:nope") is None
    assert [m.id for m in models.list(provider="local")] == ["ft:base:s:abc"]
    store.close()
