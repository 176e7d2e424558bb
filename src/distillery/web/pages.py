"""The dashboard: ``router`` holds every page (mounted at ``/`` by ``distillery.app``).

Handlers build one typed context per page (``contexts.py``) from the core services and render it
with Jinja2 (autoescaped). Each area's pages live in a module beside this one; this module holds the
overview, models, costs, the stylesheet and the not-found page.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from distillery import charts
from distillery.distill.service import DistillationsService
from distillery.web import auth, completions, datasets, evals, jobs, lineage, selection
from distillery.web import distillations as distillations_pages
from distillery.web import judges as judges_pages
from distillery.web import routes as routes_pages
from distillery.web.annotations import router as annotations_router
from distillery.web.auth import LOGIN
from distillery.web.completions import parse_day
from distillery.web.contexts import (
    ActivityLine,
    BaseModelLine,
    CandidateLine,
    CostsPage,
    FineTunedModelLine,
    ModelsPage,
    OverviewPage,
    SavingsLine,
    SpendLine,
    Stat,
)
from distillery.web.render import STATIC, PageRoute, error_page, render, services_of
from distillery.weights import DEMO_STUDENT

pages = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)

_ACTIVITY_HREF = {
    "completion": "/completions/{id}",
    "dataset": "/datasets/{id}",
    "job": "/jobs/{id}",
}


def _activity_href(kind: str, id_: str, label: str) -> str:
    if kind == "eval_run":
        return f"/evals/{label}/runs/{id_}"
    return _ACTIVITY_HREF.get(kind, "/").format(id=id_)


@pages.get("/")
def overview(request: Request) -> Response:
    services = services_of(request)
    n = services.overview_counts()
    models = len(services.providers.models()) + n.fine_tuned_models
    stats = [
        Stat("Stored completions", n.completions, "/completions"),
        Stat("Datasets", n.datasets, "/datasets"),
        Stat("Eval runs", n.eval_runs, "/evals"),
        Stat("Fine-tuning jobs", n.jobs, "/jobs"),
        Stat("Models", models, "/models"),
    ]
    rows = services.costs.spend_per_model()
    by_model = [
        SpendLine(
            key=r.model,
            model=r.model,
            requests=r.requests,
            tokens=r.prompt_tokens + r.completion_tokens,
            cost_usd=r.cost_usd,
        )
        for r in sorted(rows, key=lambda r: (-r.cost_usd, -r.requests))
    ]
    recent = [
        ActivityLine(
            kind=a.kind,
            id=a.id,
            label=a.label,
            status=a.status,
            created_at=a.created_at,
            href=_activity_href(a.kind, a.id, a.label),
        )
        for a in services.recent_activity()
    ]
    context = OverviewPage(
        stats=stats,
        spend=by_model,
        total_spend=sum(s.cost_usd for s in by_model),
        recent=recent,
    )
    return render(request, "overview.html", context, title="Overview", nav="overview")


@pages.get("/models")
def models_page(request: Request) -> Response:
    services = services_of(request)
    base: list[BaseModelLine] = []
    for provider in services.providers.providers.values():
        for info in provider.models():
            price = services.prices.get(info.id)
            base.append(
                BaseModelLine(
                    id=info.id,
                    owned_by=info.owned_by,
                    provider=provider.name,
                    kind=provider.kind,
                    price=(
                        f"${price.input:g} in / ${price.output:g} out per 1M tokens"
                        if price is not None
                        else "—"
                    ),
                )
            )
    fine_tuned = [
        FineTunedModelLine(
            id=m.id,
            base_model=m.base_model,
            provider=m.provider,
            created_at=m.created_at,
            job_id=m.job_id,
            adapter_path=m.adapter_path,
        )
        for m in services.fine_tuning.list_models()
    ]
    context = ModelsPage(base=base, fine_tuned=fine_tuned)
    return render(request, "models.html", context, title="Models", nav="models")


_GROUP_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@pages.get("/costs")
def costs_page(
    request: Request, since: str = "", until: str = "", group: str = "prompt"
) -> Response:
    services = services_of(request)
    group_key = group.strip() or "prompt"
    if not _GROUP_KEY.match(group_key):
        return error_page(request, 400, "The metadata key may use letters, digits and _.:- only.")
    services.routes.before_read()  # this process's route outcomes, written first
    report = services.costs.report(
        group_key=group_key,
        since=parse_day(since, param="since"),
        until=parse_day(until, param="until", end=True),
    )
    by_model = [
        SpendLine(
            key=str(m["model"]),
            model=str(m["model"]),
            requests=int(m["requests"]),
            tokens=int(m["tokens"]),
            cost_usd=float(m["cost_usd"]),
        )
        for m in report["by_model"]
    ]
    by_group = [
        SpendLine(
            key="(none)" if p["prompt"] is None else str(p["prompt"]),
            model=str(p["model"]),
            requests=int(p["requests"]),
            tokens=round(float(p["tokens_per_request"]) * int(p["requests"])),
            cost_usd=float(p["cost_usd"]),
            extra=f"${float(p['daily_spend']):.4f}/day",
        )
        for p in report["by_prompt"]
    ]
    chart = charts.bar_chart(
        {"spend (USD)": {line.key: line.cost_usd for line in by_model[:12]}},
        title="Spend per model",
        y_label="USD",
        value_format=lambda v: f"${v:,.4f}" if abs(v) < 1 else f"${v:,.2f}",
    )
    context = CostsPage(
        since=since,
        until=until,
        group_key=group_key,
        total=sum(m.cost_usd for m in by_model),
        by_model=by_model,
        by_group=by_group,
        candidates=[
            CandidateLine(
                prompt=str(c["prompt"]),
                model=str(c["model"]),
                requests=int(c["requests"]),
                daily_spend=float(c["daily_spend"]),
                enough_examples=bool(c["enough_examples"]),
            )
            for c in report["candidates"]
        ],
        savings=[
            SavingsLine(
                teacher_model=str(s["teacher_model"]),
                student_model=str(s["student_model"]),
                teacher_cost_per_1k=float(s["teacher_cost_per_1k"]),
                student_cost_per_1k=float(s["student_cost_per_1k"]),
                daily_saving=float(s["daily_saving"]),
                training_cost=float(s["training_cost"]),
                payback_days=None if s["payback_days"] is None else float(s["payback_days"]),
            )
            for s in report["savings"]
        ],
        chart=chart,
        routes=report["routes"],
        distillations=DistillationsService(services).list(limit=10).data,
        default_student=DEMO_STUDENT,
    )
    return render(request, "costs.html", context, title="Costs", nav="costs")


# --- static files and the not-found page ---------------------------------------------------------

_STATIC_NAME = re.compile(r"^[a-z0-9_-]+\.(css|js|svg)$")

open_pages = APIRouter(route_class=PageRoute, include_in_schema=False)


@open_pages.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    if not _STATIC_NAME.match(name) or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


class _PagePath(Convertor[str]):
    """Any path outside the API (``/v1``), so unknown pages get the HTML not-found page while
    unknown API paths keep the JSON error envelope."""

    regex = r"(?!v1(?:/|$)|docs|openapi\.json|health).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("distillery_page", _PagePath())

not_found = APIRouter(route_class=PageRoute, include_in_schema=False)


@not_found.get("/{path:distillery_page}")
def page_not_found(request: Request, path: str) -> Response:
    del path
    return error_page(request, 404, "There is no page at this address.")


router = APIRouter(include_in_schema=False)
router.include_router(auth.router)
router.include_router(open_pages)
router.include_router(pages)
router.include_router(completions.router)
router.include_router(selection.router)
router.include_router(annotations_router)
router.include_router(datasets.router)
router.include_router(evals.router)
router.include_router(jobs.router)
router.include_router(lineage.router)
router.include_router(routes_pages.router)
router.include_router(judges_pages.router)
router.include_router(distillations_pages.router)
router.include_router(not_found)  # last: it matches every page path no route above took
