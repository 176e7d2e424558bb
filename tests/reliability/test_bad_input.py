"""No 500 for bad input, no broken page for a bad record, and the smaller items of issue 14
(items 6 and 9): deep JSON, an upstream ``usage`` that is not an object, stored ``tool_calls``
that are not a list, malformed metadata filters, literal search, redirects, request ids."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

from .conftest import read_stream


def _client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=20)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [255, 300, 600, 1000, 1024])
def test_deep_json_is_a_400(hostile_sqlite: LiveServer, depth: int) -> None:
    """orjson reads 1,024 levels but writes 254: such a body can be neither forwarded nor
    stored as it is (it was a 500 from the provider's encoder)."""
    url = hostile_sqlite.url
    message = b'{"role":"user","content":"x","extra":' + _nested(depth - 3) + b"}"
    for flags in (b"", b',"stream":true', b',"store":true', b',"store":true,"stream":true'):
        raw = b'{"model":"echo-1","messages":[' + message + b"]" + flags + b"}"
        r = httpx.post(
            url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, (depth, flags, r.text[:300])
        assert r.json()["error"]["code"] == "invalid_json"
    # the other JSON endpoints walk the depth when they read the body
    raw = b'{"name":"deep","metadata":{"a":' + _nested(depth - 2) + b"}}"
    r = httpx.post(url + "/v1/evals", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["writer_restarts"] == 0
    # 254 levels are forwarded
    message = b'{"role":"user","content":"ok","extra":' + _nested(251) + b"}"
    raw = b'{"model":"echo-1","messages":[' + message + b"]}"
    r = httpx.post(
        url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text[:300]


def test_usage_that_is_not_an_object_is_a_502_and_stored(
    hostile_live: Callable[..., LiveServer],
) -> None:
    server = hostile_live()
    client = _client(server)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="hostile-bad-usage", messages=[{"role": "user", "content": "u"}], store=True
        )
    assert caught.value.status_code == 502
    assert "usage" in caught.value.message
    stored = server.services.completions.list(limit=10).data  # type: ignore[attr-defined]
    assert len(stored) == 1 and stored[0].status == "failed"
    assert stored[0].error is not None and "usage" in stored[0].error["message"]
    # streamed, the bytes are the client's already: stored with the usage as sent, no counts
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={
            "model": "hostile-bad-usage",
            "stream": True,
            "store": True,
            "messages": [{"role": "user", "content": "s"}],
        },
        timeout=20,
    ) as r:
        assert r.status_code == 200
        cid, done = read_stream(r.iter_lines())
    assert done and cid
    streamed = server.services.completions.get(cid)  # type: ignore[attr-defined]
    assert streamed.response is not None and streamed.response["usage"] == [1, 2, 3]
    assert streamed.prompt_tokens is None
    for path in ("/completions", f"/completions/{cid}", f"/completions/{stored[0].id}"):
        assert httpx.get(server.url + path).status_code == 200, path
    assert client.chat.completions.retrieve(cid).id == cid


def test_tool_calls_that_are_not_a_list_do_not_break_pages(
    hostile_live: Callable[..., LiveServer],
) -> None:
    server = hostile_live()
    client = _client(server)
    ids = []
    # from the upstream (its answer's tool_calls is 5) ...
    ids.append(
        client.chat.completions.create(
            model="hostile-tool-calls", messages=[{"role": "user", "content": "t"}], store=True
        ).id
    )
    # ... and from clients: the gateway forwards what it is given
    for value in (5, "call", {"id": "x"}, [1, "two", None]):
        r = httpx.post(
            server.url + "/v1/chat/completions",
            json={
                "model": "echo-1",
                "store": True,
                "messages": [
                    {"role": "assistant", "content": "a", "tool_calls": value},
                    {"role": "user", "content": "q"},
                ],
            },
        )
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    listed = httpx.get(server.url + "/completions")
    assert listed.status_code == 200
    assert all(i in listed.text for i in ids)
    for cid in ids:
        page = httpx.get(server.url + f"/completions/{cid}")
        assert page.status_code == 200, (cid, page.text[:300])
        assert client.chat.completions.retrieve(cid).id == cid
    assert len(client.chat.completions.list(limit=10).data) == len(ids)


def test_a_malformed_metadata_filter_is_a_400(hostile_sqlite: LiveServer) -> None:
    url = hostile_sqlite.url + "/v1/chat/completions"
    client = _client(hostile_sqlite)
    client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "m"}], store=True, metadata={"a": "b"}
    )
    client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "n"}], store=True
    )
    for query in ("metadata[a=b", "metadata[]=b", "metadata=b", "metadata[a]]x=b"):
        r = httpx.get(f"{url}?{query}")
        assert r.status_code == 400, (query, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert len(httpx.get(f"{url}?metadata[a]=b").json()["data"]) == 1
    assert len(httpx.get(url).json()["data"]) == 2


def test_dashboard_search_is_literal(hostile_live: Callable[..., LiveServer]) -> None:
    server = hostile_live()
    client = _client(server)
    texts = ["100% sure", "100 sure", "a_b", "axb", "back\\slash", "backslash"]
    ids = {
        t: client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": t}], store=True
        ).id
        for t in texts
    }

    def found(q: str) -> set[str]:
        page = httpx.get(server.url + "/completions", params={"q": q})
        assert page.status_code == 200
        shown = set(re.findall(r'href="/completions/(chatcmpl-[A-Za-z0-9]+)"', page.text))
        return {t for t, i in ids.items() if i in shown}

    assert found("100%") == {"100% sure"}
    assert found("a_b") == {"a_b"}
    assert found("%") == {"100% sure"}
    assert found("x_") == set()  # a wildcard "_" would match "axb"
    assert found("sure") == {"100% sure", "100 sure"}


