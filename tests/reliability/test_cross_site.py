"""Cross-site and DNS-rebinding requests (issue 14, item 4), with the default ``auth = false``.

A page on another site can make a browser POST a ``text/plain`` or multipart body to a server on
loopback without a CORS preflight; a DNS-rebinding page (its own name resolving to 127.0.0.1)
sends ``Host: <its name>`` and can read the answers. None of them may spend the provider key,
write training data, or read the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson

from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

CHAT = {"model": "echo-1", "store": True, "messages": [{"role": "user", "content": "spend"}]}
EVAL = {
    "name": "planted",
    "data_source_config": {"type": "custom", "item_schema": {"type": "object"}},
    "testing_criteria": [
        {
            "type": "string_check",
            "name": "x",
            "input": "{{item.a}}",
            "operation": "eq",
            "reference": "b",
        }
    ],
}


def _error(r: httpx.Response) -> dict[str, object]:
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error  # type: ignore[no-any-return]


def test_json_endpoints_require_a_json_content_type(
    hostile_sqlite: LiveServer,
    fake_openai: FakeOpenAI,
) -> None:
    url = hostile_sqlite.url
    calls = len(fake_openai.requests)
    tried = 0
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/evals", EVAL)):
        raw = orjson.dumps(body)
        for headers in (
            {"content-type": "text/plain"},  # a cross-site form or fetch() sends this
            {"content-type": "text/plain;charset=UTF-8"},
            {"content-type": "application/x-www-form-urlencoded"},
            {"content-type": "multipart/form-data; boundary=x"},
            {},  # fetch() with a Blob body: no content type at all
        ):
            r = httpx.post(url + path, content=raw, headers=headers)
            assert r.status_code == 415, (path, headers, r.text)
            assert _error(r)["code"] == "unsupported_media_type"
            tried += 1
    assert tried == 10
    assert len(fake_openai.requests) == calls  # the provider key was not spent
    assert hostile_sqlite.services.completions.count() == 0  # type: ignore[attr-defined]
    assert httpx.get(url + "/v1/evals").json()["data"] == []
    # JSON content types (with parameters, +json) are served
    for ctype in ("application/json", "application/json; charset=utf-8", "application/x+json"):
        r = httpx.post(
            url + "/v1/chat/completions",
            content=orjson.dumps(CHAT),
            headers={"content-type": ctype},
        )
        assert r.status_code == 200, r.text


def test_browser_posts_from_another_origin_are_refused(
    hostile_sqlite: LiveServer,
    fake_openai: FakeOpenAI,
) -> None:
    url, port = hostile_sqlite.url, hostile_sqlite.port
    calls = len(fake_openai.requests)
    attacks = [
        {"origin": "http://evil.example"},
        {"origin": f"http://localhost:{port + 1}"},  # another port of loopback: same site
        {"origin": "null"},  # a sandboxed iframe
        {"sec-fetch-site": "cross-site"},
    ]
    for headers in attacks:
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert _error(r)["code"] == "cross_origin_request"
        r = httpx.post(url + "/v1/evals", json=EVAL, headers=headers)
        assert r.status_code == 403
        files = {"file": ("a.jsonl", b'{"a": 1}\n')}
        r = httpx.post(url + "/v1/files", data={"purpose": "evals"}, files=files, headers=headers)
        assert r.status_code == 403  # multipart needs no preflight either
    assert len(fake_openai.requests) == calls
    assert hostile_sqlite.services.completions.count() == 0  # type: ignore[attr-defined]
    # the server's own origin, and clients that send no Origin (SDKs, curl), are served
    r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"origin": url})
    assert r.status_code == 200
    r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"sec-fetch-site": "none"})
    assert r.status_code == 200
    # reads stay possible (a browser cannot read them without CORS headers, which are not sent)
    assert (
        httpx.get(url + "/v1/models", headers={"origin": "http://evil.example"}).status_code == 200
    )


def test_rebinding_hosts_are_refused(hostile_sqlite: LiveServer) -> None:
    """A rebinding page sends its own name as Host, and an Origin that matches it."""
    url, port = hostile_sqlite.url, hostile_sqlite.port
    evil = {"host": f"evil.example:{port}", "origin": f"http://evil.example:{port}"}
    for method, path in (
        ("GET", "/"),
        ("GET", "/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/chat/completions"),
        ("GET", "/health"),
        ("POST", "/logout"),
        ("POST", "/v1/chat/completions"),
    ):
        r = httpx.request(method, url + path, headers=evil, json=CHAT if "v1" in path else None)
        assert r.status_code == 400, (method, path, r.status_code)
        assert _error(r)["code"] == "invalid_host"
    assert hostile_sqlite.services.completions.count() == 0  # type: ignore[attr-defined]
    # the loopback names are trusted
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert httpx.get(url + "/", headers={"host": host}).status_code == 200
    r = httpx.post(
        url + "/logout", headers={"host": f"localhost:{port}", "origin": f"http://localhost:{port}"}
    )
    assert r.status_code == 303


def test_the_host_header_alone_is_not_trusted() -> None:
    """The dashboard's and the API's same-origin check: Origin and Host agree on a rebinding page,
    so the origin's name must be trusted too."""
    from distillery.security.origins import same_origin, trusted_hosts

    loopback = trusted_hosts(None, "127.0.0.1")
    assert set(loopback) >= {"localhost", "127.0.0.1", "::1"}
    assert not same_origin("http://evil.example:8000", "evil.example:8000", loopback)
    assert same_origin("http://127.0.0.1:8000", "127.0.0.1:8000", loopback)
    assert same_origin("http://[::1]:8000", "[::1]:8000", loopback)
    assert not same_origin("http://127.0.0.1:8001", "127.0.0.1:8000", loopback)
    assert not same_origin("null", "127.0.0.1:8000", loopback)
    assert trusted_hosts(None, "0.0.0.0") == ("*",)  # bound elsewhere: auth is required
    named = trusted_hosts(["distillery.internal", "*.corp.example"], "0.0.0.0")
    assert same_origin("https://a.corp.example", "a.corp.example", named)
    assert not same_origin("https://corp.example.evil", "corp.example.evil", named)


def test_trusted_hosts_setting(hostile_live: Callable[..., LiveServer]) -> None:
    server = hostile_live('[server]\ntrusted_hosts = ["distillery.internal"]\n')
    r = httpx.get(server.url + "/health", headers={"host": "distillery.internal"})
    assert r.status_code == 200
    r = httpx.get(server.url + "/health")  # 127.0.0.1 is no longer listed
    assert r.status_code == 400
