"""The global response cache (``[gateway] cache_ttl_s``) for traffic no route matches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer
from tests.support.routes import until


@pytest.fixture
def cached_gateway(
    home: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    config = write_config(home, fake_openai, extra="\n[gateway]\ncache_ttl_s = 60\n")
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'd.db'}", config=config)
    services = build_services(settings)
    server = LiveServer(create_app(services)).start()
    yield server
    server.stop()
    services.store.close()


def test_global_cache_answers_repeats_without_a_model(
    cached_gateway: LiveServer, fake_openai: FakeOpenAI
) -> None:
    client = openai.OpenAI(base_url=cached_gateway.url + "/v1", api_key="x", max_retries=0)

    def ask(**extra: Any) -> tuple[Any, dict[str, str]]:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "年末調整の書類はいつまでですか？"}],
            store=True,
            **extra,
        )
        return raw.parse(), dict(raw.headers)

    first, headers = ask(temperature=0)
    assert headers["x-distillery-cache"] == "miss"
    until(lambda: ask(temperature=0)[1]["x-distillery-cache"] == "hit", what="a cache hit")
    seen = len(fake_openai.requests)
    again, headers = ask(temperature=0, user="someone else")  # `user` does not change the answer
    assert headers["x-distillery-cache"] == "hit" and len(fake_openai.requests) == seen
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.id != first.id and client.chat.completions.retrieve(again.id).id == again.id
    # other sampling, or not deterministic: the model answers
    _, headers = ask(temperature=0, max_tokens=5)
    assert headers["x-distillery-cache"] == "miss"
    _, headers = ask(temperature=0.8)
    assert "x-distillery-cache" not in headers
    report = httpx.get(cached_gateway.url + "/v1/distillery/costs", timeout=30).json()
    assert report["cache"]["hits"] >= 2 and report["cache"]["saved_usd"] > 0