def test_redirects_are_followed_only_within_the_upstreams_origin(
    hostile_sqlite: LiveServer, fake_openai: FakeOpenAI
) -> None:
    client = _client(hostile_sqlite)
    fake_openai.redirected.clear()
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model="hostile-redirect-away",
                messages=[{"role": "user", "content": "r"}],
                stream=stream,
            )
        assert caught.value.status_code == 502
        assert "redirect" in caught.value.message
    assert fake_openai.redirected == []  # the prompt never reached the other origin
    answer = client.chat.completions.create(
        model="hostile-redirect-same", messages=[{"role": "user", "content": "r"}]
    )
    assert answer.choices[0].message.content == "echo: r"
    assert len(fake_openai.redirected) == 1
    assert fake_openai.redirected[0]["authorization"] == "Bearer sk-test-secret-value-123456"


def test_every_response_carries_a_request_id(hostile_sqlite: LiveServer) -> None:
    url = hostile_sqlite.url
    answers = [
        httpx.get(url + "/health"),
        httpx.get(url + "/v1/models"),
        httpx.get(url + "/v1/nope"),
        httpx.get(url + "/"),
        httpx.get(url + "/static/dashboard.css"),
        httpx.get(url + "/no-such-page"),
        httpx.post(url + "/v1/chat/completions", content=b"x"),  # 415
        httpx.post(url + "/v1/chat/completions", json={"model": "fail-500", "messages": []}),
        httpx.get(url + "/health", headers={"host": "evil.example"}),  # 400 from the guard
    ]
    ids = [a.headers.get("x-request-id") for a in answers]
    assert all(i and re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    created = _client(hostile_sqlite).chat.completions.with_raw_response.create(
        model="echo-1", messages=[{"role": "user", "content": "id"}]
    )
    assert re.fullmatch(r"req_[0-9a-f]{32}", created.request_id or "")
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json={"model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "s"}]},
    ) as r:
        assert r.headers["x-request-id"].startswith("req_")
