"""Test helper: stored completions and services on a fresh store (SQLite or PostgreSQL)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distillery import ids
from distillery.services import Services, build_services
from distillery.settings import Config, Settings
from distillery.store.records import NewCompletion

_clock = itertools.count(1_700_000_000)


def completion(
    question: str,
    answer: str,
    *,
    model: str = "gpt-4o",
    metadata: dict[str, str] | None = None,
    system: str | None = "Route the inquiry.",
    created_at: int | None = None,
    status: str = "completed",
    completion_id: str | None = None,
) -> NewCompletion:
    cid = completion_id or ids.new_id(ids.CHAT_COMPLETION)
    created = created_at if created_at is not None else next(_clock)
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": question})
    response = (
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        if status == "completed"
        else None
    )
    return NewCompletion(
        id=cid,
        created_at=created,
        model=model,
        provider="test",
        status=status,
        stream=False,
        request={"model": model, "messages": messages},
        response=response,
        error=None if status == "completed" else {"message": "upstream failed"},
        metadata=metadata,
        prompt_tokens=10,
        completion_tokens=5,
    )


def insert(services: Services, *records: NewCompletion) -> list[str]:
    services.completions.insert_many(list(records))
    return [r.id for r in records]


def routing_set(n: int, *, prompt_version: str = "v1", prefix: str = "q") -> list[NewCompletion]:
    """``n`` distinct inquiries of the routing prompt, English and Japanese."""
    out = []
    for i in range(n):
        question = f"{prefix}{i}: how do I reset my VPN password, case {i}?"
        if i % 2:
            question = f"{prefix}{i}: 経費精算の領収書をなくしました（{i}件目）"
        out.append(
            completion(
                question,
                f'{{"reason": "case {i}", "category": "情報システム"}}',
                metadata={"prompt": "router", "prompt_version": prompt_version},
            )
        )
    return out


@contextmanager
def open_services(home: Path, db_url: str, config: Config | None = None) -> Iterator[Services]:
    services = build_services(Settings(home=home, database_url=db_url), config or Config())
    try:
        yield services
    finally:
        services.close_sync()
