"""Sign-in for the dashboard when ``[server] auth = true``.

The admin key is typed once into a form; the server answers with a random session token in an
HttpOnly, SameSite=Strict cookie. Only the SHA-256 of that token is kept in memory (never the key,
never the token), and pages never render either.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from typing import Annotated

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
_MAX_SESSIONS = 10_000


class Sessions:
    """Signed-in browsers: token hash -> expiry (monotonic seconds)."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def open(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._expiry) >= _MAX_SESSIONS:
                self._expiry = {h: t for h, t in self._expiry.items() if t > now}
            self._expiry[hash_key(token)] = now + SESSION_TTL_S
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._expiry.get(hash_key(token))
        return expiry is not None and expiry > time.monotonic()

    def close(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._expiry.pop(hash_key(token), None)


def sessions_of(request: Request) -> Sessions:
    state = request.app.state
    sessions: Sessions | None = getattr(state, "web_sessions", None)
    if sessions is None:
        sessions = state.web_sessions = Sessions()
    return sessions


def is_admin_key(services: Services, secret: str) -> bool:
    bootstrap = services.settings.api_key
    if bootstrap and hmac.compare_digest(hash_key(secret), hash_key(bootstrap)):
        return True
    key = services.keys.authenticate(secret)
    return key is not None and key.scope == "admin"


def require_login(request: Request) -> None:
    """Dependency of every page: with auth on, a valid session cookie is needed."""
    if not services_of(request).config.server.auth:
        return
    if not sessions_of(request).valid(request.cookies.get(SESSION_COOKIE)):
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
    if not key or not is_admin_key(services, key.strip()):
        page = LoginPage(next=_safe_next(next), error="That is not an admin key.")
        return render(request, "login.html", page, title="Sign in", status=401)
    token = sessions_of(request).open()
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
