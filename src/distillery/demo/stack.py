"""Run the whole stack in-process for the demo: services + the HTTP API on a loopback port."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import httpx
import uvicorn

from distillery.app import create_app
from distillery.providers.local_config import LocalProviderConfig
from distillery.services import Services
from distillery.weights import usable_cores


class LocalStack:
    """``with LocalStack(services) as stack: stack.url`` — the gateway, API and job worker of a
    one-off command (the demo, ``distillery distill``). It runs no distillations of its own: one
    queued through the API, or left running by a command that was killed, is a server's to take
    up (``distillery serve``), not a concurrent second run in this process."""

    def __init__(self, services: Services, port: int = 0) -> None:
        self.services = services
        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
        self.port = port
        config = uvicorn.Config(
            create_app(services, run_distillations=False),
            host="127.0.0.1",
            port=port,
            log_level="error",
            lifespan="on",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="demo-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalStack:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo server did not start")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def generate_on_every_core(services: Services) -> None:
    """For a command that generates and trains one after the other, never at once (the demo,
    ``distillery distill``): local providers without ``threads`` configured generate on every
    core, not every core but one (the spare a server keeps for a concurrent training)."""
    for provider in services.config.providers.values():
        if isinstance(provider, LocalProviderConfig) and provider.threads is None:
            provider.threads = usable_cores()


def check_response(response: httpx.Response) -> None:
    """Raise the API's error message (``error.message``) of a failed call to the stack."""
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except Exception:
            message = response.text[:300]
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {message}")
