"""Helpers of the eval-run tests: extra fake models, polling, raw JSON."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai

from tests.support.fakes.openai_server import FakeOpenAI

EXTRA_MODELS = ["slow-200", "slow-300", "judge-pass", "judge-fail", "judge-garbage"]


def add_fake_models(services: Any, fake: FakeOpenAI, models: list[str] | None = None) -> None:
    """Serve more of the fake server's models (slow ones, judges) in a running gateway."""
    from distillery.providers.openai_compatible import (
        OpenAICompatibleProvider,
        OpenAIProviderConfig,
    )

    cfg = OpenAIProviderConfig(
        base_url=fake.base_url,
        api_key_env="FAKE_OPENAI_KEY",
        models=list(models or EXTRA_MODELS),
    )
    services.providers.add(OpenAICompatibleProvider("fake-extra", cfg))


def extra_provider_toml(fake: FakeOpenAI) -> str:
    models = ", ".join(f'"{m}"' for m in EXTRA_MODELS)
    return f"""
[providers.fake_extra]
kind = "openai"
base_url = "{fake.base_url}"
api_key_env = "FAKE_OPENAI_KEY"
models = [{models}]
"""


def wait_run(client: openai.OpenAI, eval_id: str, run_id: str, timeout: float = 120) -> Any:
    deadline = time.time() + timeout
    while True:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status not in ("queued", "in_progress"):
            return run
        if time.time() > deadline:
            raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")
        time.sleep(0.05)


def raw(base_url: str, path: str, **params: Any) -> Any:
    response = httpx.get(base_url + path, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def all_output_items(client: openai.OpenAI, eval_id: str, run_id: str, **params: Any) -> list[Any]:
    return list(client.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=100, **params))
