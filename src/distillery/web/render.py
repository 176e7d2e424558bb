"""Rendering for the dashboard: the Jinja2 environment, the page layout, flash messages, and the
route class that turns errors on pages into a friendly HTML page (``/v1`` keeps its JSON envelope).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from distillery import __version__
from distillery.errors import DistilleryError
from distillery.security.origins import same_origin
from distillery.services import Services
from distillery.web.contexts import ErrorPage, Layout, NavItem

log = logging.getLogger("distillery.web")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
FLASH_COOKIE = "distillery_flash"
SESSION_COOKIE = "distillery_session"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

NAV = (
    ("overview", "Overview", "/"),
    ("completions", "Completions", "/completions"),
    ("annotations", "Annotations", "/annotations"),
    ("datasets", "Datasets", "/datasets"),
    ("evals", "Evals", "/evals"),
    ("jobs", "Fine-tuning", "/jobs"),
    ("routes", "Routes", "/routes"),
    ("models", "Models", "/models"),
    ("costs", "Costs", "/costs"),
)


class LoginRequired(Exception):
    """Raised by the login dependency; the page route class answers with a redirect."""


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# --- filters -------------------------------------------------------------------------------------


def fmt_time(value: int | float | None) -> str:
    if value is None:
        return "—"
    return dt.datetime.fromtimestamp(float(value), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_usd(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "$0"
    if abs(value) < 0.01:
        return f"${value:.6f}"
    return f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"


def fmt_number(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def fmt_percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def fmt_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False, default=str)


def svg(markup: str) -> Markup:
    """Mark an SVG string from ``distillery.charts`` (which escapes its labels) as safe."""
    return Markup(markup)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        time=fmt_time,
        usd=fmt_usd,
        number=fmt_number,
        percent=fmt_percent,
        json=fmt_json,
        svg=svg,
        urlquote=lambda s: quote(str(s), safe=""),
    )
    env.globals["version"] = __version__
    return env


# --- responses -----------------------------------------------------------------------------------


def _layout(request: Request, title: str, nav: str, refresh: int | None) -> Layout:
    services = services_of(request)
    return Layout(
        title=title,
        nav=[NavItem(key=k, label=label, href=href, active=k == nav) for k, label, href in NAV],
        auth=services.config.server.auth and SESSION_COOKIE in request.cookies,
        flash=unquote(request.cookies.get(FLASH_COOKIE) or "") or None,
        path=request.url.path,
        refresh=refresh,
    )


def render(
    request: Request,
    template: str,
    page: object,
    *,
    title: str,
    nav: str = "",
    status: int = 200,
    refresh: int | None = None,
) -> HTMLResponse:
    """Render ``template`` with ``layout`` (common to every page) and ``page`` (its context).

    ``refresh`` reloads the page every so many seconds (a run or job in progress), without
    JavaScript."""
    layout = _layout(request, title, nav, refresh)
    html = environment().get_template(template).render(layout=layout, page=page)
    response = HTMLResponse(html, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(SECURITY_HEADERS)
    if layout.flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def redirect(url: str, *, flash: str | None = None) -> RedirectResponse:
    """303 to ``url`` (a local path only), with an optional one-time message."""
    if not url.startswith("/") or url.startswith("//"):
        url = "/"
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(
            FLASH_COOKIE,
            quote(flash[:300], safe=""),
            path="/",
            httponly=True,
            samesite="strict",
            max_age=60,
        )
    return response


def url_with(path: str, params: Mapping[str, object | None] | list[tuple[str, str]]) -> str:
    """``path`` with the non-empty query parameters."""
    items = params if isinstance(params, list) else list(params.items())
    pairs = [(k, str(v)) for k, v in items if v not in (None, "")]
    return f"{path}?{urlencode(pairs)}" if pairs else path


def error_page(request: Request, status: int, message: str, title: str | None = None) -> Response:
    titles = {
        400: "Bad request",
        401: "Sign-in required",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        409: "Conflict",
        422: "Invalid request",
        500: "Server error",
    }
    page = ErrorPage(status=status, title=title or titles.get(status, "Error"), message=message)
    try:
        return render(request, "error.html", page, title=page.title, status=status)
    except Exception:  # the error page itself must never fail
        log.exception("error page failed")
        return HTMLResponse(f"<h1>{status}</h1>", status_code=status)


def _cross_site(request: Request) -> bool:
    """A state-changing request from another site (CSRF): refuse it. The ``Host`` header alone
    is not trusted: a DNS-rebinding page's origin matches the Host it sends, so the origin's name
    must also be a trusted host (``security.origins``)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    trusted: tuple[str, ...] = getattr(request.app.state, "trusted_hosts", ("*",))
    return not same_origin(origin, request.headers.get("host"), trusted)


def _error_response(request: Request, exc: Exception) -> Response:
    """The page answering an exception raised by a page handler."""
    if isinstance(exc, LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect(url_with("/login", {"next": target}))
    if isinstance(exc, DistilleryError):
        return error_page(request, exc.status, exc.message)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
        return error_page(request, 400, f"Invalid value for '{loc}': {first.get('msg')}")
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        return error_page(request, exc.status_code, detail)
    log.error("page %s failed", request.url.path, exc_info=exc)
    return error_page(request, 500, "The server had an error rendering this page.")


class PageRoute(APIRoute):
    """Route class for dashboard pages: errors become HTML pages, sign-in a redirect."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            if request.method == "POST" and _cross_site(request):
                return error_page(request, 403, "Cross-site form submissions are refused.")
            try:
                return await handler(request)
            except Exception as exc:
                return _error_response(request, exc)

        return page_handler
