"""Live gateways for the fault-injection tests: the fake upstream, auth on or off."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

from .hostile import hostile_live, hostile_sqlite  # noqa: F401  (fixtures of the hostile tests)

# the fake's hard-to-store answers (FakeOpenAI.poison), served by a provider of their own
POISON = """
[providers.poison]
kind = "openai"
base_url = "{base_url}"
api_key_env = "FAKE_OPENAI_KEY"
models = ["poison-deep", "poison-huge"]
"""


def start_gateway(home: Path, db_url: str, fake: FakeOpenAI, *, auth: bool = False) -> LiveServer:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    extra = POISON.format(base_url=fake.base_url) + ("[server]\nauth = true\n" if auth else "")
    settings = Settings(home=home, database_url=db_url, config=write_config(home, fake, extra))
    services = build_services(settings)
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    return server


@pytest.fixture
def live(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., LiveServer]]:
    """``live(auth=False)``: a started gateway on ``db_url`` (stopped at the end)."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    servers: list[LiveServer] = []

    def start(*, auth: bool = False) -> LiveServer:
        server = start_gateway(home, db_url, fake_openai, auth=auth)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        server.services.store.close()  # type: ignore[attr-defined]


def read_stream(lines: Iterator[str]) -> tuple[str | None, bool]:
    """The id a client sees in a streamed completion, and whether ``[DONE]`` arrived."""
    seen: str | None = None
    for line in lines:
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            return seen, True
        event: Any = orjson.loads(line[6:])
        seen = seen or event.get("id")
    return seen, False
