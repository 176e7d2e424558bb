"""Distillation pages: the "Distil" button of the costs page starts one; its page follows it
(step, progress) and shows its report: the three runs side by side, the job, the gated route."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from distillery.distill.service import TERMINAL, DistillationsService
from distillery.errors import DistilleryError
from distillery.web.auth import LOGIN
from distillery.web.contexts import DistillationPage
from distillery.web.render import PageRoute, redirect, render, services_of

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)


def _service(request: Request) -> DistillationsService:
    return DistillationsService(services_of(request))


@router.post("/distillations")
def start_distillation(
    request: Request,
    prompt: Annotated[str, Form()],
    teacher: Annotated[str, Form()] = "",
    student: Annotated[str, Form()] = "",
) -> Response:
    """The costs page's "Distil" button: a distillation of the prompt with every default."""
    body: dict[str, str] = {"prompt": prompt}
    body |= {k: v.strip() for k, v in (("teacher", teacher), ("student", student)) if v.strip()}
    try:
        created = _service(request).create(body)
    except DistilleryError as exc:  # too little data, an unknown prompt: said on the costs page
        return redirect("/costs", flash=exc.message)
    return redirect(
        f"/distillations/{quote(created['id'], safe='')}",
        flash="Started: the server distils the prompt; this page follows it.",
    )


@router.get("/distillations/{distillation_id}")
def distillation_page(request: Request, distillation_id: str) -> Response:
    found = _service(request).get(distillation_id)
    report = found.get("report") or None
    page = DistillationPage(
        distillation=found,
        report=report,
        can_cancel=found["status"] not in TERMINAL,
    )
    return render(
        request,
        "distillation.html",
        page,
        title=f"Distillation of {found['prompt']}",
        nav="costs",
        refresh=5 if found["status"] not in TERMINAL else None,
    )


@router.post("/distillations/{distillation_id}/cancel")
def cancel_distillation(request: Request, distillation_id: str) -> Response:
    url = f"/distillations/{quote(distillation_id, safe='')}"
    try:
        _service(request).cancel(distillation_id)
    except DistilleryError as exc:  # it ended meanwhile
        return redirect(url, flash=exc.message)
    return redirect(url, flash="Cancelled: what it made so far stays.")
