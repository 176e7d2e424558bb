"""A fine-tuned model's page: its lineage (job, dataset versions, teachers, prompts, people's
corrections, the teachers' terms), from ``distillery.datasets.lineage``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from distillery.web.auth import LOGIN
from distillery.web.render import PageRoute, render, services_of

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)


@dataclass(frozen=True)
class ModelLineagePage:
    lineage: dict[str, Any]
    terms: str | None


@router.get("/models/{model_id:path}/lineage")
def model_lineage_page(request: Request, model_id: str) -> Response:
    services = services_of(request)
    lineage = services.lineage.model_lineage(model_id)  # 404 page for an unknown model
    context = ModelLineagePage(lineage=lineage, terms=services.lineage.terms_status(model_id))
    return render(request, "model_lineage.html", context, title=model_id, nav="models")
