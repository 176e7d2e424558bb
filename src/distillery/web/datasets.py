"""Dataset pages: the list, and one dataset's versions with split counts (and where the rows
came from), tokens, the training cost estimate, the dedupe report, a version's synthesis report
and a sample of its examples; the "Synthesize" form (estimate, or run and open the new version)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from distillery.datasets.export import origin_of
from distillery.datasets.service import Dataset, DatasetVersion
from distillery.errors import DistilleryError
from distillery.text.lang import is_japanese
from distillery.web.auth import LOGIN
from distillery.web.completions import message_view
from distillery.web.contexts import (
    DatasetLine,
    DatasetPage,
    DatasetsPage,
    DuplicateLine,
    ExampleLine,
    RejectedLine,
    SplitLine,
    SynthesisCellLine,
    SynthesisEstimate,
    SynthesisForm,
    SynthesisReport,
    VersionLine,
)
from distillery.web.render import PageRoute, redirect, render, services_of, url_with

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)

SAMPLE_SIZE = 20
DUPLICATES_SHOWN = 100
REJECTED_SHOWN = 200
ORIGINS = ("captured", "imported", "synthetic", "relabel")  # column order of the splits table


def dataset_line(d: Dataset) -> DatasetLine:
    return DatasetLine(
        id=d.id,
        name=d.name,
        created_at=d.created_at,
        description=d.description,
        latest_version=d.latest_version,
    )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


@router.get("/datasets")
def datasets_page(request: Request, after: str | None = None) -> Response:
    page = services_of(request).datasets.list(after=after, limit=50)
    next_url = (
        url_with("/datasets", {"after": page.data[-1].id}) if page.has_more and page.data else None
    )
    context = DatasetsPage(datasets=[dataset_line(d) for d in page.data], next_url=next_url)
    return render(request, "datasets.html", context, title="Datasets", nav="datasets")


def _version_line(v: DatasetVersion) -> VersionLine:
    selected = v.stats.get("selected")
    return VersionLine(
        version=v.version,
        id=v.id,
        created_at=v.created_at,
        examples=_int(v.stats.get("examples")),
        tokens=_int(v.stats.get("tokens")),
        selected=int(selected) if isinstance(selected, int) else None,
    )


@router.get("/datasets/{dataset_id}")
def dataset_page(
    request: Request, dataset_id: str, version: int | None = None, after: int | None = None
) -> Response:
    context = _dataset_context(request, dataset_id, version, after=after)
    return render(request, "dataset.html", context, title=context.dataset.name, nav="datasets")


def _dataset_context(
    request: Request,
    dataset_id: str,
    version: int | None,
    *,
    after: int | None = None,
    form: SynthesisForm | None = None,
    estimate: SynthesisEstimate | None = None,
    error: str | None = None,
) -> DatasetPage:
    services = services_of(request)
    svc = services.datasets
    dataset = svc.get(dataset_id)
    versions = svc.list_versions(dataset.id)
    current = svc.get_version(dataset.id, version) if versions else None
    stats: dict[str, Any] = dict(current.stats) if current else {}
    origins = stats.get("origins") or {}
    splits = [
        SplitLine(
            name=name,
            examples=_int(s.get("examples")),
            tokens=_int(s.get("tokens")),
            corrected=_int(s.get("corrected")),
            origins={str(k): _int(v) for k, v in (origins.get(name) or {}).items() if _int(v)},
        )
        for name, s in (stats.get("splits") or {}).items()
        if isinstance(s, dict)
    ]
    kinds = {k for s in splits for k in s.origins}
    origin_kinds = [k for k in ORIGINS if k in kinds] + sorted(kinds - set(ORIGINS))
    dup = stats.get("duplicates") or {}
    duplicates = [
        DuplicateLine(
            completion_id=d.get("completion_id"),
            duplicate_of=d.get("duplicate_of"),
            kind=str(d.get("kind", "")),
            similarity=d.get("similarity"),
        )
        for d in (dup.get("items") or [])[:DUPLICATES_SHOWN]
        if isinstance(d, dict)
    ]
    sample: list[ExampleLine] = []
    sample_next_url = None
    if current is not None:
        items = svc.list_items(dataset.id, current.version, after=after, limit=SAMPLE_SIZE)
        sample = [
            ExampleLine(
                split=i.split,
                completion_id=i.completion_id,
                corrected=i.corrected,
                tokens=i.tokens,
                messages=[message_view(m) for m in i.example.get("messages") or []],
                origin=origin_of(i),
            )
            for i in items.data
        ]
        if items.has_more and items.data:
            sample_next_url = url_with(
                dataset_url(dataset.id),
                {"version": current.version, "after": items.data[-1].seq},
            )
    synthesis = stats.get("synthesis")
    line = dataset_line(dataset)
    return DatasetPage(
        dataset=line,
        versions=[_version_line(v) for v in sorted(versions, key=lambda v: -v.version)],
        version=current.version if current else None,
        version_id=current.id if current else None,
        spec=dict(current.spec) if current else {},
        splits=splits,
        examples=_int(stats.get("examples")),
        tokens=_int(stats.get("tokens")),
        tokenizer=stats.get("tokenizer"),
        corrected=_int(stats.get("corrected")),
        invalid=_int(stats.get("invalid")),
        cost=dict(stats.get("training_cost") or {}),
        duplicates_mode=dup.get("mode"),
        duplicates_found=_int(dup.get("found")),
        duplicates_removed=_int(dup.get("removed")),
        duplicates=duplicates,
        warnings=[str(w) for w in stats.get("warnings") or []],
        sample=sample,
        sample_next_url=sample_next_url,
        origin_kinds=origin_kinds,
        synthesis=synthesis_report(synthesis) if isinstance(synthesis, dict) else None,
        models=sorted({m.id for m in services.providers.models()}),
        synth_form=form or SynthesisForm(description=line.description or ""),
        synth_estimate=estimate,
        synth_error=error,
    )


# --- synthesis -----------------------------------------------------------------------------------

_STOPPED = {
    "max_calls": "stopped at the call cap (max calls)",
    "max_usd": "stopped at the dollar cap (max USD)",
    "max_rounds": "stopped after its last round with cells still short (max rounds)",
}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _usd(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _rejected_line(r: Mapping[str, Any]) -> RejectedLine:
    raw = "input" not in r and "raw" in r
    text = str(r.get("raw") if raw else r.get("input") or "")
    detail, output = _str(r.get("detail")), _str(r.get("output"))
    return RejectedLine(
        reason=str(r.get("reason") or "unknown"),
        label=_str(r.get("label")),
        topic=_str(r.get("topic")),
        language=_str(r.get("language")),
        text=text,
        raw=raw,
        detail=detail,
        output=output,
        lang="ja" if is_japanese(text) else None,
        detail_lang="ja" if is_japanese(f"{detail or ''}{output or ''}") else None,
    )


def synthesis_report(report: Mapping[str, Any]) -> SynthesisReport:
    """The page's view of a version's ``stats.synthesis``."""
    spent = report.get("spent") or {}
    est = report.get("estimate") or {}
    rejected = [r for r in report.get("rejected_items") or [] if isinstance(r, Mapping)]
    stopped = _str(report.get("stopped"))
    complete = bool(report.get("complete"))
    return SynthesisReport(
        id=str(report.get("id") or ""),
        teacher=str(report.get("teacher") or ""),
        requested=_int(report.get("requested")),
        accepted=_int(report.get("accepted")),
        rejected=_int(report.get("rejected")),
        generated=_int(report.get("generated")),
        rounds=_int(report.get("rounds")),
        complete=complete,
        stopped=stopped,
        stopped_text=(
            _STOPPED.get(stopped, stopped)
            if stopped
            else ("complete: every cell filled" if complete else "—")
        ),
        spent_calls=_int(spent.get("calls")),
        spent_prompt_tokens=_int(spent.get("prompt_tokens")),
        spent_completion_tokens=_int(spent.get("completion_tokens")),
        spent_usd=_usd(spent.get("usd")),
        estimate_calls=_int(est.get("calls")) if est else None,
        estimate_usd=_usd(est.get("usd")),
        reasons=[(str(k), _int(v)) for k, v in (report.get("reasons") or {}).items()],
        cells=[
            SynthesisCellLine(
                label=_str(c.get("label")),
                topic=_str(c.get("topic")),
                language=str(c.get("language") or ""),
                target=_int(c.get("target")),
                accepted=_int(c.get("accepted")),
            )
            for c in report.get("cells") or []
            if isinstance(c, Mapping)
        ],
        warnings=[str(w) for w in report.get("warnings") or []],
        rejected_items=[_rejected_line(r) for r in rejected[:REJECTED_SHOWN]],
        rejected_total=len(rejected),
    )


def _estimate(found: Mapping[str, Any]) -> SynthesisEstimate:
    seconds = found.get("seconds")
    return SynthesisEstimate(
        teacher=str(found.get("teacher") or ""),
        seed_version=found.get("seed_version"),
        requested=_int(found.get("requested")),
        calls=_int(found.get("calls")),
        prompt_tokens=_int(found.get("prompt_tokens")),
        completion_tokens=_int(found.get("completion_tokens")),
        usd=_usd(found.get("usd")),
        seconds=float(seconds) if isinstance(seconds, int | float) else None,
        cells=_int(found.get("cells")),
        labels=[str(x) for x in found.get("labels") or []],
        languages=[str(x) for x in found.get("languages") or []],
        label_field=_str(found.get("label_field")),
        within_caps=bool(found.get("within_caps", True)),
        warnings=[str(w) for w in found.get("warnings") or []],
    )


def _body(form: SynthesisForm, version: int | None, dry_run: bool) -> dict[str, Any]:
    """The synthesis request of the form: empty fields are left to the service's defaults,
    numbers are sent as typed (the service says which one it cannot read)."""
    body: dict[str, Any] = {"teacher": form.teacher, "description": form.description}
    for name in ("n", "max_usd", "max_calls", "inputs_per_call"):
        value = getattr(form, name)
        if value:
            body[name] = value
    coverage: dict[str, Any] = {}
    if form.languages:
        coverage["languages"] = form.languages
    labels = [x.strip() for x in re.split(r"[,、，]", form.labels) if x.strip()]
    if labels:
        coverage["labels"] = labels
    if coverage:
        body["coverage"] = coverage
    if version is not None:
        body["version"] = version
    if form.acknowledge_terms:
        body["acknowledge_terms"] = True
    if dry_run:
        body["dry_run"] = True
    return body


@router.post("/datasets/{dataset_id}/synthesize")
async def synthesize_action(
    request: Request,
    dataset_id: str,
    teacher: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    n: Annotated[str, Form()] = "",
    languages: Annotated[list[str], Form()] = [],  # noqa: B006
    labels: Annotated[str, Form()] = "",
    max_usd: Annotated[str, Form()] = "",
    max_calls: Annotated[str, Form()] = "",
    inputs_per_call: Annotated[str, Form()] = "",
    acknowledge_terms: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
    action: Annotated[str, Form()] = "estimate",
) -> Response:
    """The dataset page's "Synthesize" form: "Estimate" shows what it would cost on the page;
    "Synthesize" runs it (in this request) and opens the version it made. A refused request
    (an unknown teacher, a cap without a price, a bad number) is said on the page."""
    form = SynthesisForm(
        teacher=teacher.strip(),
        description=description.strip(),
        n=n.strip(),
        languages=[x for x in dict.fromkeys(languages) if x],
        labels=labels.strip(),
        max_usd=max_usd.strip(),
        max_calls=max_calls.strip(),
        inputs_per_call=inputs_per_call.strip(),
        acknowledge_terms=bool(acknowledge_terms),
    )
    seed_version = int(version) if version.strip().isdigit() else None
    dry_run = action != "synthesize"
    services = services_of(request)
    try:
        found = await services.curation.synthesize(dataset_id, _body(form, seed_version, dry_run))
    except DistilleryError as exc:
        where = f" ({exc.param})" if exc.param else ""
        context = await run_in_threadpool(
            _dataset_context,
            request,
            dataset_id,
            seed_version,
            form=form,
            error=exc.message + where,
        )
        return render(
            request,
            "dataset.html",
            context,
            title=context.dataset.name,
            nav="datasets",
            status=exc.status,
        )
    if dry_run:
        context = await run_in_threadpool(
            _dataset_context,
            request,
            dataset_id,
            seed_version,
            form=form,
            estimate=_estimate(found),
        )
        return render(request, "dataset.html", context, title=context.dataset.name, nav="datasets")
    made = found["version"]
    report = made["stats"].get("synthesis") or {}
    flash = (
        f"Synthesized {report.get('accepted', 0)} of {report.get('requested', 0)} rows "
        f"with {report.get('teacher', form.teacher)}: version {made['version']}."
    )
    return redirect(url_with(dataset_url(found["id"]), {"version": made["version"]}), flash=flash)


def dataset_url(dataset_id: str) -> str:
    return f"/datasets/{quote(dataset_id, safe='')}"
