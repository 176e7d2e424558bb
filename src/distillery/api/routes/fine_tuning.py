"""``/v1/fine_tuning/jobs``: OpenAI's fine-tuning jobs API, with events and checkpoints.

distillery's own options (for local training: ``max_length``, ``lora_r``...) go in a
``distillery`` object of the create body (``extra_body={"distillery": {...}}`` with the SDK).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import list_response, metadata_filter, read_json

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])

_MAX_BODY = 1024 * 1024


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
        metadata=metadata_filter(request) or None,
    )
    return list_response(page.data, page.has_more)


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
    return list_response(page.data, page.has_more)


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
    return list_response(page.data, page.has_more)
