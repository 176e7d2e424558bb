"""``/v1/distillery/judge_calibrations``: an LLM judge compared with people's ratings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import read_object

router = APIRouter(prefix="/v1/distillery/judge_calibrations", tags=["evals"])


@router.post("", dependencies=[ADMIN])
async def calibrate_judge(request: Request, services: ServicesDep) -> Response:
    """Grade an annotation queue's rated outputs with a model grader and compare with the people."""
    body = await read_object(request, 1024 * 1024)
    return _json(await services.judge_calibration.calibrate(body))
