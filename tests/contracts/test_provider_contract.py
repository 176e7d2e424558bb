"""The provider contract: every kind, built-in or a plugin's, built through the same door.

Each kind is named in a configuration table, validated with its own config model
(``settings.provider_config``) and built by ``ProviderRegistry.from_config``, then must: be a
``Provider``; list and serve its configured models and no other; answer a chat completion the
openai SDK's ``ChatCompletion`` accepts; stream chunks ``ChatCompletionChunk`` accepts, ending
with ``[DONE]``; refuse a table key its kind does not have; declare each optional capability
(``providers.base.CAPABILITIES``) whole or not at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

from distillery.providers.base import CAPABILITIES, Provider, ProviderContext
from distillery.providers.registry import ProviderRegistry
from distillery.settings import Config, provider_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.fakes.vllm_server import FakeVLLM
from tests.support.tiny_families import tiny_family_dir

Table = dict[str, Any]


@pytest.fixture(scope="module")
def fake_vllm() -> Iterator[FakeVLLM]:
    server = FakeVLLM(["base-a"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_family_dir(tmp_path_factory.mktemp("contract-gemma3") / "model", "gemma3")


class _Url:
    """Where a vllm table points when nothing is asked of the server."""

    base_url = "http://127.0.0.1:9/v1"


def _tables(
    fake: FakeOpenAI, vllm: FakeVLLM | _Url, gemma: Path, tmp: Path
) -> dict[str, tuple[Table, str]]:
    """kind -> (its table, a model it serves)."""
    return {
        "openai": ({"kind": "openai", "base_url": fake.base_url, "models": ["echo-1"]}, "echo-1"),
        "azure": (
            {
                "kind": "azure",
                "endpoint": f"http://127.0.0.1:{fake.port}",
                "deployments": {"azure-gpt": "my-deployment"},
            },
            "azure-gpt",
        ),
        "vllm": (
            {
                "kind": "vllm",
                "base_url": vllm.base_url,
                "adapter_dir": str(tmp / "adapters"),
                "models": ["base-a"],
            },
            "base-a",
        ),
        "local": (
            {
                "kind": "local",
                "models": ["tiny-gemma3"],
                "paths": {"tiny-gemma3": str(gemma)},
                "device": "cpu",
                "threads": 1,
            },
            "tiny-gemma3",
        ),
        "replay": ({"kind": "replay", "recordings": [_recording(tmp)]}, "teacher-1"),
        "echo": ({"kind": "echo", "models": ["parrot-1"], "prefix": ">> "}, "parrot-1"),
    }


def _recording(tmp: Path) -> str:
    """A replay recording of the contract's request (``_body``), relative to the home."""
    line = {**_body("teacher-1"), "response": "pong", "metadata": {"source": "contract"}}
    (tmp / "recordings.jsonl").write_text(json.dumps(line, ensure_ascii=False) + "\n", "utf-8")
    return "recordings.jsonl"


KINDS = ["openai", "azure", "vllm", "local", "replay", "echo"]


@pytest.fixture
def built(
    request: pytest.FixtureRequest,
    fake_openai: FakeOpenAI,
    fake_vllm: FakeVLLM,
    tmp_path: Path,
) -> Iterator[tuple[Provider, str]]:
    kind: str = request.param
    if kind == "echo":
        request.getfixturevalue("installed_plugin")
    gemma = request.getfixturevalue("tiny_gemma") if kind == "local" else Path("unused")
    table, model = _tables(fake_openai, fake_vllm, gemma, tmp_path)[kind]
    config = Config.model_validate({"providers": {"p": table}})
    registry = ProviderRegistry.from_config(
        {"p": config.providers["p"]}, context=ProviderContext(home=tmp_path)
    )
    provider = registry.get("p")
    yield provider, model
    asyncio.run(provider.aclose())


def _body(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "ping こんにちは"}],
        "max_tokens": 4,
        "temperature": 0,
        **extra,
    }


def _chunks(stream: Callable[[], Any]) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [piece async for piece in stream()]

    raw = b"".join(asyncio.run(collect()))
    return [e[len(b"data: ") :] for e in raw.split(b"\n\n") if e.startswith(b"data: ")]


@pytest.mark.parametrize("built", KINDS, indirect=True)
def test_every_provider_kind_keeps_the_contract(built: tuple[Provider, str]) -> None:
    provider, model = built
    assert isinstance(provider, Provider)
    assert model in [m.id for m in provider.models()]
    assert provider.serves(model) and not provider.serves("no-such-model-anywhere")

    answer = ChatCompletion.model_validate(asyncio.run(provider.create(_body(model))))
    assert answer.object == "chat.completion" and answer.choices
    assert answer.choices[0].message.role == "assistant"

    events = _chunks(lambda: provider.stream(_body(model, stream=True)))
    assert events[-1] == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(e)) for e in events[:-1]]
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("built", KINDS, indirect=True)
def test_every_kind_declares_its_capabilities_whole(built: tuple[Provider, str]) -> None:
    """A kind with part of a capability (``add_model`` without ``remove_model``) would be
    skipped where the capability is used: it must have all of it or none."""
    provider, _model = built
    for protocol, members in CAPABILITIES.items():
        present = [name for name in members if hasattr(provider, name)]
        assert present in ([], list(members)), (protocol.__name__, present)
        assert isinstance(provider, protocol) == bool(present), protocol.__name__


def test_the_built_in_kinds_declare_what_they_do() -> None:
    from distillery.providers.base import AddsModels, HoldsSecrets, HostsAdapters
    from distillery.providers.openai_compatible import OpenAICompatibleProvider
    from distillery.providers.vllm import VLLMProvider
    from distillery.serving.local import LocalProvider

    assert issubclass(OpenAICompatibleProvider, AddsModels)
    assert issubclass(VLLMProvider, HostsAdapters) and issubclass(LocalProvider, HostsAdapters)
    assert not issubclass(LocalProvider, AddsModels)
    assert HoldsSecrets in CAPABILITIES


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_refuses_a_key_it_does_not_have(
    kind: str, request: pytest.FixtureRequest, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    if kind == "echo":
        request.getfixturevalue("installed_plugin")
    table, _model = _tables(fake_openai, _Url(), Path("unused"), tmp_path)[kind]
    with pytest.raises(ValidationError, match="no_such_key"):
        provider_config({**table, "no_such_key": 1})


def test_an_unknown_kind_names_the_kinds_there_are() -> None:
    with pytest.raises(ValidationError) as info:
        Config.model_validate({"providers": {"p": {"kind": "anthropic", "models": ["c"]}}})
    message = str(info.value)
    assert "unknown provider kind 'anthropic'" in message
    assert all(kind in message for kind in ("openai", "azure", "vllm", "local"))
