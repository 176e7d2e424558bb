"""Fine-tuning job pages: the jobs, and one job's status, events, checkpoints and loss curve."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from distillery import charts
from distillery.errors import InvalidRequestError
from distillery.training.jobs import TERMINAL, BodyRecord, FineTuningService, JobRecord
from distillery.web.auth import LOGIN
from distillery.web.contexts import CheckpointLine, EventLine, JobLine, JobPage, JobsPage
from distillery.web.render import PageRoute, redirect, render, services_of, url_with

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)

EVENTS_SHOWN = 200


def _jobs(request: Request) -> FineTuningService:
    return services_of(request).fine_tuning


def job_line(job: JobRecord) -> JobLine:
    body = job.to_object()
    finished = body.get("finished_at")
    return JobLine(
        id=job.id,
        model=str(body.get("model") or ""),
        status=job.status,
        backend=job.backend,
        created_at=job.created_at,
        finished_at=int(finished) if isinstance(finished, int | float) else None,
        fine_tuned_model=body.get("fine_tuned_model"),
        suffix=body.get("user_provided_suffix"),
    )


@router.get("/jobs")
def jobs_page(request: Request, after: str | None = None, status: str = "") -> Response:
    page = _jobs(request).job_records(after=after, limit=50, order="desc", status=status or None)
    next_url = (
        url_with("/jobs", {"status": status, "after": page.data[-1].id})
        if page.has_more and page.data
        else None
    )
    context = JobsPage(jobs=[job_line(j) for j in page.data], next_url=next_url)
    return render(request, "jobs.html", context, title="Fine-tuning jobs", nav="jobs")


def loss_curves(events: list[BodyRecord]) -> dict[str, list[tuple[float, float]]]:
    """``{metric: [(step, value), ...]}`` for every ``*loss`` metric in the metrics events."""
    curves: dict[str, dict[float, float]] = {}
    for event in events:
        body = event.body
        data = body.get("data")
        if body.get("type") != "metrics" or not isinstance(data, Mapping):
            continue
        step = data.get("step")
        if not isinstance(step, int | float):
            continue
        for key, value in data.items():
            if key.endswith("loss") and isinstance(value, int | float):
                curves.setdefault(key, {})[float(step)] = float(value)
    return {k: sorted(v.items()) for k, v in sorted(curves.items())}


def _event_line(e: BodyRecord) -> EventLine:
    return EventLine(
        created_at=e.created_at,
        level=str(e.body.get("level") or "info"),
        type=str(e.body.get("type") or "message"),
        message=str(e.body.get("message") or ""),
    )


def _checkpoint_line(c: BodyRecord) -> CheckpointLine:
    metrics: dict[str, Any] = {
        k: v for k, v in (c.body.get("metrics") or {}).items() if v is not None and k != "step"
    }
    return CheckpointLine(
        id=c.id,
        step=int(c.body.get("step_number") or 0),
        model=str(c.body.get("fine_tuned_model_checkpoint") or ""),
        created_at=c.created_at,
        metrics=metrics,
    )


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str) -> Response:
    service = _jobs(request)
    job = service.job_record(job_id)
    body = job.to_object()
    events = service.all_events(job.id)
    checkpoints = service.checkpoint_records(job.id, limit=100, order="desc").data
    curves = loss_curves(events)
    chart = charts.line_chart(curves, title=f"Loss · {job.id}", x_label="step", y_label="loss")
    progress = dict(job.state.get("progress") or {})
    context = JobPage(
        job=job_line(job),
        error=body.get("error") or None,
        hyperparameters=dict(body.get("hyperparameters") or {}),
        training_file=body.get("training_file"),
        validation_file=body.get("validation_file"),
        trained_tokens=body.get("trained_tokens"),
        progress={k: v for k, v in progress.items() if isinstance(v, int | float | str)},
        events=[_event_line(e) for e in reversed(events[-EVENTS_SHOWN:])],
        checkpoints=[_checkpoint_line(c) for c in checkpoints],
        chart=chart,
        can_cancel=job.status not in TERMINAL,
    )
    return render(
        request,
        "job.html",
        context,
        title=job.id,
        nav="jobs",
        refresh=5 if job.status not in TERMINAL else None,
    )


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: str) -> Response:
    url = f"/jobs/{quote(job_id, safe='')}"
    try:
        services_of(request).fine_tuning.cancel(job_id)
    except InvalidRequestError as exc:  # it ended meanwhile
        return redirect(url, flash=exc.message)
    return redirect(url, flash="Cancelled: the worker stops the training within seconds.")
