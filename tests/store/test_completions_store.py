"""The completions repository on both databases: filters, ordering, search, Japanese text."""

from __future__ import annotations

import dataclasses

import pytest

from distillery.errors import NotFoundError
from distillery.store import Store
from distillery.store.completions import CompletionsRepo
from distillery.store.records import NewCompletion


def _rec(i: int, **meta: str) -> NewCompletion:
    text = "有給休暇の申請" if i % 3 == 0 else "reset my password"
    return NewCompletion(
        id=f"chatcmpl-s{i:04d}",
        created_at=1000 + i,
        model="m1" if i % 2 else "m2",
        provider="p",
        status="completed",
        stream=False,
        request={"model": "m", "messages": [{"role": "user", "content": text}]},
        response={"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]},
        error=None,
        metadata=meta or None,
        prompt_tokens=10,
        completion_tokens=2,
    )


def test_filters_and_search(db_url: str) -> None:
    store = Store.open(db_url)
    repo = CompletionsRepo(store)
    repo.insert_many(
        [_rec(i, prompt="router" if i < 20 else "other", v=str(i % 4)) for i in range(30)]
    )
    assert repo.count() == 30
    assert repo.count(metadata={"prompt": "router"}) == 20
    assert repo.count(metadata={"prompt": "router", "v": "1"}) == 5
    assert repo.count(model="m1", metadata={"prompt": "router"}) == 10
    assert repo.count(created_after=1025) == 5
    assert repo.count(created_before=1004) == 5
    assert repo.count(search="有給") == 10
    assert repo.count(search="password") == 20
    page = repo.list(metadata={"prompt": "router"}, order="desc", limit=3)
    assert [c.id for c in page.data] == ["chatcmpl-s0019", "chatcmpl-s0018", "chatcmpl-s0017"]
    assert page.has_more
    assert [c.id for c in repo.iterate(metadata={"v": "3"}, batch=2)] == [
        f"chatcmpl-s{i:04d}" for i in range(30) if i % 4 == 3
    ]
    got = repo.get("chatcmpl-s0003")
    assert got.messages[0]["content"] == "有給休暇の申請"
    with pytest.raises(NotFoundError):
        repo.get("chatcmpl-nope")
    with pytest.raises(NotFoundError):
        repo.list(after="chatcmpl-nope")
    repo.delete("chatcmpl-s0000")
    assert repo.count(metadata={"prompt": "router"}) == 19
    store.close()


def test_payloads_keep_their_key_order(db_url: str) -> None:
    """A request's JSON schema comes back with its properties in the order sent (the order a
    model writes the fields in); PostgreSQL's jsonb would sort them, shorter keys first."""
    store = Store.open(db_url)
    repo = CompletionsRepo(store)
    schema = {
        "type": "object",
        "properties": {"reason": {"type": "string"}, "category": {"enum": ["労務", "IT"]}},
        "required": ["reason", "category"],
        "additionalProperties": False,
    }
    rec = _rec(1)
    request = {
        **rec.request,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    }
    repo.insert_many([dataclasses.replace(rec, request=request)])
    got = repo.get(rec.id)
    stored = got.request["response_format"]["json_schema"]["schema"]
    assert list(stored) == ["type", "properties", "required", "additionalProperties"]
    assert list(stored["properties"]) == ["reason", "category"]
    assert list(got.request) == ["model", "messages", "response_format"]
    assert stored["properties"]["category"]["enum"] == ["労務", "IT"]
    assert repo.count(search="労務") == 1  # searchable in the stored text
    store.close()


def test_stored_responses_are_marked_listed_and_removed(db_url: str) -> None:
    from dataclasses import replace

    store = Store.open(db_url)
    repo = CompletionsRepo(store)
    chat = [_rec(i, prompt="p") for i in range(4)]
    responses = [
        replace(
            _rec(10 + i, prompt="p"),
            id=f"resp_s{i}",
            endpoint="responses",
            request={
                "model": "m",
                "messages": [],
                "responses": {"previous_response_id": "resp_s0"},
            },
        )
        for i in range(3)
    ]
    repo.insert_many([*chat[:2], *responses, *chat[2:]])
    assert repo.count(metadata={"prompt": "p"}) == 7
    assert repo.count(metadata={"prompt": "p"}, endpoint="responses") == 3
    listed = repo.list(endpoint="responses", order="desc")
    assert [c.id for c in listed.data] == ["resp_s2", "resp_s1", "resp_s0"]
    found = repo.get_response("resp_s1")
    assert found is not None and found.id == "resp_s1"
    assert repo.get_response("chatcmpl-s0000") is None  # a chat completion is not a response
    repo.delete("resp_s1")
    assert repo.get_response("resp_s1") is None
    assert repo.count(endpoint="responses") == 2
    assert repo.purge_before(1011) == 5  # the four chat completions and resp_s0
    assert repo.get_response("resp_s0") is None and repo.count(endpoint="responses") == 1
    store.close()
