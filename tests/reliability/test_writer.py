"""The capture writer is supervised: killed or stuck, it is restarted and nobody waits forever."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import httpx
import openai

from distillery.capture.writer import _STOP
from distillery.store.records import NewCompletion


def _client(server) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=20)


def _kill(writer) -> None:  # type: ignore[no-untyped-def]
    """End the writer thread as an uncaught error would (the sentinel ``close`` sends)."""
    thread = writer._thread
    writer._queue.put(_STOP)
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_killed_writer_fails_health_and_is_restarted(live: Callable) -> None:  # type: ignore[type-arg]
    server = live()
    client = _client(server)
    writer = server.services.writer
    client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "warm"}], store=True
    )
    _kill(writer)
    health = httpx.get(server.url + "/health")
    assert health.status_code == 503 and health.json()["status"] == "failing"
    assert "stopped" in health.json()["writer_problem"]
    health = httpx.get(server.url + "/health")  # the check restarted it
    assert health.status_code == 200 and health.json()["writer_restarts"] == 1

    _kill(writer)  # killed again: the next stored request restarts it instead of hanging
    resp = client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "after the kill"}], store=True
    )
    assert client.chat.completions.retrieve(resp.id).choices[0].message.content == (
        "echo: after the kill"
    )
    assert writer.restarts == 2
    assert httpx.get(server.url + "/health").status_code == 200


def test_a_stuck_writer_is_replaced_and_its_requests_answered(live: Callable) -> None:  # type: ignore[type-arg]
    server = live()
    client = _client(server)
    writer = server.services.writer
    writer.stuck_after_s = 0.5
    real = writer._insert_many
    release = threading.Event()
    calls = {"n": 0}

    def hangs_once(records: Sequence[NewCompletion]) -> None:  # a database that stops answering
        calls["n"] += 1
        if calls["n"] == 1:
            release.wait(60)
        real(records)

    writer._insert_many = hangs_once
    try:
        resp = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "stuck"}], store=True
        )  # hung forever before: answered once the stuck batch is spooled
        assert writer.restarts == 1 and "stuck" in (writer.last_problem or "")
        after = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "next"}], store=True
        )
        assert client.chat.completions.retrieve(after.id).choices[0].message.content == (
            "echo: next"
        )
    finally:
        release.set()  # the stuck insert commits after all: the replay must not duplicate it
    deadline = time.monotonic() + 30
    while writer.spooled() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert writer.spooled() == 0
    assert client.chat.completions.retrieve(resp.id).choices[0].message.content == "echo: stuck"
    ids = [c.id for c in server.services.completions.iterate()]
    assert ids.count(resp.id) == 1 and len(ids) == 2
