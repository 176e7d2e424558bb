"""Sign-in for the dashboard when ``[server] auth = true``.

The admin key is typed once into a form; the server answers with a random session token in an
HttpOnly, SameSite=Strict cookie. Only the SHA-256 of that token is kept in memory (never the key,
never the token), with the SHA-256 the database holds for the key that opened it, and pages never
render either. A session ends when its key is revoked: at once when this process revoked it
(``KeysRepo.on_revoke``), else at its next check against the database (every
``SESSION_RECHECK_S`` seconds, as the API's key cache).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from distillery.security.keys import hash_key
from distillery.services import Services
from distillery.web.contexts import LoginPage
from distillery.web.render import (
    SESSION_COOKIE,
    LoginRequired,
    PageRoute,
    redirect,
    render,
    services_of,
)

SESSION_TTL_S = 12 * 3600
SESSION_RECHECK_S = 5.0
_MAX_SESSIONS = 10_000


@dataclass
class _Session:
    expiry: float  # monotonic seconds
    key_hash: str | None  # None: the bootstrap key (DISTILLERY_API_KEY), which cannot be revoked
    checked: float


class Sessions:
    """Signed-in browsers: token hash -> expiry and the key that opened the session."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def open(self, key_hash: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._sessions) >= _MAX_SESSIONS:
                self._sessions = {h: s for h, s in self._sessions.items() if s.expiry > now}
            self._sessions[hash_key(token)] = _Session(now + SESSION_TTL_S, key_hash, now)
        return token

    def valid(self, token: str | None, services: Services | None = None) -> bool:
        """Whether ``token`` is a live session; with ``services``, its key is re-checked in the
        database when the last check is older than ``SESSION_RECHECK_S``."""
        if not token:
            return False
        digest = hash_key(token)
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(digest)
        if session is None or session.expiry <= now:
            return False
        if (
            services is None
            or session.key_hash is None
            or now - session.checked < SESSION_RECHECK_S
        ):
            return True
        key = services.keys.active_hash(session.key_hash)
        with self._lock:
            if key is None or key.scope != "admin":
                self._sessions.pop(digest, None)
                return False
            session.checked = now
        return True

    def end_for_key(self, key_hash: str) -> None:
        """End every session that this key opened (it was revoked)."""
        with self._lock:
            self._sessions = {h: s for h, s in self._sessions.items() if s.key_hash != key_hash}

    def close(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(hash_key(token), None)


def sessions_of(request: Request) -> Sessions:
    state = request.app.state
    sessions: Sessions | None = getattr(state, "web_sessions", None)
    if sessions is None:
        with _STATE_LOCK:
            sessions = getattr(state, "web_sessions", None)
            if sessions is None:
                sessions = Sessions()
                services_of(request).keys.on_revoke(sessions.end_for_key)
                state.web_sessions = sessions
    return sessions


_STATE_LOCK = threading.Lock()


def admin_key_hash(services: Services, secret: str) -> str | Literal[False] | None:
    """The hash of ``secret`` when it is an active admin key, None for the bootstrap key, False
    when it is neither."""
    bootstrap = services.settings.api_key
    if bootstrap and hmac.compare_digest(hash_key(secret), hash_key(bootstrap)):
        return None
    key = services.keys.authenticate(secret)
    return hash_key(secret) if key is not None and key.scope == "admin" else False


def is_admin_key(services: Services, secret: str) -> bool:
    return admin_key_hash(services, secret) is not False


def require_login(request: Request) -> None:
    """Dependency of every page: with auth on, a valid session cookie is needed."""
    if not services_of(request).config.server.auth:
        return
    services = services_of(request)
    if not sessions_of(request).valid(request.cookies.get(SESSION_COOKIE), services):
        raise LoginRequired()


LOGIN = Depends(require_login)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    page = LoginPage(next=_safe_next(next), error=None)
    return render(request, "login.html", page, title="Sign in")


@router.post("/login")
def login(
    request: Request,
    key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    services = services_of(request)
    if not services.config.server.auth:
        return redirect(_safe_next(next))
    opened_by = admin_key_hash(services, key.strip()) if key else False
    if opened_by is False:
        page = LoginPage(next=_safe_next(next), error="That is not an admin key.")
        return render(request, "login.html", page, title="Sign in", status=401)
    token = sessions_of(request).open(opened_by)
    response = redirect(_safe_next(next))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    sessions_of(request).close(request.cookies.get(SESSION_COOKIE))
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
