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
from distillery.capture.stored import StoredCompletion

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
    """``\\u0000`` (kept as sent: JSON columns are json text, not jsonb, which refuses it) and
    2**63 prompt tokens (integer columns overflow)."""
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
    assert content == "echo: a\u0000b"
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


# -- an answer the gateway cannot write back: a 502, stored as failed --------------------------

DEEP = "The upstream's answer nests deeper than 254 levels and cannot be relayed."


def _create(client: openai.OpenAI, endpoint: str, case: str, **extra: object) -> object:
    """``poison-deep`` (a ``usage`` nested 600 levels) through ``endpoint``, stored."""
    metadata = {"case": case}
    if endpoint == "chat":
        return client.chat.completions.create(
            model="poison-deep",
            messages=[{"role": "user", "content": "deep"}],
            store=True,
            metadata=metadata,
            **extra,  # type: ignore[arg-type]
        )
    if endpoint == "completions":
        return client.completions.create(
            model="poison-deep",
            prompt="deep",
            extra_body={"store": True, "metadata": metadata},
            **extra,  # type: ignore[arg-type]
        )
    return client.responses.create(
        model="poison-deep",
        input="deep",
        metadata=metadata,
        **extra,  # type: ignore[arg-type]
    )


def _failed_record(server, case: str) -> StoredCompletion:  # type: ignore[no-untyped-def]
    """The exchange is stored once, as failed with the 502 (not as a delivered answer)."""
    (record,) = server.services.completions.list(metadata={"case": case}).data
    assert record.status == "failed"
    assert record.error is not None and record.error["code"] == "bad_gateway"
    assert record.error["message"] == DEEP
    return record


def _healthy(server) -> None:  # type: ignore[no-untyped-def]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["writer_restarts"] == 0
    assert health["spooled_completions"] == 0
    after = _client(server).chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "after"}], store=True
    )
    assert after.choices[0].message.content == "echo: after"


@pytest.mark.parametrize("endpoint", ["chat", "completions", "responses"])
def test_an_answer_too_deep_to_encode_is_a_502_stored_as_failed(
    live: Callable,  # type: ignore[type-arg]
    endpoint: str,
) -> None:
    """Non-streamed: the gateway writes the answer itself, so it must be able to encode it."""
    server = live()
    client = _client(server)
    with pytest.raises(openai.APIStatusError) as err:
        _create(client, endpoint, f"deep-{endpoint}")
    assert err.value.status_code == 502
    assert err.value.body == {
        "message": DEEP,
        "type": "upstream_error",
        "param": None,
        "code": "bad_gateway",
    }
    record = _failed_record(server, f"deep-{endpoint}")
    assert record.response is None and record.error["status"] == 502  # as an upstream 5xx's
    listed = client.chat.completions.list(metadata={"case": f"deep-{endpoint}"}).data
    assert [c.choices for c in listed] == [[]]  # nothing delivered to show
    _healthy(server)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_deep_stream_whose_ids_are_rewritten_ends_with_an_error_event(
    live: Callable,  # type: ignore[type-arg]
    fake_openai,  # type: ignore[no-untyped-def]
    endpoint: str,
) -> None:
    """The upstream reuses a stored id, so its events must be rewritten (the client sees the
    id the stream is stored under) and the deep one cannot be: the stream ends with an error
    event, not a cut connection and not ``[DONE]``."""
    server = live()
    client = _client(server)
    reused = f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-deep-reused"
    fake_openai.reuse_id = reused
    try:
        if endpoint == "chat":
            first = client.chat.completions.create(
                model="echo-1", messages=[{"role": "user", "content": "one"}], store=True
            )
        else:
            first = client.completions.create(  # type: ignore[assignment]
                model="echo-1", prompt="one", extra_body={"store": True}
            )
        assert first.id == reused
        stream = _create(client, endpoint, f"deep-stream-{endpoint}", stream=True)
        with pytest.raises(openai.APIError) as err:
            for _ in stream:  # type: ignore[attr-defined]
                pass
    finally:
        fake_openai.reuse_id = None
    assert err.value.message == DEEP
    assert err.value.body == {
        "message": DEEP,
        "type": "upstream_error",
        "param": None,
        "code": "bad_gateway",
    }
    # failed, with what the stream carried (as a stream failing mid-way), deep node cut
    record = _failed_record(server, f"deep-stream-{endpoint}")
    assert record.id != reused and record.stream
    assert server.services.completions.get(reused).status == "completed"  # left as it was
    _healthy(server)


def test_a_deep_responses_stream_ends_with_response_failed(live: Callable) -> None:  # type: ignore[type-arg]
    """The gateway rewrites each lifecycle event of a proxied Responses stream (store, metadata,
    id); ``response.completed`` nested 600 levels cannot be: ``response.failed`` instead."""
    server = live()
    events = list(_create(_client(server), "responses", "deep-stream-responses", stream=True))  # type: ignore[call-overload]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.done",
        "response.failed",
    ]
    failed = events[-1].response
    assert failed.id == events[0].response.id and failed.status == "failed"
    assert failed.error is not None and failed.error.code == "bad_gateway"  # type: ignore[comparison-overlap]
    assert failed.error.message == DEEP
    _failed_record(server, "deep-stream-responses")
    _healthy(server)


# a chat-only upstream (vLLM: Responses requests are translated to chat completions)
VLLM = """
[providers.deepvllm]
kind = "vllm"
base_url = "{base_url}"
api_key_env = "FAKE_OPENAI_KEY"
adapter_dir = "{adapters}"
models = ["poison-deep-call"]
"""


def test_a_translated_response_too_deep_to_encode_fails_as_a_502(
    home: Path, db_url: str, fake_openai, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A Responses request a chat upstream answers with a tool call whose ``id`` nests 600
    levels: the Response it translates to cannot be written: 502 plain, ``response.failed``
    streamed (the tool call's ``output_item.added`` cannot be written either)."""
    from distillery.app import build_services, create_app
    from distillery.settings import Settings
    from tests.support.config import write_config
    from tests.support.live import LiveServer

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    extra = VLLM.format(base_url=fake_openai.base_url, adapters=home / "adapters")
    config = write_config(home, fake_openai, extra)
    services = build_services(Settings(home=home, database_url=db_url, config=config))
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    try:
        client = _client(server)
        with pytest.raises(openai.APIStatusError) as err:
            client.responses.create(
                model="poison-deep-call", input="deep", metadata={"case": "deep-call"}
            )
        assert err.value.status_code == 502 and err.value.body["message"] == DEEP  # type: ignore[index]
        assert _failed_record(server, "deep-call").response is None
        stream = client.responses.create(
            model="poison-deep-call",
            input="deep",
            stream=True,
            metadata={"case": "deep-call-stream"},
        )
        events = list(stream)
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert [e.type for e in events] == [
            "response.created",
            "response.in_progress",
            "response.failed",
        ]
        failed = events[-1].response  # type: ignore[union-attr]
        assert failed.error is not None and failed.error.message == DEEP
        assert failed.error.code == "bad_gateway"  # type: ignore[comparison-overlap]
        _failed_record(server, "deep-call-stream")
        _healthy(server)
    finally:
        server.stop()
        services.store.close()
