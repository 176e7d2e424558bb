"""The ``vllm`` provider kind against a fake vLLM/SGLang server (``tests/support/fakes/vllm_server.py``),
through the openai SDK and a live gateway.

A real tiny fine-tuning job of the embedded student publishes its adapter to the server that
serves its base model, and its ``ft:`` model then answers from there, streamed and captured.
The other tests register adapter folders directly (the fake server reads only their
``adapter_config.json``): LRU unloading with one slot, SGLang's endpoints, a server restart, and
the bad inputs (no runtime LoRA loading, a different base on the server, an unreachable server),
each a clear error while the rest keeps working.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from distillery.providers.vllm import VLLMProvider, lora_name
from distillery.services import Services
from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.fakes.vllm_server import FakeVLLM
from tests.support.ft import jsonl, upload, wait_for
from tests.support.live import LiveServer

LOCAL = "smollm2-135m-instruct"
TINY = {"max_length": 64, "lora_r": 4, "lora_alpha": 8}


@dataclass
class Stack:
    client: openai.OpenAI
    services: Services
    good: FakeVLLM  # serves smollm2 and base-a, one adapter slot
    nolora: FakeVLLM  # serves base-b, started without runtime LoRA loading
    other: FakeVLLM  # serves base-x while distillery thinks it serves base-c
    sglang: FakeVLLM  # serves base-s, SGLang's endpoints
    adapters: Path  # the shared adapter folder
    tmp: Path

    def fine_tune(self, base: str, suffix: str) -> str:
        """Register an adapter folder as a fine-tuned model of ``base`` and publish it."""
        model_id = f"ft:{base}:{suffix}:{len(list(self.tmp.iterdir())):08d}"
        folder = self.tmp / f"adapter-{suffix}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        model = self.services.fine_tuned_models.register(
            model_id, base_model=base, provider="local", adapter_path=str(folder)
        )
        on_model = self.services.fine_tuning.ledger.on_model
        assert on_model is not None
        on_model(model)
        return model_id

    def ask(self, model: str, text: str = "hi") -> str:
        answer = self.client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}]
        )
        assert answer.model == model
        return answer.choices[0].message.content or ""

    def provider(self, name: str) -> VLLMProvider:
        found = self.services.providers.get(name)
        assert isinstance(found, VLLMProvider)
        return found


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stack(
    home: Path, fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    monkeypatch.setenv("FAKE_AZURE_KEY", "azure-secret-value-123456")
    good = FakeVLLM([LOCAL, "base-a"], max_loras=1).start()
    nolora = FakeVLLM(["base-b"], runtime_lora=False).start()
    other = FakeVLLM(["base-x"]).start()
    sglang = FakeVLLM(["base-s"], flavor="sglang").start()
    adapters = tmp_path / "shared-adapters"
    extra = f"""
[providers.gpu]
kind = "vllm"
base_url = "{good.base_url}"
models = ["{LOCAL}", "base-a"]
adapter_dir = "{adapters}"
max_adapters = 1

[providers.nolora]
kind = "vllm"
base_url = "{nolora.base_url}"
models = ["base-b"]
adapter_dir = "{adapters}"

[providers.other]
kind = "vllm"
base_url = "{other.base_url}"
models = ["base-c"]
adapter_dir = "{adapters}"

[providers.sgl]
kind = "vllm"
flavor = "sglang"
base_url = "{sglang.base_url}"
models = ["base-s"]
adapter_dir = "{adapters}"

