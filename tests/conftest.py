"""Shared fixtures: data folders, both databases, the fake OpenAI server, a live gateway."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer
from tests.support.pgserver import PostgresServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Converting the embedded GGUF takes ~20 s: share one converted copy across the test session.
MODEL_CACHE_HOME = Path(os.environ.get("DISTILLERY_TEST_MODEL_HOME", "/tmp/distillery-test-home"))


@pytest.fixture(scope="session")
def model_home() -> Path:
    MODEL_CACHE_HOME.mkdir(parents=True, exist_ok=True)
    return MODEL_CACHE_HOME


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_home: Path) -> Path:
    """A fresh DISTILLERY_HOME whose models/ points at the shared converted models."""
    h = tmp_path / "home"
    h.mkdir()
    (model_home / "models").mkdir(exist_ok=True)
    (h / "models").symlink_to(model_home / "models", target_is_directory=True)
    monkeypatch.setenv("DISTILLERY_HOME", str(h))
    monkeypatch.delenv("DISTILLERY_DATABASE_URL", raising=False)
    monkeypatch.delenv("DISTILLERY_CONFIG", raising=False)
    return h


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'distillery.db'}"
    pg: PostgresServer = request.getfixturevalue("postgres")
    return pg.create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _no_external_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk only to loopback: any other address fails loudly."""
    import socket

    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        if isinstance(address, tuple) and address:
            host = str(address[0])
            if not (host.startswith("127.") or host in ("localhost", "::1")):
                raise RuntimeError(f"test tried to reach a non-loopback host: {host}")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def gateway(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    """A live distillery on loopback, on SQLite and on PostgreSQL, with the fake provider."""
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    monkeypatch.setenv("FAKE_AZURE_KEY", "azure-secret-value-123456")
    config = write_config(home, fake_openai)
    settings = Settings(home=home, database_url=db_url, config=config)
    services = build_services(settings)
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    yield server
    server.stop()
    services.store.close()


@pytest.fixture
def client(gateway: LiveServer):  # type: ignore[no-untyped-def]
    import openai

    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
