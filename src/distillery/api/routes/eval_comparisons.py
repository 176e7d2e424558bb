"""``/v1/distillery/eval_comparisons``: eval runs side by side, and teacher self-consistency.

- ``GET /v1/distillery/eval_comparisons?run_ids=a,b,c&baseline=a`` (``run_ids`` comma-separated
  or repeated; ``baseline`` defaults to the first run; optional ``resamples`` (1000), ``seed``
  (0), ``confidence`` (0.95)) answers a ``distillery.eval_comparison``: per criterion and overall,
  each run's pass rate and mean score, its percentage of the baseline with bootstrap confidence
  intervals, the items that flipped against the baseline, agreement, and self-consistency for
  runs that repeat another. A GET because it only reads; the URL can be linked and cached.
- ``POST /v1/distillery/eval_comparisons/self_consistency`` ``{"run_id", "model"?}`` starts a
  second run of the teacher on the same items (an ``eval.run`` with
  ``metadata.distillery_repeat_of``); once it completes, compare both runs to read the teacher's
  agreement with itself, the realistic ceiling for a student.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import read_json
from distillery.errors import InvalidRequestError
from distillery.wire.params import INT64_MAX

router = APIRouter(prefix="/v1/distillery/eval_comparisons", tags=["evals"], dependencies=[ADMIN])


@router.get("")
async def compare_runs(
    services: ServicesDep,
    run_ids: list[str] = Query(default=[]),
    baseline: str | None = None,
    resamples: int = Query(default=1000, ge=1, le=100_000),
    seed: int = Query(default=0, ge=0, le=INT64_MAX),
    confidence: float = Query(default=0.95, gt=0, lt=1),
) -> Response:
    ids = [part.strip() for value in run_ids for part in value.split(",") if part.strip()]
    if not ids:
        raise InvalidRequestError("Missing required parameter: 'run_ids'.", param="run_ids")
    return _json(
        services.evals.compare(
            ids, baseline=baseline, resamples=resamples, seed=seed, confidence=confidence
        )
    )


@router.post("/self_consistency")
async def repeat_teacher(request: Request, services: ServicesDep) -> Response:
    body = await read_json(request, 1024 * 1024)
    if not isinstance(body, dict) or not isinstance(body.get("run_id"), str):
        raise InvalidRequestError("Missing required parameter: 'run_id'.", param="run_id")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("'model' must be a string.", param="model")
    return _json(services.evals.repeat_run(body["run_id"], model=model, background=True))
