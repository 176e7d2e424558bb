"""``/v1/fine_tuning/alpha/graders``: OpenAI's grader API, run and validate a grader on its own.

``POST .../run`` grades one ``model_sample`` (and ``item``) with a grader object and answers
OpenAI's ``GraderRunResponse`` (``reward``, ``sub_rewards``, ``metadata.errors``...);
``POST .../validate`` answers ``{grader}`` when the grader builds, else a 400 whose ``param``
names the problem (``grader.calculate_output``, ``grader.source``). The work is in
``distillery.evals.graders.run``, shared with reinforcement fine-tuning.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import read_json

router = APIRouter(
    prefix="/v1/fine_tuning/alpha/graders", tags=["fine-tuning"], dependencies=[ADMIN]
)

_BODY_LIMIT = 8 * 1024 * 1024  # a python grader's source (256 kB) and an item


@router.post("/run")
async def run_grader(request: Request, services: ServicesDep) -> Response:
    """Run a grader on one sample."""
    return _json(await services.evals.run_grader(await read_json(request, _BODY_LIMIT)))


@router.post("/validate")
async def validate_grader(request: Request, services: ServicesDep) -> Response:
    """Validate a grader."""
    return _json(services.evals.validate_grader(await read_json(request, _BODY_LIMIT)))
