"""Eval pages: evals with their runs, one run (per-criterion pass rates and scores, failing items,
a chart), and runs compared side by side against a baseline (a table and a chart)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from distillery import charts
from distillery.errors import InvalidRequestError
from distillery.services import Services
from distillery.web.auth import LOGIN
from distillery.web.completions import content_text
from distillery.web.contexts import (
    CompareCell,
    ComparePage,
    CompareRow,
    CompareRun,
    CriterionLine,
    EvalLine,
    EvalsPage,
    FlipLine,
    GradeLine,
    OutputItemLine,
    RunLine,
    RunPage,
)
from distillery.web.render import PageRoute, render, services_of, url_with

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)

ACTIVE = ("queued", "in_progress")
RUNS_PER_EVAL = 20
ITEM_FILTERS = ("fail", "error", "pass", "all")
PREVIEW = 400
MAX_COMPARED = 8


def run_line(run: Mapping[str, Any]) -> RunLine:
    counts = run.get("result_counts") or {}
    return RunLine(
        id=str(run.get("id")),
        eval_id=str(run.get("eval_id")),
        name=str(run.get("name") or run.get("id")),
        model=str(run.get("model") or ""),
        status=str(run.get("status")),
        created_at=int(run.get("created_at") or 0),
        total=int(counts.get("total") or 0),
        passed=int(counts.get("passed") or 0),
        failed=int(counts.get("failed") or 0),
        errored=int(counts.get("errored") or 0),
    )


def _eval_line(services: Services, ev: Mapping[str, Any], limit: int) -> EvalLine:
    runs = services.evals.list_runs(str(ev["id"]), limit=limit, order="desc")["data"]
    return EvalLine(
        id=str(ev["id"]),
        name=str(ev.get("name") or ev["id"]),
        created_at=int(ev.get("created_at") or 0),
        criteria=[str(c.get("name") or c.get("type")) for c in ev.get("testing_criteria") or []],
        runs=[run_line(r) for r in runs],
    )


@router.get("/evals")
def evals_page(request: Request, after: str | None = None) -> Response:
    services = services_of(request)
    page = services.evals.list_evals(after=after, limit=20, order="desc")
    evals = [_eval_line(services, ev, RUNS_PER_EVAL) for ev in page["data"]]
    next_url = (
        url_with("/evals", {"after": page["data"][-1]["id"]})
        if page["has_more"] and page["data"]
        else None
    )
    context = EvalsPage(evals=evals, next_url=next_url)
    return render(request, "evals.html", context, title="Evals", nav="evals")


@router.get("/evals/compare")
def compare_page(
    request: Request,
    run_ids: list[str] = Query(default=[]),
    baseline: str = "",
) -> Response:
    ids = [r.strip() for value in run_ids for r in value.split(",") if r.strip()]
    if baseline:  # the baseline is the first column
        ids = [baseline, *ids]
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise InvalidRequestError("Choose the runs to compare (run_ids=a,b).", param="run_ids")
    if len(ids) > MAX_COMPARED:
        raise InvalidRequestError(f"Compare at most {MAX_COMPARED} runs.", param="run_ids")
    result = services_of(request).evals.compare(ids, baseline=baseline or None)
    runs = [
        CompareRun(
            id=str(r["id"]),
            eval_id=str(r.get("eval_id")),
            name=str(r.get("name") or r["id"]),
            model=str(r.get("model") or ""),
            status=str(r.get("status")),
            baseline=bool(r.get("baseline")),
            agreement=r.get("agreement"),
            matched_items=int(r.get("matched_items") or 0),
        )
        for r in result["runs"]
    ]
    rows = [
        CompareRow(
            name=str(entry["name"]),
            cells=[
                CompareCell(
                    pass_rate=side.get("pass_rate"),
                    mean_score=side.get("mean_score"),
                    percent_of_baseline=side.get("percent_of_baseline"),
                    ci=side.get("pass_rate_ci"),
                )
                for side in entry["runs"]
            ],
        )
        for entry in [*result["criteria"], result["overall"]]
    ]
    labels = [
        f"{r.name} ({r.model})" if r.model and r.model not in r.name else r.name for r in runs
    ]
    labels = [
        f"{label} · {r.id[-6:]}" if labels.count(label) > 1 else label
        for label, r in zip(labels, runs, strict=True)
    ]
    series = {
        label: {row.name: row.cells[i].pass_rate for row in rows} for i, label in enumerate(labels)
    }
    chart = charts.bar_chart(
        series,
        title="Pass rate per criterion",
        y_label="pass rate",
        y_max=1.0,
        value_format=lambda v: f"{v * 100:.0f}%",
        width=max(640, 140 * len(rows) + 240),
    )
    flips = [
        FlipLine(
            run_id=str(f["run_id"]),
            direction=direction,
            key=str(entry.get("key")),
            criteria=[str(c) for c in entry.get("criteria") or []],
        )
        for f in result["flips"]
        for direction in ("pass_to_fail", "fail_to_pass")
        for entry in f.get(direction) or []
    ]
    context = ComparePage(
        run_ids=",".join(r.id for r in runs),
        baseline=str(result["baseline_run_id"]),
        runs=runs,
        rows=rows,
        chart=chart,
        flips=flips[:200],
    )
    return render(request, "compare.html", context, title="Compare runs", nav="evals")


@router.get("/evals/{eval_id}")
def eval_page(request: Request, eval_id: str) -> Response:
    services = services_of(request)
    ev = services.evals.get_eval(eval_id)
    context = EvalsPage(evals=[_eval_line(services, ev, 100)], next_url=None)
    return render(request, "evals.html", context, title=str(ev.get("name")), nav="evals")


def _item_line(item: Mapping[str, Any]) -> OutputItemLine:
    sample = item.get("sample") or {}
    source = item.get("datasource_item") or {}
    messages = sample.get("input") or source.get("input") or source.get("messages") or []
    if isinstance(messages, list) and messages:
        last = messages[-1]
        prompt = content_text(last.get("content")) if isinstance(last, Mapping) else str(last)
    else:
        prompt = content_text(source.get("question") or source.get("input") or "")
    outputs = sample.get("output") or []
    output = content_text(outputs[-1].get("content")) if outputs else ""
    error = (sample.get("error") or {}).get("message")
    if error:
        output = f"error: {error}"
    grades = [
        GradeLine(
            name=str(r.get("name")),
            passed=None if r.get("error") else bool(r.get("passed")),
            score=r.get("score") if isinstance(r.get("score"), int | float) else None,
            reason=str(r.get("reason") or (r.get("error") or {}).get("message") or ""),
        )
        for r in item.get("results") or []
        if isinstance(r, Mapping)
    ]
    cid = source.get("completion_id")
    return OutputItemLine(
        id=str(item.get("id")),
        index=int(item.get("datasource_item_id") or 0),
        status=str(item.get("status")),
        completion_id=cid if isinstance(cid, str) else None,
        input=prompt[:PREVIEW],
        output=output[:PREVIEW],
        grades=grades,
    )


@router.get("/evals/{eval_id}/runs/{run_id}")
def run_page(
    request: Request,
    eval_id: str,
    run_id: str,
    items: str = "fail",
    after: str | None = None,
) -> Response:
    services = services_of(request)
    ev = services.evals.get_eval(eval_id)
    run = services.evals.get_run(run_id, eval_id=eval_id)
    line = run_line(run)
    which = items if items in ITEM_FILTERS else "fail"
    page = services.evals.list_output_items(
        run_id,
        eval_id=eval_id,
        after=after,
        limit=50,
        status=None if which == "all" else which,
    )
    base = f"/evals/{quote(eval_id, safe='')}/runs/{quote(run_id, safe='')}"
    next_url = (
        url_with(base, {"items": which, "after": page["data"][-1]["id"]})
        if page["has_more"] and page["data"]
        else None
    )
    criteria: list[CriterionLine] = []
    counts = {
        str(c.get("testing_criteria")): c for c in run.get("per_testing_criteria_results") or []
    }
    if line.status not in ACTIVE and line.total:
        table = services.evals.compare([run_id], resamples=1)
        for entry in table["criteria"]:
            side = entry["runs"][0]
            got = counts.get(str(entry["name"])) or {}
            criteria.append(
                CriterionLine(
                    name=str(entry["name"]),
                    passed=int(got.get("passed", side.get("passed") or 0)),
                    failed=int(
                        got.get("failed", (side.get("items") or 0) - (side.get("passed") or 0))
                    ),
                    pass_rate=side.get("pass_rate"),
                    mean_score=side.get("mean_score"),
                )
            )
    else:
        for name, got in counts.items():
            done = int(got.get("passed") or 0) + int(got.get("failed") or 0)
            criteria.append(
                CriterionLine(
                    name=name,
                    passed=int(got.get("passed") or 0),
                    failed=int(got.get("failed") or 0),
                    pass_rate=(int(got.get("passed") or 0) / done) if done else None,
                    mean_score=None,
                )
            )
    chart = charts.bar_chart(
        {line.name: {c.name: c.pass_rate for c in criteria}},
        title="Pass rate per criterion",
        y_label="pass rate",
        y_max=1.0,
        value_format=lambda v: f"{v * 100:.0f}%",
    )
    others = services.evals.list_runs(eval_id, limit=50, order="desc")["data"]
    error = (run.get("error") or {}).get("message") or None
    context = RunPage(
        run=line,
        eval_name=str(ev.get("name") or eval_id),
        data_source={k: v for k, v in (run.get("data_source") or {}).items() if k != "source"}
        | {"source": _source_summary(run.get("data_source") or {})},
        error=error,
        criteria=criteria,
        failing=[_item_line(i) for i in page["data"]],
        failing_next_url=next_url,
        usage=list(run.get("per_model_usage") or []),
        chart=chart,
        compare_with=[run_line(r) for r in others if r.get("id") != run_id],
    )
    return render(
        request,
        "eval_run.html",
        context,
        title=f"{context.eval_name} · {line.name}",
        nav="evals",
        refresh=5 if line.status in ACTIVE else None,
    )


def _source_summary(ds: Mapping[str, Any]) -> str:
    source = ds.get("source") or {}
    kind = source.get("type") or ds.get("type")
    if kind == "file_content":
        return f"{len(source.get('content') or [])} inline items"
    if kind == "file_id":
        return f"file {source.get('id')}"
    if kind in ("stored_completions", "responses"):
        filters = {k: v for k, v in source.items() if k != "type" and v is not None}
        label = "stored responses " if kind == "responses" else "stored completions "
        return label + (str(filters) if filters else "(all)")
    if ds.get("type") == "distillery_dataset":
        return f"dataset {ds.get('dataset_id')} v{ds.get('version')} {ds.get('split') or ''}"
    return str(kind)
