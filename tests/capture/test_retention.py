"""Retention deletes expired stored completions for real, on both databases."""

from __future__ import annotations

from distillery.capture.retention import purge_expired
from distillery.store import Store
from distillery.store.completions import CompletionsRepo
from distillery.store.records import NewCompletion

DAY = 86_400


def _rec(i: int, created_at: int) -> NewCompletion:
    return NewCompletion(
        id=f"chatcmpl-r{i}",
        created_at=created_at,
        model="m",
        provider="p",
        status="completed",
        stream=False,
        request={"messages": []},
        response=None,
        error=None,
        metadata={"prompt": "x"},
    )


def test_purge_deletes_only_expired(db_url: str) -> None:
    store = Store.open(db_url)
    repo = CompletionsRepo(store)
    now = 1_800_000_000
    repo.insert_many([_rec(i, now - (40 - i) * DAY) for i in range(40)])  # ages 40..1 days
    assert purge_expired(repo, 0, now=now) == 0  # 0 keeps everything
    assert purge_expired(repo, 30, now=now) == 10
    assert repo.count() == 30
    assert repo.count(metadata={"prompt": "x"}) == 30  # metadata rows went with them
    assert purge_expired(repo, 30, now=now) == 0
    store.close()