[providers.down]
kind = "vllm"
base_url = "http://127.0.0.1:{_closed_port()}/v1"
models = ["base-d"]
adapter_dir = "{adapters}"
"""
    config = write_config(home, fake_openai, extra)
    settings = Settings(home=home, database_url=f"sqlite:///{tmp_path / 'd.db'}", config=config)
    services = build_services(settings)
    server = LiveServer(create_app(services)).start()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    yield Stack(client, services, good, nolora, other, sglang, adapters, scratch)
    server.stop()
    services.store.close()
    for fake in (good, nolora, other, sglang):
        fake.stop()


def _stored(client: openai.OpenAI, model: str, n: int) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        found = [
            c.choices[0].message.content or "" for c in client.chat.completions.list(model=model)
        ]
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.training
def test_fine_tuned_student_is_published_and_answers_from_the_server(stack: Stack) -> None:
    client = stack.client
    job = client.fine_tuning.jobs.create(
        model=LOCAL,
        training_file=upload(client, jsonl()),
        suffix="gpu",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        extra_body={"distillery": TINY},
    )
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    ft = done.fine_tuned_model
    assert ft is not None and ft.startswith(f"ft:{LOCAL}:gpu:")
    name = lora_name(ft)
    published = stack.adapters / name
    assert (published / "adapter_config.json").is_file()  # copied when the job succeeded
    assert (published / "adapter_model.safetensors").is_file()
    assert stack.good.loaded == {}  # loaded on demand

    answer = client.chat.completions.create(
        model=ft,
        messages=[{"role": "user", "content": "VPN password reset?"}],
        store=True,
        metadata={"prompt": "router"},
    )
    assert answer.model == ft
    assert answer.choices[0].message.content == f"{name}: VPN password reset?"
    assert stack.good.loaded == {name: str(published)}
    assert stack.good.requests[-1]["model"] == name

    chunks = list(
        client.chat.completions.create(
            model=ft,
            messages=[{"role": "user", "content": "有給の申請は？"}],
            stream=True,
            store=True,
            metadata={"prompt": "router"},
        )
    )
    assert {c.model for c in chunks} == {ft}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"{name}: 有給の申請は？"
    assert stack.good.calls == [("load", name)]  # loaded once

    stored = _stored(client, ft, 2)
    assert sorted(stored) == sorted([f"{name}: VPN password reset?", text])

    # the base model is the server's too; the other providers' models keep working
    assert stack.ask(LOCAL) == f"{LOCAL}: hi"
    assert stack.ask("echo-1") == "echo: hi"


def test_least_recently_used_adapter_is_unloaded_when_the_slots_are_full(stack: Stack) -> None:
    one = stack.fine_tune("base-a", "one")
    two = stack.fine_tune("base-a", "two")
    n1, n2 = lora_name(one), lora_name(two)
    assert (stack.adapters / n1 / "adapter_config.json").is_file()  # published at once

    assert stack.ask(one) == f"{n1}: hi"
    assert stack.ask(one, "again") == f"{n1}: again"
    assert stack.ask(two) == f"{n2}: hi"
    assert stack.good.loaded == {n2: str(stack.adapters / n2)}
    assert stack.ask(one) == f"{n1}: hi"
    assert stack.good.calls == [
        ("load", n1),
        ("unload", n1),
        ("load", n2),
        ("unload", n2),
        ("load", n1),
    ]
    assert stack.provider("gpu").loaded_adapters() == [one]

    stream = stack.client.chat.completions.create(
        model=two, messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"{n2}: streamed"
    assert list(stack.good.loaded) == [n2]


def test_an_adapter_the_server_lost_is_loaded_again(stack: Stack) -> None:
    model = stack.fine_tune("base-a", "lost")
    name = lora_name(model)
    assert stack.ask(model) == f"{name}: hi"
    stack.good.forget_all()  # the server restarted
    assert stack.ask(model) == f"{name}: hi"
    stack.good.forget_all()
    stream = stack.client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "s"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == f"{name}: s"
    assert stack.good.calls == [("load", name)] * 3


def test_sglang_server_loads_through_its_own_endpoints(stack: Stack) -> None:
    model = stack.fine_tune("base-s", "sgl")
    name = lora_name(model)
    assert stack.ask(model) == f"{name}: hi"
    assert stack.sglang.calls == [("load", name)]


def test_server_without_runtime_lora_loading_is_a_clear_502(stack: Stack) -> None:
    model = stack.fine_tune("base-b", "nolora")
    with pytest.raises(openai.APIStatusError) as err:
        stack.ask(model)
    assert err.value.status_code == 502
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "lora_loading_unavailable"
    assert "runtime LoRA loading" in body["message"] and "--enable-lora" in body["message"]
    assert stack.ask("base-b") == "base-b: hi"  # the base model still answers
    assert stack.ask("echo-1") == "echo: hi"


def test_adapter_on_a_base_the_server_does_not_serve_is_a_400(stack: Stack) -> None:
    model = stack.fine_tune("base-c", "mismatch")
    with pytest.raises(openai.BadRequestError) as err:
        stack.ask(model)
    body = err.value.body
    assert isinstance(body, dict)
    assert body["code"] == "adapter_base_mismatch" and body["param"] == "model"
    assert "base-c" in body["message"] and "base-x" in body["message"]
    assert stack.other.calls == []
    assert stack.ask("echo-1") == "echo: hi"


def test_unreachable_server_is_a_502_and_the_rest_keeps_working(stack: Stack) -> None:
    model = stack.fine_tune("base-d", "down")
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as err:
            response = stack.client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=stream
            )
            list(response) if stream else None  # type: ignore[call-overload]
        assert err.value.status_code == 502
        assert "unreachable" in err.value.message
    with pytest.raises(openai.APIStatusError) as err:
        stack.ask("base-d")
    assert err.value.status_code == 502
    one = stack.fine_tune("base-a", "fine")
    assert stack.ask(one) == f"{lora_name(one)}: hi"


def test_deleted_fine_tune_is_unloaded_and_no_longer_served(stack: Stack) -> None:
    model = stack.fine_tune("base-a", "gone")
    name = lora_name(model)
    assert stack.ask(model) == f"{name}: hi"
    stack.services.providers.retire(model)
    assert not (stack.adapters / name).exists()
    with pytest.raises(openai.NotFoundError):
        stack.ask(model)
    other = stack.fine_tune("base-a", "next")
    assert stack.ask(other) == f"{lora_name(other)}: hi"
    assert ("unload", name) in stack.good.calls
