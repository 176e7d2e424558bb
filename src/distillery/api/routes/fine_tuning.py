"""``/v1/fine_tuning/jobs``: OpenAI's fine-tuning jobs API, with events and checkpoints.

distillery's own options (for local training: ``max_length``, ``lora_r``...) go in a
``distillery`` object of the create body (``extra_body={"distillery": {...}}`` with the SDK).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import read_json
from distillery.store.records import Page

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])

_MAX_BODY = 1024 * 1024


def _list(page: Page[dict[str, Any]]) -> Response:
    data = page.data
    return _json(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )


def _metadata_filter(request: Request) -> dict[str, str]:
    return {
        key[9:-1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }


@router.post("", dependencies=[ADMIN])
async def create_job(request: Request, services: ServicesDep) -> Response:
    body = await read_json(request, _MAX_BODY)
    return _json(await run_in_threadpool(services.fine_tuning.create, body))


@router.get("", dependencies=[ADMIN])
async def list_jobs(
    request: Request,
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    page = await run_in_threadpool(
        services.fine_tuning.list,
        after=after,
        limit=limit,
        order=order,
        metadata=_metadata_filter(request) or None,
    )
    return _list(page)


@router.get("/{job_id}", dependencies=[ADMIN])
async def retrieve_job(job_id: str, services: ServicesDep) -> Response:
    return _json(await run_in_threadpool(services.fine_tuning.retrieve, job_id))


@router.post("/{job_id}/cancel", dependencies=[ADMIN])
async def cancel_job(job_id: str, services: ServicesDep) -> Response:
    return _json(await run_in_threadpool(services.fine_tuning.cancel, job_id))


@router.get("/{job_id}/events", dependencies=[ADMIN])
async def list_events(
    job_id: str,
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    page = await run_in_threadpool(
        services.fine_tuning.events, job_id, after=after, limit=limit, order=order
    )
    return _list(page)


@router.get("/{job_id}/checkpoints", dependencies=[ADMIN])
async def list_checkpoints(
    job_id: str,
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=10, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    page = await run_in_threadpool(
        services.fine_tuning.checkpoints, job_id, after=after, limit=limit, order=order
    )
    return _list(page)
