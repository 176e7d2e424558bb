"""The ``replay`` provider: a recorded teacher answering through a live gateway, offline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

TEACHER = "gpt-4o-2024-08-06"
JA = "蒸留とは何ですか？一文で答えてください。"
EN = "What is knowledge distillation? One sentence."
JA_ANSWER = "大きなモデルの答えで小さなモデルを訓練することです。"
EN_ANSWER = "Training a small model on a large model's answers."
USAGE = {"prompt_tokens": 21, "completion_tokens": 12, "total_tokens": 33}


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-recorded0001",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": TEACHER,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": USAGE,
    }


def _user(text: str) -> Any:  # the SDK's message params
    return [{"role": "user", "content": text}]


RECORDINGS = [
    {"model": TEACHER, "messages": _user(JA), "response": _completion(JA_ANSWER)},
    # the same question at temperature 0 is another request; `metadata` is not part of it
    {
        "model": TEACHER,
        "messages": _user(EN),
        "temperature": 0,
        "response": "Distillation, deterministically.",
        "metadata": {"source": "prod"},
    },
    {"model": TEACHER, "messages": _user(EN), "response": "an earlier answer"},
    {"model": TEACHER, "messages": _user(EN), "response": _completion(EN_ANSWER)},  # wins
]


def _write(path: Path, lines: list[Any]) -> None:
    path.write_text(
        "".join(
            (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n"
            for line in lines
        ),
        encoding="utf-8",
    )


EXTRA = """
[providers.recorded]
kind = "replay"
recordings = ["recordings/teacher.jsonl"]
"""


@pytest.fixture
def replay_gateway(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    (home / "recordings").mkdir()
    _write(home / "recordings" / "teacher.jsonl", RECORDINGS)
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    config = write_config(home, fake_openai, extra=EXTRA)
    services = build_services(Settings(home=home, database_url=db_url, config=config))
    server = LiveServer(create_app(services)).start()
    yield server
    server.stop()
    services.store.close()


@pytest.fixture
def replay_client(replay_gateway: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=replay_gateway.url + "/v1", api_key="unused", max_retries=0)


def test_the_recorded_teacher_answers_as_it_did(replay_client: openai.OpenAI) -> None:
    first = replay_client.chat.completions.create(model=TEACHER, messages=_user(JA))
    assert first.choices[0].message.content == JA_ANSWER
    assert first.model == TEACHER and first.usage is not None
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (21, 12)
    assert first.id.startswith("chatcmpl-") and first.id != "chatcmpl-recorded0001"
    again = replay_client.chat.completions.create(
        model=TEACHER,
        messages=_user(JA),
        user="someone else",
        metadata={"app": "test"},
        store=True,
    )
    assert again.choices[0].message.content == JA_ANSWER and again.id != first.id
    assert again.created >= first.created > 1_700_000_000

    # identical recordings: the last line wins; other sampling is another recorded request
    english = replay_client.chat.completions.create(model=TEACHER, messages=_user(EN))
    assert english.choices[0].message.content == EN_ANSWER
    cold = replay_client.chat.completions.create(
        model=TEACHER,
        messages=_user(EN),
        temperature=0,
    )
    assert cold.choices[0].message.content == "Distillation, deterministically."
    assert TEACHER in [m.id for m in replay_client.models.list()]


def test_a_stream_replays_the_recorded_answer(replay_client: openai.OpenAI) -> None:
    stream = replay_client.chat.completions.create(
        model=TEACHER,
        messages=_user(JA),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == JA_ANSWER
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].total_tokens == 33


def test_the_responses_api_is_answered_from_a_recording(replay_client: openai.OpenAI) -> None:
    response = replay_client.responses.create(model=TEACHER, input=EN)
    assert response.output_text == EN_ANSWER
    assert response.usage is not None and response.usage.total_tokens == 33


def test_a_request_never_recorded_is_a_404_naming_the_provider(
    replay_client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        replay_client.chat.completions.create(model=TEACHER, messages=_user("未録音の質問"))
    message = info.value.message
    assert "replay provider 'recorded' has no recording of this request" in message
    assert f"(model '{TEACHER}')" in message
    assert info.value.code == "recording_not_found"
    with pytest.raises(openai.NotFoundError, match="no recording"):
        list(
            replay_client.chat.completions.create(
                model=TEACHER,
                messages=_user(JA),
                temperature=0.7,  # not the recorded sampling: no nearest match
                stream=True,
            )
        )


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "line 3"),
        (json.dumps({"model": TEACHER, "response": "x"}), "'messages' must be a non-empty list"),
        (json.dumps({"model": TEACHER, "messages": _user(EN)}), "no 'response'"),
    ],
)
def test_a_malformed_recording_is_refused_at_start(
    home: Path, fake_openai: FakeOpenAI, tmp_path: Path, line: str, why: str
) -> None:
    from distillery.app import build_services
    from distillery.errors import ConfigError
    from distillery.settings import Settings

    (home / "recordings").mkdir()
    path = home / "recordings" / "teacher.jsonl"
    _write(path, [RECORDINGS[0], "", line])  # the blank line still counts
    config = write_config(home, fake_openai, extra=EXTRA)
    settings = Settings(home=home, database_url=f"sqlite:///{tmp_path / 'd.db'}", config=config)
    with pytest.raises(ConfigError) as info:
        build_services(settings)
    assert str(path) in info.value.message and "line 3" in info.value.message
    assert why in info.value.message


def test_models_default_to_the_recorded_ones_or_the_configured(tmp_path: Path) -> None:
    from distillery.providers.base import ProviderContext
    from distillery.providers.replay import REPLAY, ReplayProviderConfig

    _write(tmp_path / "r.jsonl", RECORDINGS)
    config = ReplayProviderConfig(recordings=[str(tmp_path / "r.jsonl")])
    provider = REPLAY.build("t", config, ProviderContext(home=Path("/nonexistent")))
    assert [m.id for m in provider.models()] == [TEACHER]
    only = REPLAY.build(
        "t", ReplayProviderConfig(recordings=["r.jsonl"], models=["x"]), ProviderContext(tmp_path)
    )
    assert only.serves("x") and not only.serves(TEACHER)


def test_one_normalisation_keys_recordings_and_the_cache() -> None:
    from distillery.routing.cache import UNCACHED_FIELDS
    from distillery.wire.chat import ANSWER_NEUTRAL_FIELDS, request_digest

    asked = {"model": TEACHER, "messages": _user(JA), "temperature": 0}
    same = {
        "temperature": 0,
        "messages": _user(JA),
        "model": TEACHER,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u",
        "store": True,
        "metadata": {"a": "b"},
        "service_tier": "auto",
        "top_p": None,
    }
    assert request_digest(asked) == request_digest(same)
    assert request_digest(asked) != request_digest({**asked, "temperature": 0.5})
    assert UNCACHED_FIELDS == ANSWER_NEUTRAL_FIELDS


def test_captured_traffic_exported_is_a_recording(
    client: openai.OpenAI, gateway: LiveServer, tmp_path: Path
) -> None:
    """``distillery completions export --metadata ...`` of a prompt's captured traffic (chat and
    Responses) replays as its teacher."""
    import asyncio

    from distillery.capture.importer import export_lines
    from distillery.providers.base import ProviderContext
    from distillery.providers.replay import REPLAY, ReplayProviderConfig

    tag = {"prompt": "recorded"}
    chat = client.chat.completions.create(
        model="echo-1", messages=_user(JA), store=True, metadata=tag, temperature=0
    )
    client.responses.create(model="echo-1", input=EN, metadata=tag)
    stored = gateway.services.stored_completions.iterate(metadata=tag)  # type: ignore[attr-defined]
    path = tmp_path / "captured.jsonl"
    path.write_bytes(b"".join(export_lines(stored)))
    config = ReplayProviderConfig(recordings=[str(path)])
    replay = REPLAY.build("recorded", config, ProviderContext(home=tmp_path))
    asked = {"model": "echo-1", "messages": _user(JA), "temperature": 0, "stream": False}
    again = asyncio.run(replay.create(asked))
    assert again["choices"][0]["message"]["content"] == chat.choices[0].message.content
    assert chat.usage is not None
    assert again["usage"]["prompt_tokens"] == chat.usage.prompt_tokens
    assert again["usage"]["completion_tokens"] == chat.usage.completion_tokens
    assert again["id"] != chat.id
    # the Responses exchange is recorded by the chat request it amounted to
    stored_responses = [
        c
        for c in gateway.services.completions.list(limit=10).data  # type: ignore[attr-defined]
        if "responses" in c.request
    ]
    (recorded,) = stored_responses
    chat_view = {k: v for k, v in recorded.request.items() if k != "responses"}
    answer = asyncio.run(replay.create(chat_view))
    assert answer["choices"][0]["message"]["content"] == f"echo: {EN}"
