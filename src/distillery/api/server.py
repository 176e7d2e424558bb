"""How ``distillery serve`` runs uvicorn: its HTTP protocol, with a deadline on request headers.

uvicorn has no header timeout: ``timeout_keep_alive`` (5 s) closes an idle connection only
between requests and is cancelled by the first byte of the next one, so a client that connects
and then sends its headers a byte at a time (or never) holds its socket forever.
``h11_max_incomplete_event_size`` bounds the header bytes of the h11 protocol only; httptools
(the protocol ``serve`` runs) refuses headers over 80 KiB itself. This protocol closes a
connection whose request headers are not complete ``header_timeout_s`` seconds after the
connection was made or the request began.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from distillery.settings import ServerConfig


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_options(server: ServerConfig) -> dict[str, Any]:
    """The protocol options of ``uvicorn.run``/``uvicorn.Config`` for ``server``."""
    protocol = type(
        "HeaderDeadlineProtocol",
        (HeaderDeadlineProtocol,),
        {"header_timeout_s": server.header_timeout_s},
    )
    return {"http": protocol, "timeout_keep_alive": 5}
