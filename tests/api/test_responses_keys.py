"""A stored response belongs to the API key that created it: another ingest key cannot continue
its conversation (``previous_response_id``), and is told it does not exist rather than that it
is someone else's; an admin key reads every key's data (SQLite and PostgreSQL, auth on)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer


@pytest.fixture
def auth_gateway(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    config = write_config(home, fake_openai, extra="[server]\nauth = true\n")
    settings = Settings(home=home, database_url=db_url, config=config)
    services = build_services(settings)
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    yield server
    server.stop()
    services.store.close()


def _client(gateway: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def test_a_response_continues_only_for_its_own_key_or_an_admin(auth_gateway: Any) -> None:
    keys = auth_gateway.services.keys
    alice = _client(auth_gateway, keys.create(scope="ingest", name="alice")[1])
    bob = _client(auth_gateway, keys.create(scope="ingest", name="bob")[1])
    admin = _client(auth_gateway, keys.create(scope="admin", name="ops")[1])

    first = alice.responses.create(model="echo-1", input="合言葉は？")
    again = alice.responses.create(model="echo-1", input="more", previous_response_id=first.id)
    assert again.previous_response_id == first.id

    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            bob.responses.create(
                model="echo-1", input="steal", previous_response_id=first.id, stream=stream
            )
        error = refused.value.body
        assert isinstance(error, dict)
        assert error["code"] == "previous_response_not_found"
        assert error["param"] == "previous_response_id"
        assert error["message"] == f"Previous response with id '{first.id}' not found."

    assert admin.responses.create(
        model="echo-1", input="audit", previous_response_id=first.id
    ).output_text
    # bob's own conversation is his
    own = bob.responses.create(model="echo-1", input="mine")
    assert bob.responses.create(model="echo-1", input="x", previous_response_id=own.id).id
