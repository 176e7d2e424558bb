"""Secrets (issue 14, item 8): an upstream that echoes the provider key, the log filter once
``serve`` has configured logging, and revoked keys (API and dashboard sessions)."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import httpx
import openai
import pytest
import sqlalchemy as sa

from tests.support.live import LiveServer

from .hostile import AZURE_KEY, KEY

ECHOES = ["hostile-echo-401", "hostile-echo-html", "hostile-echo-200"]


def _stored_text(server: LiveServer) -> str:
    """Every stored completion's columns, as the database holds them."""
    with server.services.store.read() as session:  # type: ignore[attr-defined]
        rows = session.execute(sa.text("SELECT * FROM completions")).all()
    return "\n".join(repr(tuple(row)) for row in rows)


def test_an_upstream_echoing_the_key_is_scrubbed(hostile_live: Callable[..., LiveServer]) -> None:
    server = hostile_live()
    answers: list[str] = []
    statuses = []
    for model in ECHOES:
        for stream in (False, True):
            body = {
                "model": model,
                "store": True,
                "stream": stream,
                "messages": [{"role": "user", "content": "k"}],
            }
            with httpx.stream(
                "POST", server.url + "/v1/chat/completions", json=body, timeout=20
            ) as r:
                statuses.append(r.status_code)
                answers.append(r.read().decode())
    assert statuses == [401, 401, 502, 502, 200, 200]
    assert all(KEY not in a for a in answers)
    assert "Incorrect API key provided: ***" in answers[0]
    assert "your key is ***" in answers[4] and "your key is ***" in answers[5]
    assert server.services.completions.count() == 6  # type: ignore[attr-defined]
    stored = _stored_text(server)
    assert "***" in stored and KEY not in stored
    listed = httpx.get(server.url + "/completions")
    assert listed.status_code == 200 and KEY not in listed.text
    for c in server.services.completions.list(limit=10).data:  # type: ignore[attr-defined]
        page = httpx.get(server.url + f"/completions/{c.id}")
        assert page.status_code == 200 and KEY not in page.text


def test_logs_are_redacted_once_uvicorn_has_configured_logging(hostile_sqlite: LiveServer) -> None:
    """uvicorn sets up its own handlers after the services are built: the filter must be on
    them too (it was on none), and mask exception arguments and the configured keys."""
    from distillery.security.redact import RedactingFilter

    handlers = list(logging.getLogger().handlers)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        handlers += logging.getLogger(name).handlers
    assert handlers
    assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in handlers)
    log = logging.getLogger("uvicorn.error")
    printed_to = io.StringIO()  # uvicorn's own handler, printing here instead of stderr
    uvicorn_handlers = logging.getLogger("uvicorn").handlers  # "uvicorn.error" propagates there
    (handler,) = [h for h in uvicorn_handlers if type(h) is logging.StreamHandler]
    stderr = handler.setStream(printed_to)
    log.error("upstream said %s", ValueError(f"Incorrect API key provided: {KEY}"))
    log.error("azure key %s in %r", AZURE_KEY, {"key": AZURE_KEY})
    try:
        raise RuntimeError(f"failed with Authorization: Bearer {KEY} and {AZURE_KEY}")
    except RuntimeError:
        log.exception("a request failed")
    handler.setStream(stderr)  # type: ignore[arg-type]
    printed = printed_to.getvalue()
    assert "upstream said" in printed and "a request failed" in printed
    assert "RuntimeError" in printed  # the traceback is printed, masked
    assert KEY not in printed and AZURE_KEY not in printed
    assert printed.count("***") >= 5


def test_a_revoked_key_stops_at_once(hostile_live: Callable[..., LiveServer]) -> None:
    server = hostile_live("[server]\nauth = true\n")
    keys = server.services.keys  # type: ignore[attr-defined]
    for scope in ("admin", "ingest"):
        record, secret = keys.create(scope=scope)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)
        client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "a"}])
        keys.revoke(record.id)
        with pytest.raises(openai.AuthenticationError):  # not 5 s later: the cache forgot it
            client.chat.completions.create(
                model="echo-1", messages=[{"role": "user", "content": "b"}]
            )


def test_dashboard_sessions_end_when_their_key_is_revoked(
    hostile_live: Callable[..., LiveServer],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = hostile_live("[server]\nauth = true\n")
    keys = server.services.keys  # type: ignore[attr-defined]

    def signed_in(secret: str) -> httpx.Client:
        browser = httpx.Client(base_url=server.url)
        r = browser.post("/login", data={"key": secret, "next": "/"})
        assert r.status_code == 303 and "distillery_session" in r.cookies
        assert browser.get("/completions").status_code == 200
        return browser

    # revoked by this process: the session ends at once
    record, secret = keys.create(scope="admin")
    other, other_secret = keys.create(scope="admin")
    browser, bystander = signed_in(secret), signed_in(other_secret)
    keys.revoke(record.id)
    r = browser.get("/completions")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert bystander.get("/completions").status_code == 200  # another key's session lives on
    # revoked by another node (another process on the same database): at the next check
    import distillery.web.auth as web_auth
    from distillery.store import Store
    from distillery.store.keys import KeysRepo

    monkeypatch.setattr(web_auth, "SESSION_RECHECK_S", 0.0)
    elsewhere = Store.open(db_url)
    try:
        KeysRepo(elsewhere).revoke(other.id)
    finally:
        elsewhere.close()
    r = bystander.get("/completions")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
