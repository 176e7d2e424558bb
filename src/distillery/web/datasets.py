"""Dataset pages: the list, and one dataset's versions with split counts, tokens, the training
cost estimate, the dedupe report and a sample of its examples."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from distillery.datasets.service import Dataset, DatasetVersion
from distillery.web.auth import LOGIN
from distillery.web.completions import message_view
from distillery.web.contexts import (
    DatasetLine,
    DatasetPage,
    DatasetsPage,
    DuplicateLine,
    ExampleLine,
    SplitLine,
    VersionLine,
)
from distillery.web.render import PageRoute, render, services_of, url_with

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)

SAMPLE_SIZE = 20
DUPLICATES_SHOWN = 100


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
def dataset_page(request: Request, dataset_id: str, version: int | None = None) -> Response:
    svc = services_of(request).datasets
    dataset = svc.get(dataset_id)
    versions = svc.list_versions(dataset.id)
    current = svc.get_version(dataset.id, version) if versions else None
    stats: dict[str, Any] = dict(current.stats) if current else {}
    splits = [
        SplitLine(
            name=name,
            examples=_int(s.get("examples")),
            tokens=_int(s.get("tokens")),
            corrected=_int(s.get("corrected")),
        )
        for name, s in (stats.get("splits") or {}).items()
        if isinstance(s, dict)
    ]
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
    if current is not None:
        items = svc.list_items(dataset.id, current.version, limit=SAMPLE_SIZE)
        sample = [
            ExampleLine(
                split=i.split,
                completion_id=i.completion_id,
                corrected=i.corrected,
                tokens=i.tokens,
                messages=[message_view(m) for m in i.example.get("messages") or []],
            )
            for i in items.data
        ]
    context = DatasetPage(
        dataset=dataset_line(dataset),
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
    )
    return render(request, "dataset.html", context, title=dataset.name, nav="datasets")


def dataset_url(dataset_id: str) -> str:
    return f"/datasets/{quote(dataset_id, safe='')}"
