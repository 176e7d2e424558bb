"""``/v1/distillery/annotation_queues``: review queues, claims and corrections."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import list_response as _list
from distillery.api.responses import read_object
from distillery.errors import InvalidRequestError, NotFoundError

router = APIRouter(prefix="/v1/distillery/annotation_queues", tags=["annotations"])

_BODY_LIMIT = 8 * 1024 * 1024
_STATUSES = ("pending", "claimed", "accepted", "skipped")


@router.post("", dependencies=[ADMIN])
async def create_queue(request: Request, services: ServicesDep) -> Response:
    body = await read_object(request, _BODY_LIMIT)
    svc = services.annotations
    queue = await run_in_threadpool(svc.create_queue, body)
    return _json(svc.queue_view(queue))


@router.get("", dependencies=[ADMIN])
async def list_queues(
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    svc = services.annotations
    page = svc.list_queues(after=after, limit=limit, order=order)
    return _list([svc.queue_view(q) for q in page.data], page.has_more)


@router.get("/{queue_id}", dependencies=[ADMIN])
async def retrieve_queue(queue_id: str, services: ServicesDep) -> Response:
    svc = services.annotations
    return _json(svc.queue_view(svc.get_queue(queue_id)))


@router.get("/{queue_id}/items", dependencies=[ADMIN])
async def list_items(
    queue_id: str,
    services: ServicesDep,
    status: str | None = None,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
) -> Response:
    if status is not None and status not in _STATUSES:
        raise InvalidRequestError(
            f"Invalid status {status!r}: use {', '.join(_STATUSES)}.", param="status"
        )
    svc = services.annotations
    queue = svc.get_queue(queue_id)
    page = svc.list_items(queue_id, status=status, after=after, limit=limit)
    return _list([svc.item_view(i, queue) for i in page.data], page.has_more)


@router.post("/{queue_id}/claim", dependencies=[ADMIN])
async def claim_item(queue_id: str, request: Request, services: ServicesDep) -> Response:
    """Claim the next item for ``reviewer``; 404 ``queue_empty`` when nothing is left."""
    body = await read_object(request, _BODY_LIMIT)
    reviewer = body.get("reviewer")
    if not isinstance(reviewer, str):
        raise InvalidRequestError("Missing required parameter: 'reviewer'.", param="reviewer")
    svc = services.annotations
    item = await run_in_threadpool(svc.claim, queue_id, reviewer)
    if item is None:
        raise NotFoundError(
            f"Annotation queue {queue_id} has no item left to review.", code="queue_empty"
        )
    return _json(svc.item_view(item))


@router.get("/{queue_id}/items/{item_id}", dependencies=[ADMIN])
async def retrieve_item(queue_id: str, item_id: str, services: ServicesDep) -> Response:
    svc = services.annotations
    return _json(svc.item_view(svc.get_item(queue_id, item_id)))


@router.post("/{queue_id}/items/{item_id}", dependencies=[ADMIN])
async def update_item(
    queue_id: str, item_id: str, request: Request, services: ServicesDep
) -> Response:
    """Correct, rate, tag, comment, accept, skip or release; ``version`` is required (409 if stale)."""
    body = await read_object(request, _BODY_LIMIT)
    svc = services.annotations
    item = await run_in_threadpool(svc.submit, queue_id, item_id, body)
    return _json(svc.item_view(item))
