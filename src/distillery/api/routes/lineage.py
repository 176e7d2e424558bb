"""Lineage: ``/v1/distillery/models/{id}/lineage`` (an ``ft:`` model back to its data) and
``/v1/distillery/completions/{id}/datasets`` (the dataset versions holding a stored completion)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json

router = APIRouter(prefix="/v1/distillery", tags=["lineage"])


@router.get("/models/{model_id:path}/lineage", dependencies=[ADMIN])
async def model_lineage(model_id: str, services: ServicesDep) -> Response:
    """A fine-tuned model's job, files, dataset versions, teachers, prompts, corrections and terms."""
    return _json(await run_in_threadpool(services.lineage.model_lineage, model_id))


@router.get("/completions/{completion_id}/datasets", dependencies=[ADMIN])
async def completion_datasets(completion_id: str, services: ServicesDep) -> Response:
    """The dataset versions that hold a copy of a stored completion (also once it is deleted)."""
    return _json(await run_in_threadpool(services.lineage.completion_datasets, completion_id))
