"""With the database unavailable, capture still answers; records are spooled and replayed."""

from __future__ import annotations

import httpx
import openai
import pytest
from sqlalchemy.exc import OperationalError


def test_database_down_spools_then_replays(client: openai.OpenAI, gateway, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    writer = gateway.services.writer
    real = writer._insert_many

    def down(records):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT", {}, Exception("database is down"))

    monkeypatch.setattr(writer, "_insert_many", down)
    resp = client.chat.completions.create(
        model="echo-1",
        messages=[{"role": "user", "content": "during the outage"}],
        store=True,
        metadata={"case": "spool"},
    )
    assert resp.choices[0].message.content == "echo: during the outage"
    health = httpx.get(gateway.url + "/health").json()
    assert health["status"] == "degraded" and health["spooled_completions"] == 1
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(resp.id)

    monkeypatch.setattr(writer, "_insert_many", real)
    # the server's own watch (every second) may replay it first: either way it is stored once
    assert writer.replay_spool() in (0, 1) and writer.spooled() == 0
    stored = client.chat.completions.retrieve(resp.id)
    assert stored.metadata == {"case": "spool"}
    assert httpx.get(gateway.url + "/health").json()["spooled_completions"] == 0
