"""``/v1/distillery/routes``: move a prompt's traffic to its student, behind the parity gate.

- ``POST /v1/distillery/routes``: create (``name``, ``match``, ``student``, ``mode``, ``percent``,
  ``sticky_key``, ``graders``, ``gate``, ``rollback``, ``shadow``, ``cache``, ``force``);
- ``GET /v1/distillery/routes``: list (``after``, ``limit``, ``order``);
- ``GET/POST/DELETE /v1/distillery/routes/{id}``: read, change (any field but ``name``), delete;
- ``POST .../{id}/promote`` ``{"mode"?, "percent"?, "force"?}`` (a ``PromoteTarget``: canary by
  default) and ``POST .../{id}/rollback`` ``{"mode"?, "reason"?}`` (a ``RollbackTarget``: shadow
  by default), the modes of ``distillery.wire.route_modes``;
- ``GET .../{id}/gate``: what the parity gate decides now (changes nothing);
- ``GET .../{id}/events``: every change, gate decision and rollback, newest first;
- ``GET .../{id}/stats``: requests by serving model, fallbacks, online pass rates with
  intervals, cost per 1,000 requests and realised savings;
- ``GET .../{id}/timeline``: the same per phase (each stretch in one mode), and the requests in
  order with the events a chart marks.

A gate refusal is a 409 whose ``error.gate`` holds the numbers.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import list_response as _list
from distillery.api.responses import read_object
from distillery.errors import InvalidRequestError
from distillery.security.keys import display_prefix
from distillery.wire.route_modes import RouteMode

router = APIRouter(prefix="/v1/distillery/routes", tags=["routes"], dependencies=[ADMIN])

_BODY_LIMIT = 1024 * 1024


def _actor(request: Request) -> str:
    """Who made a change, for the route's events: the API key's public prefix."""
    header = request.headers.get("authorization") or ""
    secret = header[7:].strip() if header[:7].lower() == "bearer " else ""
    return f"api:{display_prefix(secret)}" if secret else "api"


@router.post("")
async def create_route(request: Request, services: ServicesDep) -> Response:
    """Create a route (a mode that lets the student answer users must pass the gate)."""
    body = await read_object(request, _BODY_LIMIT)
    actor = _actor(request)
    return _json(await run_in_threadpool(services.routes.create, body, actor=actor))


@router.get("")
async def list_routes(
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "asc",
) -> Response:
    """List routes."""
    data, has_more = await run_in_threadpool(
        services.routes.page, after=after, limit=limit, order=order
    )
    return _list(data, has_more)


@router.get("/{route_id}")
async def retrieve_route(route_id: str, services: ServicesDep) -> Response:
    """Retrieve a route."""
    return _json(await run_in_threadpool(services.routes.get, route_id))


@router.post("/{route_id}")
async def update_route(route_id: str, request: Request, services: ServicesDep) -> Response:
    """Change a route (entering canary/full, or a new student there, passes the gate)."""
    body = await read_object(request, _BODY_LIMIT)
    actor = _actor(request)
    return _json(await run_in_threadpool(services.routes.update, route_id, body, actor=actor))


@router.delete("/{route_id}")
async def delete_route(route_id: str, services: ServicesDep) -> Response:
    """Delete a route: its traffic goes back to the teacher."""
    return _json(await run_in_threadpool(services.routes.delete, route_id))


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"'{key}' must be a number.", param=key)
    return float(value)


@router.post("/{route_id}/promote")
async def promote_route(route_id: str, request: Request, services: ServicesDep) -> Response:
    """Move a route to canary (with ``percent``) or full, through the parity gate."""
    body = await read_object(request, _BODY_LIMIT)
    mode = body.get("mode", RouteMode.CANARY)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRequestError("'force' must be a boolean.", param="force")
    percent = _number(body, "percent")
    actor = _actor(request)
    return _json(
        await run_in_threadpool(
            services.routes.promote,
            route_id,
            mode=str(mode),
            percent=percent,
            force=force,
            actor=actor,
        )
    )


@router.post("/{route_id}/rollback")
async def rollback_route(route_id: str, request: Request, services: ServicesDep) -> Response:
    """Move a route back to shadow (default) or off."""
    body = await read_object(request, _BODY_LIMIT)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidRequestError("'reason' must be a string.", param="reason")
    actor = _actor(request)
    return _json(
        await run_in_threadpool(
            services.routes.rollback,
            route_id,
            mode=str(body.get("mode", RouteMode.SHADOW)),
            reason=reason,
            actor=actor,
        )
    )


@router.get("/{route_id}/gate")
async def route_gate(route_id: str, services: ServicesDep) -> Response:
    """What the parity gate decides for this route now (nothing changes)."""
    return _json(await run_in_threadpool(services.routes.gate, route_id))


@router.get("/{route_id}/events")
async def route_events(
    route_id: str,
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
) -> Response:
    """The route's events, newest first."""
    data, has_more = await run_in_threadpool(
        services.routes.events, route_id, after=after, limit=limit
    )
    return _list(data, has_more)


@router.get("/{route_id}/timeline")
async def route_timeline(
    route_id: str,
    services: ServicesDep,
    limit: int = Query(default=5000, ge=1, le=50_000),
) -> Response:
    """The route's phases (who answered in each mode, fallbacks, online pass rates with
    intervals, realised cost and savings) and its newest ``limit`` requests, for a timeline."""
    return _json(await run_in_threadpool(services.routes.timeline, route_id, limit=limit))


@router.get("/{route_id}/stats")
async def route_stats(route_id: str, services: ServicesDep) -> Response:
    """Live numbers of a route from its real traffic."""
    return _json(await run_in_threadpool(services.routes.stats, route_id))
