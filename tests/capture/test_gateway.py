"""The capture gateway through the official openai SDK against a live server (SQLite + PostgreSQL)."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk


def test_create_store_and_retrieve(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="echo-1",
        messages=[{"role": "user", "content": "有給休暇の申請方法は？"}],
        store=True,
        metadata={"prompt": "router", "prompt_version": "c0ffee1"},
        temperature=0.2,
    )
    assert isinstance(resp, ChatCompletion)
    assert resp.choices[0].message.content == "echo: 有給休暇の申請方法は？"
    stored = client.chat.completions.retrieve(resp.id)
    assert stored.id == resp.id
    assert stored.metadata == {"prompt": "router", "prompt_version": "c0ffee1"}
    assert stored.choices[0].message.content == "echo: 有給休暇の申請方法は？"
    assert stored.usage is not None and stored.usage.total_tokens > 0
    msgs = client.chat.completions.messages.list(resp.id)
    assert [m.content for m in msgs.data] == ["有給休暇の申請方法は？"]


def test_without_store_nothing_is_stored(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "hi"}]
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(resp.id)
    assert client.chat.completions.list().data == []


def test_metadata_requires_store(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "x"}], metadata={"a": "b"}
        )
    assert err.value.body["param"] == "metadata"  # type: ignore[index]


@pytest.mark.parametrize(
    ("metadata", "param"),
    [
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
        ({"k" * 65: "v"}, "metadata." + "k" * 65),
        ({"k": "v" * 513}, "metadata.k"),
    ],
)
def test_metadata_limits(client: openai.OpenAI, metadata: dict[str, str], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="echo-1",
            messages=[{"role": "user", "content": "x"}],
            store=True,
            metadata=metadata,
        )
    assert err.value.body["param"] == param  # type: ignore[index]
    # exactly at the limits is fine
    ok = {f"k{i}": "v" * 512 for i in range(16)}
    client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "x"}], store=True, metadata=ok
    )


def test_list_filter_update_delete(client: openai.OpenAI) -> None:
    ids = []
    for i in range(6):
        r = client.chat.completions.create(
            model="echo-1" if i % 2 else "json-1",
            messages=[{"role": "user", "content": f"q{i}"}],
            store=True,
            metadata={"prompt": "router" if i < 4 else "other", "n": str(i)},
        )
        ids.append(r.id)
    page = client.chat.completions.list(model="echo-1")
    assert [c.id for c in page.data] == [ids[1], ids[3], ids[5]]
    page = client.chat.completions.list(metadata={"prompt": "router"}, order="desc")
    assert [c.id for c in page.data] == [ids[3], ids[2], ids[1], ids[0]]
    page = client.chat.completions.list(metadata={"prompt": "router", "n": "2"})
    assert [c.id for c in page.data] == [ids[2]]
    updated = client.chat.completions.update(ids[0], metadata={"reviewed": "yes"})
    assert updated.metadata == {"reviewed": "yes"}
    assert [c.id for c in client.chat.completions.list(metadata={"reviewed": "yes"}).data] == [
        ids[0]
    ]
    assert client.chat.completions.list(metadata={"prompt": "router", "n": "0"}).data == []
    deleted = client.chat.completions.delete(ids[1])
    assert deleted.deleted and deleted.id == ids[1]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(ids[1])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.delete(ids[1])


def test_pagination_walks_without_gaps_or_repeats(client: openai.OpenAI, gateway) -> None:  # type: ignore[no-untyped-def]
    from distillery.store.records import NewCompletion

    services = gateway.services
    records = [
        NewCompletion(
            id=f"chatcmpl-bulk{i:05d}",
            created_at=1_700_000_000 + i,
            model="echo-1",
            provider="fake",
            status="completed",
            stream=False,
            request={"model": "echo-1", "messages": [{"role": "user", "content": str(i)}]},
            response={
                "id": f"chatcmpl-bulk{i:05d}",
                "object": "chat.completion",
                "created": 1,
                "model": "echo-1",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": str(i)},
                    }
                ],
            },
            error=None,
            metadata={"bulk": "yes", "parity": str(i % 2)},
        )
        for i in range(537)
    ]
    services.completions.insert_many(records)
    seen = [
        c.id for c in client.chat.completions.list(limit=100, metadata={"bulk": "yes"})
    ]  # auto-paging
    assert seen == [r.id for r in records]
    first = client.chat.completions.list(limit=50, metadata={"parity": "1"}, order="desc")
    assert first.has_more
    walked = []
    page = first
    while True:
        walked.extend(c.id for c in page.data)
        if not page.has_more:
            break
        page = client.chat.completions.list(
            limit=50, metadata={"parity": "1"}, order="desc", after=page.data[-1].id
        )
    assert walked == [r.id for r in reversed(records) if int(r.id[-5:]) % 2 == 1]


def test_streaming_passthrough_and_stored(client: openai.OpenAI, gateway) -> None:  # type: ignore[no-untyped-def]
    body = {
        "model": "echo-1",
        "messages": [{"role": "user", "content": "stream me please"}],
        "stream": True,
        "store": True,
        "metadata": {"prompt": "s"},
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_raw())
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = [
        ChatCompletionChunk.model_validate_json(line[6:])
        for line in raw.split(b"\n\n")
        if line.startswith(b"data: {")
    ]
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "echo: stream me please"
    )
    stored = client.chat.completions.retrieve(chunks[0].id)
    assert stored.choices[0].message.content == "echo: stream me please"
    assert stored.choices[0].finish_reason == "stop"
    assert stored.usage is not None and stored.usage.completion_tokens == 4
    # the SDK's own streaming works too
    stream = client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "a b"}], stream=True, store=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: a b"


def test_streaming_is_byte_identical(gateway, fake_openai) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "x y z"}], "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body) as r:
        via_gateway = b"".join(r.iter_raw())
    with httpx.stream("POST", fake_openai.base_url + "/chat/completions", json=body) as r:
        direct = b"".join(r.iter_raw())
    # only the per-response counter in the id differs
    import re

    norm = lambda b: re.sub(rb"chatcmpl-fake\d+", b"ID", re.sub(rb'"created":\d+', b"", b))  # noqa: E731
    assert norm(via_gateway) == norm(direct)


@pytest.mark.parametrize(
    ("model", "status", "cls"),
    [
        ("fail-400", 400, openai.BadRequestError),
        ("fail-401", 401, openai.AuthenticationError),
        ("fail-404", 404, openai.NotFoundError),
        ("fail-500", 502, openai.APIStatusError),
        ("no-such-model", 404, openai.NotFoundError),
    ],
)
def test_upstream_errors(client: openai.OpenAI, model: str, status: int, cls: type) -> None:
    with pytest.raises(cls) as err:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], store=True
        )
    assert err.value.status_code == status
    body = err.value.body
    assert set(body) == {"message", "type", "param", "code"}
    if model == "fail-400":
        assert "scripted failure 400" in body["message"]


def test_failed_exchange_is_recorded(client: openai.OpenAI, gateway) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="fail-400",
            messages=[{"role": "user", "content": "x"}],
            store=True,
            metadata={"case": "failed"},
        )
    rows = gateway.services.completions.list(metadata={"case": "failed"}).data
    assert len(rows) == 1 and rows[0].status == "failed" and rows[0].error["status"] == 400


def test_connection_failure_is_502(home, db_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import socket

    from distillery.app import build_services, create_app
    from distillery.providers.openai_compatible import OpenAIProviderConfig
    from distillery.settings import Config, Settings
    from tests.support.live import LiveServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    config = Config(
        providers={
            "dead": OpenAIProviderConfig(
                base_url=f"http://127.0.0.1:{dead_port}/v1",
                models=["m"],
                timeout_s=0.5,
            ),
            "slow": OpenAIProviderConfig(base_url="http://127.0.0.1:9/v1", models=["n"]),
        }
    )
    services = build_services(Settings(home=home, database_url=db_url), config)
    server = LiveServer(create_app(services)).start()
    try:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert err.value.status_code == 502
    finally:
        server.stop()


def test_timeout_is_504(home, db_url, fake_openai) -> None:  # type: ignore[no-untyped-def]
    from distillery.app import build_services, create_app
    from distillery.providers.openai_compatible import OpenAIProviderConfig
    from distillery.settings import Config, Settings
    from tests.support.live import LiveServer

    config = Config(
        providers={
            "f": OpenAIProviderConfig(
                base_url=fake_openai.base_url, models=["slow-3000"], timeout_s=0.3
            )
        }
    )
    services = build_services(Settings(home=home, database_url=db_url), config)
    server = LiveServer(create_app(services)).start()
    try:
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(
                model="slow-3000", messages=[{"role": "user", "content": "x"}]
            )
        assert err.value.status_code == 504
    finally:
        server.stop()


def test_azure_provider_uses_deployment_url_and_api_key_header(
    client: openai.OpenAI, fake_openai
) -> None:  # type: ignore[no-untyped-def]
    resp = client.chat.completions.create(
        model="azure-gpt", messages=[{"role": "user", "content": "az"}]
    )
    assert resp.choices[0].message.content == "echo: az"
    headers = fake_openai.headers[-1]
    assert headers.get("api-key") == "azure-secret-value-123456"
    assert "authorization" not in headers


def test_provider_key_sent_and_store_not_forwarded(client: openai.OpenAI, fake_openai) -> None:  # type: ignore[no-untyped-def]
    client.chat.completions.create(
        model="echo-1",
        messages=[{"role": "user", "content": "k"}],
        store=True,
        metadata={"a": "b"},
        temperature=0.5,
        seed=7,
    )
    assert fake_openai.headers[-1]["authorization"] == "Bearer sk-test-secret-value-123456"
    sent = fake_openai.requests[-1]
    assert "store" not in sent and "metadata" not in sent
    assert sent["temperature"] == 0.5 and sent["seed"] == 7


def test_bad_bodies_are_openai_errors(gateway) -> None:  # type: ignore[no-untyped-def]
    url = gateway.url + "/v1/chat/completions"
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(url, json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = httpx.post(url, json={"model": "echo-1", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.post(
        url,
        json={"model": "echo-1", "messages": [{"role": "user", "content": "x"}], "store": "yes"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "store"
    r = httpx.post(
        url, content=b"x" * (33 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    r = httpx.get(gateway.url + "/v1/chat/completions?limit=1000")
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(gateway.url + "/v1/nowhere")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.post(
        gateway.url + "/v1/chat/completions/chatcmpl-x", json={"metadata": {}, "model": "y"}
    )
    assert r.status_code == 400


def test_upstream_reusing_ids_never_overwrites(client: openai.OpenAI, fake_openai) -> None:  # type: ignore[no-untyped-def]
    fake_openai.reuse_id = "chatcmpl-same"
    try:
        a = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "one"}], store=True
        )
        b = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "two"}], store=True
        )
    finally:
        fake_openai.reuse_id = None
    assert a.id != b.id
    assert client.chat.completions.retrieve(a.id).choices[0].message.content == "echo: one"
    assert client.chat.completions.retrieve(b.id).choices[0].message.content == "echo: two"


def test_models_and_health(client: openai.OpenAI, gateway) -> None:  # type: ignore[no-untyped-def]
    ids = {m.id for m in client.models.list()}
    assert {"echo-1", "azure-gpt"} <= ids
    assert client.models.retrieve("echo-1").owned_by == "fake"
    assert httpx.get(gateway.url + "/health").json()["status"] == "ok"


def test_upstream_proxy_follows_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from distillery.providers import openai_compatible as oc

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,.corp.example")
    oc._origin_proxy.cache_clear()
    try:
        assert oc._env_proxy("https://api.openai.com/v1/chat/completions") == (
            "http://proxy.internal:3128"
        )
        assert oc._env_proxy("https://llm.corp.example/v1/chat/completions") is None
        assert oc._env_proxy("http://127.0.0.1:8000/v1/chat/completions") is None
    finally:
        oc._origin_proxy.cache_clear()
