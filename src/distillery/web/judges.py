"""The judges page: each LLM judge's calibration against people's ratings, with its confusion
matrix, agreement and Cohen's kappa (and their intervals), newest first."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from distillery.web.auth import LOGIN
from distillery.web.contexts import JudgesPage
from distillery.web.render import PageRoute, render, services_of

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)


@router.get("/judges")
async def judges_page(request: Request) -> Response:
    found = await run_in_threadpool(services_of(request).judge_calibration.recent)
    return render(request, "judges.html", JudgesPage(found), title="Judges", nav="evals")
