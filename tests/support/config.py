"""A ``distillery.toml`` whose providers are the fake OpenAI server (and its Azure face)."""

from __future__ import annotations

from pathlib import Path

from tests.support.fakes.openai_server import FakeOpenAI


def write_config(home: Path, fake: FakeOpenAI, extra: str = "") -> Path:
    path = home / "distillery.toml"
    path.write_text(
        f"""
[providers.fake]
kind = "openai"
base_url = "{fake.base_url}"
api_key_env = "FAKE_OPENAI_KEY"
models = ["echo-1", "json-1", "fail-400", "fail-401", "fail-404", "fail-500", "slow-3000", "gpt-4o",
          "synth-teacher", "synth-strong", "synth-garbage"]

[providers.azure]
kind = "azure"
endpoint = "http://127.0.0.1:{fake.port}"
api_version = "2024-10-21"
api_key_env = "FAKE_AZURE_KEY"
deployments = {{ "azure-gpt" = "my-deployment" }}
{extra}
""",
        encoding="utf-8",
    )
    return path
