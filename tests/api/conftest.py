"""A live gateway whose fake upstream also lists an embedding and a legacy completions model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

EMBEDDING_MODEL = "text-embedding-3-small"
INSTRUCT_MODEL = "gpt-3.5-turbo-instruct"
LOCAL_STUDENT = "smollm2-135m-instruct"  # configured, never loaded: refused before any work


@pytest.fixture
def api_gateway(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    monkeypatch.setenv("FAKE_AZURE_KEY", "azure-secret-value-123456")
    extra = f"""
[providers.upstream]
kind = "openai"
base_url = "{fake_openai.base_url}"
api_key_env = "FAKE_OPENAI_KEY"
models = ["{EMBEDDING_MODEL}", "{INSTRUCT_MODEL}"]

[providers.local]
kind = "local"
models = ["{LOCAL_STUDENT}"]
"""
    config = write_config(home, fake_openai, extra)
    services = build_services(Settings(home=home, database_url=db_url, config=config))
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    yield server
    server.stop()
    services.store.close()


@pytest.fixture
def api(api_gateway: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=api_gateway.url + "/v1", api_key="unused", max_retries=0)
