"""PII redaction before storage ([capture.redaction]): the recognisers, and the gateway storing
an exchange without its personal data (checked in the SQLite file's bytes) while the client
still gets the unredacted answer."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from distillery.capture.redaction import RedactionError, Redactor, my_number_valid
from distillery.settings import RedactionConfig
from distillery.store.records import NewCompletion
from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

EMAIL = "hanako.sato@example.co.jp"
PHONE = "090-1234-5678"
MY_NUMBER = "123456789018"  # check digit 8
CARD = "4111 1111 1111 1111"  # Luhn-valid test number


def _record(
    content: str, answer: str | None = None, metadata: dict[str, str] | None = None
) -> NewCompletion:
    return NewCompletion(
        id="chatcmpl-test",
        created_at=0,
        model="echo-1",
        provider="fake",
        status="completed",
        stream=False,
        request={"model": "echo-1", "messages": [{"role": "user", "content": content}]},
        response={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer or "了解しました"},
                    "logprobs": {"content": [{"token": "x", "logprob": -0.1}]},
                }
            ],
        },
        error=None,
        metadata=metadata,
    )


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(RedactionConfig(all=True))


def test_my_number_check_digit() -> None:
    assert my_number_valid(MY_NUMBER)
    assert not my_number_valid("123456789012")
    assert not my_number_valid("12345678901")


def test_patterns_in_japanese_text(redactor: Redactor) -> None:
    text = (
        f"佐藤です。メールは{EMAIL}、電話は{PHONE}、海外は+1 415-555-0100です。"
        f"マイナンバーは{MY_NUMBER[:4]} {MY_NUMBER[4:8]} {MY_NUMBER[8:]}、"
        f"カード{CARD}、〒150-0002 東京都渋谷区、郵便番号100-0001。"
    )
    out = redactor.redact(_record(text)).request["messages"][0]["content"]
    assert out == (
        "佐藤です。メールは<EMAIL_1>、電話は<PHONE_1>、海外は<PHONE_2>です。"
        "マイナンバーは<MY_NUMBER_1>、カード<CARD_1>、<POSTAL_CODE_1> 東京都渋谷区、"
        "郵便番号<POSTAL_CODE_2>。"
    )


def test_checked_numbers_only(redactor: Redactor) -> None:
    # a 12-digit order number without a valid check digit, a card number failing Luhn
    text = "注文番号123456789012、カード4111 1111 1111 1112、数量3個"
    rec = redactor.redact(_record(text))
    assert rec.request["messages"][0]["content"] == text
    assert rec.redaction == {"status": "redacted", "counts": {}}


def test_placeholders_consistent_across_the_exchange(redactor: Redactor) -> None:
    rec = redactor.redact(
        _record(
            f"Contact {EMAIL} or {PHONE}; cc bob@example.com",
            answer=f"{EMAIL.upper()} 様、09012345678 に折り返します",
        )
    )
    assert rec.request["messages"][0]["content"] == "Contact <EMAIL_1> or <PHONE_1>; cc <EMAIL_2>"
    assert rec.response is not None
    choice = rec.response["choices"][0]
    assert choice["message"]["content"] == "<EMAIL_1> 様、<PHONE_1> に折り返します"
    assert choice["logprobs"] is None  # its tokens would spell the values
    assert rec.response["id"] == "chatcmpl-test"  # protocol fields untouched
    assert rec.redaction == {"status": "redacted", "counts": {"EMAIL": 3, "PHONE": 2}}


def test_per_prompt_selection() -> None:
    red = Redactor(RedactionConfig(prompts=["router"]))
    assert red.applies({"prompt": "router"})
    assert not red.applies({"prompt": "other"})
    assert not red.applies(None)
    rec = _record(f"mail {EMAIL}", metadata={"prompt": "other"})
    assert red.redact(rec) is rec
    assert not RedactionConfig().enabled


class _Broken:
    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any) -> list[Any]:
        raise RuntimeError("recogniser crashed")


def test_failing_recogniser_refuses_or_marks() -> None:
    refuse = Redactor(RedactionConfig(all=True, entities=["EMAIL"]))
    refuse._recognisers = [(["EMAIL_ADDRESS"], _Broken())]
    with pytest.raises(RedactionError) as err:
        refuse.redact(_record(f"mail {EMAIL}"))
    assert err.value.status == 500 and err.value.code == "redaction_failed"
    store = Redactor(RedactionConfig(all=True, entities=["EMAIL"], on_error="store"))
    store._recognisers = [(["EMAIL_ADDRESS"], _Broken())]
    rec = store.redact(_record(f"mail {EMAIL}"))
    assert rec.request["messages"][0]["content"] == f"mail {EMAIL}"
    assert rec.redaction == {"status": "unredacted", "error": "RuntimeError: recogniser crashed"}


@pytest.mark.skipif(
    importlib.util.find_spec("ja_ginza") is None,
    reason="GiNZA's model is not installed (distillery[redaction-names])",
)
def test_japanese_names() -> None:
    red = Redactor(RedactionConfig(all=True, names=True))
    rec = red.redact(_record(f"山田太郎です。田中花子さんに{EMAIL}から連絡してください。"))
    out = rec.request["messages"][0]["content"]
    assert "山田太郎" not in out and "田中花子" not in out
    assert "<NAME_1>" in out and "<NAME_2>" in out and "<EMAIL_1>" in out
    assert rec.redaction is not None and rec.redaction["counts"]["NAME"] == 2


# --- through the gateway ---------------------------------------------------------------------------


def _gateway(
    home: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, extra: str
) -> LiveServer:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    config = write_config(home, fake, extra=extra)
    db = f"sqlite:///{home / 'distillery.db'}"
    services = build_services(Settings(home=home, database_url=db, config=config))
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    return server


@pytest.fixture
def redacting(
    home: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    server = _gateway(
        home, fake_openai, monkeypatch, '[capture.redaction]\nprompts = ["support"]\n'
    )
    yield server
    server.stop()
    server.services.store.close()  # type: ignore[attr-defined]


def _stored_bytes(home: Path) -> bytes:
    """Every byte distillery wrote under its home: the database, its WAL, the spool."""
    return b"".join(
        p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file() and not p.is_symlink()
    )


def test_gateway_stores_without_pii(redacting: LiveServer, home: Path) -> None:
    client = openai.OpenAI(base_url=redacting.url + "/v1", api_key="unused", max_retries=0)
    question = (
        f"経理の山本です。立替精算の件で{EMAIL}まで連絡ください。"
        f"携帯は{PHONE}、マイナンバーは{MY_NUMBER}です。"
    )
    resp = client.chat.completions.create(
        model="echo-1",
        messages=[{"role": "user", "content": question}],
        store=True,
        metadata={"prompt": "support", "prompt_version": "v1"},
    )
    assert resp.choices[0].message.content == f"echo: {question}"  # the client's answer is whole
    streamed = client.chat.completions.create(
        model="echo-1",
        messages=[{"role": "user", "content": f"折り返しは{PHONE}へ"}],
        store=True,
        metadata={"prompt": "support"},
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert PHONE in text
    other = client.chat.completions.create(
        model="echo-1",
        messages=[{"role": "user", "content": "not selected: keep@example.com"}],
        store=True,
        metadata={"prompt": "other"},
    )

    stored = client.chat.completions.retrieve(resp.id)
    content = stored.choices[0].message.content
    assert content == (
        "echo: 経理の山本です。立替精算の件で<EMAIL_1>まで連絡ください。"
        "携帯は<PHONE_1>、マイナンバーは<MY_NUMBER_1>です。"
    )
    messages = client.chat.completions.messages.list(resp.id)
    assert "<EMAIL_1>" in str(messages.data[0].content)
    assert stored.model_extra is not None
    assert stored.model_extra["redaction"] == {
        "status": "redacted",
        "counts": {"EMAIL": 2, "MY_NUMBER": 2, "PHONE": 2},
    }
    assert client.chat.completions.retrieve(other.id).model_extra.get("redaction") is None  # type: ignore[union-attr]

    redacting.services.store.close()  # type: ignore[attr-defined]  # flush the WAL
    raw = _stored_bytes(home)
    assert b"<EMAIL_1>" in raw or "<EMAIL_1>".encode("utf-16-le") in raw
    for value in (EMAIL, PHONE, MY_NUMBER, "09012345678"):
        assert value.encode() not in raw, value
        assert value.encode("utf-16-le") not in raw, value
    assert b"keep@example.com" in raw  # another prompt's exchange is stored as sent


def test_responses_and_routed_answers_are_stored_without_pii(
    redacting: LiveServer, home: Path
) -> None:
    """Redaction is a stage of every endpoint's path: a Responses exchange, answered by a route's
    student, is stored redacted (its Response, its input items, the chat view)."""
    import httpx

    route = httpx.post(
        redacting.url + "/v1/distillery/routes",
        json={
            "name": "support",
            "match": {"model": "echo-1", "metadata": {"prompt": "support"}},
            "student": "json-1",
            "mode": "full",
            "force": True,
        },
    )
    assert route.status_code == 200, route.text
    client = openai.OpenAI(base_url=redacting.url + "/v1", api_key="unused", max_retries=0)
    question = f"返信は{EMAIL}へお願いします"
    raw = client.responses.with_raw_response.create(
        model="echo-1", input=question, metadata={"prompt": "support"}
    )
    assert raw.headers["x-distillery-served-by"] == "student"
    answer = raw.parse()
    assert EMAIL in answer.output_text  # the client's answer is whole
    stored = client.responses.retrieve(answer.id)
    assert EMAIL not in stored.output_text and "<EMAIL_1>" in stored.output_text
    items = client.responses.input_items.list(answer.id)
    assert "<EMAIL_1>" in str(items.data[0].content)  # type: ignore[union-attr]

    redacting.services.store.close()  # type: ignore[attr-defined]  # flush the WAL
    raw_bytes = _stored_bytes(home)
    assert EMAIL.encode() not in raw_bytes and EMAIL.encode("utf-16-le") not in raw_bytes


def test_gateway_refuses_when_a_recogniser_fails(
    home: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _gateway(home, fake_openai, monkeypatch, "[capture.redaction]\nall = true\n")
    try:
        redactor = server.services.writer.redactor  # type: ignore[attr-defined]
        redactor._recognisers = [(["EMAIL_ADDRESS"], _Broken())]
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(
                model="echo-1", messages=[{"role": "user", "content": EMAIL}], store=True
            )
        assert err.value.body["code"] == "redaction_failed"  # type: ignore[index]
        assert client.chat.completions.list().data == []
    finally:
        server.stop()
        server.services.store.close()  # type: ignore[attr-defined]
