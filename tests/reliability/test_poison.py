"""Poison records: valid exchanges the database or the encoder refuses as they are.

Each must be acknowledged only once it is stored (normalised where needed), must not stop the
writer, and must never stop the next start (``replay_spool`` dead-letters what it cannot store).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from distillery.capture.storable import TOO_DEEP

from .conftest import read_stream


def _client(server) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=20)


def test_deep_nesting_is_stored_and_the_writer_lives(live: Callable) -> None:  # type: ignore[type-arg]
    """A usage field nested 600 levels (orjson reads it, cannot write it) in a stored stream."""
    server = live()
    body = {
        "model": "poison-deep",
        "stream": True,
        "store": True,
        "messages": [{"role": "user", "content": "deep"}],
    }
    with httpx.Client(timeout=20) as http:
        with http.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            cid, done = read_stream(r.iter_lines())
        assert done and cid
        stored = server.services.completions.get(cid)
        assert stored.response is not None
        assert stored.response["choices"][0]["message"]["content"] == "echo: deep"
        depth, node = 0, stored.response["usage"]["deep"]
        while isinstance(node, list) and node:
            depth, node = depth + 1, node[0]
        assert node == TOO_DEEP or (isinstance(node, list) and depth < 254)
        # the writer is alive: the next stored request is answered
        client = _client(server)
        after = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "after"}], store=True
        )
        assert client.chat.completions.retrieve(after.id).choices[0].message.content == (
            "echo: after"
        )
        health = http.get(server.url + "/health")
        assert health.status_code == 200 and health.json()["writer_restarts"] == 0


def test_nul_and_huge_usage_are_stored_before_the_answer(live: Callable, db_url: str) -> None:  # type: ignore[type-arg]
    """``\\u0000`` (JSONB refuses it) and 2**63 prompt tokens (integer columns overflow)."""
    server = live()
    client = _client(server)
    nul = client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "a\u0000b"}], store=True
    )
    huge = client.chat.completions.create(
        model="poison-huge", messages=[{"role": "user", "content": "many"}], store=True
    )
    # acknowledged means stored: visible at once, nothing left in the spool
    content = client.chat.completions.retrieve(nul.id).choices[0].message.content
    assert content in ("echo: a\u0000b", "echo: a\ufffdb")
    if db_url.startswith("postgresql"):
        assert content == "echo: a\ufffdb"
    stored = server.services.completions.get(huge.id)
    assert stored.prompt_tokens is None and stored.cost_usd is None
    assert stored.response is not None and stored.response["usage"]["prompt_tokens"] == 2**63
    assert httpx.get(server.url + "/health").json()["spooled_completions"] == 0
    # and the next start goes through
    from distillery.app import build_services

    build_services(server.services.settings).close_sync()


def _spooled(cid: str, **changes: object) -> bytes:
    record = {
        "id": cid,
        "created_at": int(time.time()),
        "model": "echo-1",
        "provider": "fake",
        "status": "completed",
        "stream": False,
        "request": {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]},
        "response": {"id": cid, "choices": []},
        "error": None,
        "metadata": {"case": "spool"},
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "cached_tokens": 0,
        "latency_ms": 1.0,
        "cost_usd": None,
        **changes,
    }
    return orjson.dumps(record)


def test_poison_in_the_spool_is_dead_lettered_and_start_goes_on(
    home: Path, db_url: str, fake_openai, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """What an earlier writer spooled (acknowledged) but the database refuses at the next start."""
    from distillery.app import build_services, create_app
    from distillery.settings import Settings
    from tests.support.config import write_config
    from tests.support.live import LiveServer

    spool = home / "spool" / "completions.jsonl"
    spool.parent.mkdir(parents=True)
    nul_request = {"model": "echo-1", "messages": [{"role": "user", "content": "x\u0000y"}]}
    lines = [
        _spooled("chatcmpl-good"),
        _spooled("chatcmpl-nul", request=nul_request, metadata={"k": "v\u0000"}),
        _spooled("chatcmpl-huge", prompt_tokens=2**63, completion_tokens=2**63),
        b'{"id": "chatcmpl-torn", "created_at": 17',  # a torn line
        orjson.dumps({"id": "chatcmpl-alien", "what": "not a completion"}),
    ]
    spool.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    settings = Settings(home=home, database_url=db_url, config=write_config(home, fake_openai))
    services = build_services(settings)  # raised before: serve exited 1
    try:
        repo = services.completions
        assert repo.get("chatcmpl-good").metadata == {"case": "spool"}
        nul = repo.get("chatcmpl-nul")
        assert nul.messages[0]["content"] in ("x\u0000y", "x\ufffdy")
        assert repo.get("chatcmpl-huge").prompt_tokens is None
        dead = (home / "spool" / "dead-letter.jsonl").read_bytes().splitlines()
        assert len(dead) == 2 and all(b'"error"' in line for line in dead)
        server = LiveServer(create_app(services)).start()
        try:
            health = httpx.get(server.url + "/health").json()
        finally:
            server.stop()
        assert health["status"] == "ok"
        assert health["spooled_completions"] == 0 and health["dead_lettered_completions"] == 2
    finally:
        services.store.close()
