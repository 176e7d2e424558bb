"""``/v1/evals``: OpenAI's Evals API (evals, runs, output items), answered by distillery.

Runs start in the background of the server and are polled with ``GET .../runs/{run_id}``;
``POST .../runs/{run_id}`` cancels, as in OpenAI's API reference (the SDK posts to
``.../runs/{run_id}/cancel``, served too).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import read_json

router = APIRouter(prefix="/v1/evals", tags=["evals"], dependencies=[ADMIN])

_BODY_LIMIT = 64 * 1024 * 1024  # file_content runs carry their rows inline
Limit = Query(default=20, ge=1, le=100)


@router.post("")
async def create_eval(request: Request, services: ServicesDep) -> Response:
    return _json(services.evals.create_eval(await read_json(request, _BODY_LIMIT)))


@router.get("")
async def list_evals(
    services: ServicesDep,
    after: str | None = None,
    limit: int = Limit,
    order: Literal["asc", "desc"] = "asc",
    order_by: Literal["created_at", "updated_at"] = "created_at",
) -> Response:
    return _json(
        services.evals.list_evals(after=after, limit=limit, order=order, order_by=order_by)
    )


@router.get("/{eval_id}")
async def retrieve_eval(eval_id: str, services: ServicesDep) -> Response:
    return _json(services.evals.get_eval(eval_id))


@router.post("/{eval_id}")
async def update_eval(eval_id: str, request: Request, services: ServicesDep) -> Response:
    return _json(services.evals.update_eval(eval_id, await read_json(request, 1024 * 1024)))


@router.delete("/{eval_id}")
async def delete_eval(eval_id: str, services: ServicesDep) -> Response:
    return _json(services.evals.delete_eval(eval_id))


@router.post("/{eval_id}/runs")
async def create_run(eval_id: str, request: Request, services: ServicesDep) -> Response:
    body = await read_json(request, _BODY_LIMIT)
    return _json(services.evals.create_run(eval_id, body, background=True))


@router.get("/{eval_id}/runs")
async def list_runs(
    eval_id: str,
    services: ServicesDep,
    after: str | None = None,
    limit: int = Limit,
    order: Literal["asc", "desc"] = "asc",
    status: Literal["queued", "in_progress", "completed", "canceled", "failed"] | None = None,
) -> Response:
    return _json(
        services.evals.list_runs(eval_id, after=after, limit=limit, order=order, status=status)
    )


@router.get("/{eval_id}/runs/{run_id}")
async def retrieve_run(eval_id: str, run_id: str, services: ServicesDep) -> Response:
    return _json(services.evals.get_run(run_id, eval_id=eval_id))


@router.post("/{eval_id}/runs/{run_id}")
@router.post("/{eval_id}/runs/{run_id}/cancel")
async def cancel_run(eval_id: str, run_id: str, services: ServicesDep) -> Response:
    return _json(services.evals.cancel_run(run_id, eval_id=eval_id))


@router.delete("/{eval_id}/runs/{run_id}")
async def delete_run(eval_id: str, run_id: str, services: ServicesDep) -> Response:
    return _json(services.evals.delete_run(run_id, eval_id=eval_id))


@router.get("/{eval_id}/runs/{run_id}/output_items")
async def list_output_items(
    eval_id: str,
    run_id: str,
    services: ServicesDep,
    after: str | None = None,
    limit: int = Limit,
    order: Literal["asc", "desc"] = "asc",
    status: Literal["pass", "fail", "error"] | None = None,
) -> Response:
    return _json(
        services.evals.list_output_items(
            run_id, eval_id=eval_id, after=after, limit=limit, order=order, status=status
        )
    )


@router.get("/{eval_id}/runs/{run_id}/output_items/{output_item_id}")
async def retrieve_output_item(
    eval_id: str, run_id: str, output_item_id: str, services: ServicesDep
) -> Response:
    return _json(services.evals.get_output_item(run_id, output_item_id, eval_id=eval_id))
