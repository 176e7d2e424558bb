"""Limits hold while reading (issue 14, items 5 and 9): bodies and uploads are cut off at their
limit as they stream in, long file names are truncated, headers that never finish time out.

Every body here is chunked and never finished (no last chunk): a server that reads a body whole
before checking its size never answers them at all.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn

from tests.support.live import LiveServer

from .hostile import BODY_LIMIT, FILE_LIMIT, read_answer, status_of, unfinished_chunked_post

SENT = 8 * 1024 * 1024  # 8 times the test limits; the figures: 200 MB and 100 MB


def _json_error(answer: bytes) -> dict[str, object]:
    body = answer.partition(b"\r\n\r\n")[2]
    error: dict[str, object] = orjson.loads(body)["error"]
    return error


def test_chunked_json_bodies_are_cut_off_at_the_limit(hostile_sqlite: LiveServer) -> None:
    # the gateway's limit is [gateway] max_body_bytes (1 MiB here); the others' are 1 MiB too
    for path in (
        "/v1/chat/completions",
        "/v1/chat/completions/chatcmpl-any",
        "/v1/fine_tuning/jobs",
        "/v1/evals/eval_any",
    ):
        answer, sent = unfinished_chunked_post(hostile_sqlite.port, path, "application/json", SENT)
        assert status_of(answer) == 413, (path, answer[:200])
        assert sent == SENT
        error = _json_error(answer)
        assert error["code"] == "payload_too_large" and str(BODY_LIMIT) in str(error["message"])
    # the dashboard's forms: cut off at 8 MiB (api.guard.FORM_BODY_LIMIT), however many fields
    # of up to 1 MiB each (Starlette's own limit per field) they hold
    field = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n' + b"v" * 60_000 + b"\r\n"
    answer, _ = unfinished_chunked_post(
        hostile_sqlite.port, "/login", "multipart/form-data; boundary=b", 9 * 2**20, block=field
    )
    assert status_of(answer) == 413, answer[:300]
    assert httpx.get(hostile_sqlite.url + "/health").status_code == 200
    # a body at the limit is read
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "y" * (BODY_LIMIT - 100)}]}
    assert httpx.post(hostile_sqlite.url + "/v1/chat/completions", json=body).status_code == 200


def test_chunked_uploads_are_cut_off_at_the_limit(hostile_sqlite: LiveServer, home: Path) -> None:
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    answer, sent = unfinished_chunked_post(
        hostile_sqlite.port,
        "/v1/files",
        f"multipart/form-data; boundary={boundary}",
        SENT,
        prefix=head,
    )
    assert status_of(answer) == 413, answer[:300]
    assert sent >= SENT
    error = _json_error(answer)
    assert error["code"] == "file_too_large" and str(FILE_LIMIT) in str(error["message"])
    files = home / "files"
    assert not files.exists() or not any(files.iterdir())
    assert httpx.get(hostile_sqlite.url + "/v1/files").json()["data"] == []


def test_an_overlong_file_name_is_truncated(hostile_sqlite: LiveServer) -> None:
    line = b'{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}\n'
    for length in (300, 5_000, 40_000):
        name = "y" * length + ".jsonl"
        r = httpx.post(
            hostile_sqlite.url + "/v1/files",
            data={"purpose": "fine-tune"},
            files={"file": (name, line)},
        )
        assert r.status_code == 200, (length, r.text[:200])
        stored = r.json()["filename"]
        assert len(stored) == 255 and stored.endswith(".jsonl")


@pytest.fixture
def deadline_server(hostile_sqlite: LiveServer) -> Iterator[int]:
    """The hostile app served as ``distillery serve`` serves it (``api.server.uvicorn_options``)
    with a 1 s header deadline; yields its port."""
    from distillery.api.server import uvicorn_options
    from distillery.settings import ServerConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = hostile_sqlite.server.config.app
    options = uvicorn_options(ServerConfig(header_timeout_s=1.0))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def test_headers_that_never_finish_are_timed_out(deadline_server: int) -> None:
    port = deadline_server
    slow = [
        b"",  # connects and sends nothing
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",  # headers never end
    ]
    for start in slow:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(start)
            sock.settimeout(30)  # far beyond the 1 s deadline: a hang fails the test
            assert read_answer(sock) == b""  # closed without an answer
    # a slowloris that sends a byte now and then within the keep-alive timeout is cut too
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        closed = False
        for _ in range(60):
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            time.sleep(0.25)
        assert closed
    # a request whose headers arrive is answered, and the connection is reused
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(30)
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert status_of(read_answer(sock)) == 200
