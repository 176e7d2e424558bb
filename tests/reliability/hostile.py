"""A live gateway facing a hostile upstream and hostile clients (the fake's ``hostile-*`` models,
small body limits), and raw-socket helpers for bodies that never finish."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

KEY = "sk-test-secret-value-123456"  # the fake provider's key (FAKE_OPENAI_KEY)
AZURE_KEY = "azure-secret-value-123456"  # shaped like no token: found only as a configured key
BODY_LIMIT = 1024 * 1024
FILE_LIMIT = 1024 * 1024
HOSTILE_MODELS = [
    "hostile-echo-401",
    "hostile-echo-html",
    "hostile-echo-200",
    "hostile-bad-usage",
    "hostile-tool-calls",
    "hostile-redirect-away",
    "hostile-redirect-same",
]
HOSTILE = """
[providers.hostile]
kind = "openai"
base_url = "{base_url}"
api_key_env = "FAKE_OPENAI_KEY"
models = {models}

[gateway]
max_body_bytes = {body_limit}

[files]
max_file_bytes = {file_limit}
"""


def start_hostile(home: Path, db_url: str, fake: FakeOpenAI, extra: str = "") -> LiveServer:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    config = HOSTILE.format(
        base_url=fake.base_url,
        models=str(HOSTILE_MODELS).replace("'", '"'),
        body_limit=BODY_LIMIT,
        file_limit=FILE_LIMIT,
    )
    path = write_config(home, fake, config + extra)
    services = build_services(Settings(home=home, database_url=db_url, config=path))
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    return server


@pytest.fixture
def hostile_live(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., LiveServer]]:
    """``hostile_live(extra="")``: a started gateway on ``db_url`` (both databases), with the
    hostile provider; ``extra`` is more distillery.toml (``[server] ...``)."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", KEY)
    monkeypatch.setenv("FAKE_AZURE_KEY", AZURE_KEY)
    servers: list[LiveServer] = []

    def start(extra: str = "") -> LiveServer:
        server = start_hostile(home, db_url, fake_openai, extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        server.services.store.close()  # type: ignore[attr-defined]


@pytest.fixture
def hostile_sqlite(
    home: Path, tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    """The hostile gateway on SQLite only (for checks the database plays no part in)."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", KEY)
    monkeypatch.setenv("FAKE_AZURE_KEY", AZURE_KEY)
    server = start_hostile(home, f"sqlite:///{tmp_path / 'hostile.db'}", fake_openai)
    yield server
    server.stop()
    server.services.store.close()  # type: ignore[attr-defined]


def unfinished_chunked_post(
    port: int,
    path: str,
    content_type: str,
    total: int,
    *,
    prefix: bytes = b"",
    block: bytes = b"x" * 64 * 1024,
    wait_s: float = 30.0,
) -> tuple[bytes, int]:
    """POST ``total`` bytes as a chunked body that never ends (no last chunk): ``prefix``, then
    ``block`` again and again; then wait for an answer: a server that reads the whole body first
    never answers. Returns the raw answer (``b""`` when there was none) and the bytes sent."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        piece = prefix or block
        sock.settimeout(wait_s)
        try:
            while sent < total:
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
                piece = block
        except OSError:  # the server closed the connection
            pass
        return read_answer(sock), sent


def read_answer(sock: socket.socket) -> bytes:
    """What the server sent until its answer's headers and body arrived, or it closed/timed out."""
    data = b""
    try:
        while True:
            got = sock.recv(65536)
            if not got:
                break
            data += got
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
    except (TimeoutError, OSError):
        pass
    return data


def status_of(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None
