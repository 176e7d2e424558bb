"""``/v1/distillery/distillations``: a prompt's captured traffic to a gated student, one call.

- ``POST /v1/distillery/distillations`` ``{"prompt", ...options}``: checks the prompt's data at
  once (404 ``prompt_not_found`` listing the prompts with traffic; 400 ``too_little_data`` saying
  how much more is needed) and queues the distillation; the server's runner runs it;
- ``GET /v1/distillery/distillations``: list, newest first (``after``, ``limit``, ``order``);
- ``GET .../{id}``: its status, step, progress, and when it succeeded its report;
- ``POST .../{id}/cancel``: stop it (what it made so far stays; 409 once it has ended).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import list_response as _list
from distillery.api.responses import read_object
from distillery.distill.service import DistillationsService

router = APIRouter(
    prefix="/v1/distillery/distillations", tags=["distillations"], dependencies=[ADMIN]
)

_BODY_LIMIT = 256 * 1024


@router.post("")
async def create_distillation(request: Request, services: ServicesDep) -> Response:
    """Distill a prompt: snapshot, baselines, fine-tune, evaluate, compare, gated shadow route."""
    body = await read_object(request, _BODY_LIMIT)
    return _json(await run_in_threadpool(DistillationsService(services).create, body))


@router.get("")
async def list_distillations(
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    """List distillations."""
    page = await run_in_threadpool(
        DistillationsService(services).list, after=after, limit=limit, order=order
    )
    return _list(page.data, page.has_more)


@router.get("/{distillation_id}")
async def retrieve_distillation(distillation_id: str, services: ServicesDep) -> Response:
    """A distillation: status, step, progress, report or error."""
    return _json(await run_in_threadpool(DistillationsService(services).get, distillation_id))


@router.post("/{distillation_id}/cancel")
async def cancel_distillation(distillation_id: str, services: ServicesDep) -> Response:
    """Cancel a distillation that has not ended."""
    return _json(await run_in_threadpool(DistillationsService(services).cancel, distillation_id))
