"""``/v1/distillery/datasets``: versioned training datasets, their items and exports."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import list_response as _list
from distillery.api.responses import read_object
from distillery.errors import InvalidRequestError
from distillery.wire.fine_tuning_jsonl import dump_line
from distillery.wire.params import INT64_MAX

router = APIRouter(prefix="/v1/distillery/datasets", tags=["datasets"])

_BODY_LIMIT = 32 * 1024 * 1024
_DATASET_FIELDS = ("name", "description", "metadata")


def _split_dataset_fields(body: dict[str, Any]) -> tuple[str, str | None, Any, dict[str, Any]]:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError("Missing required parameter: 'name'.", param="name")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidRequestError("'description' must be a string.", param="description")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequestError("'metadata' must be an object.", param="metadata")
    spec = {k: v for k, v in body.items() if k not in _DATASET_FIELDS}
    return name, description, metadata, spec


def _version_number(version: str) -> int | None:
    if version == "latest":
        return None
    if version.isdigit():
        return int(version)
    raise InvalidRequestError(
        f"Invalid version {version!r}: a number or 'latest'.", param="version"
    )


@router.post("", dependencies=[ADMIN])
async def create_dataset(request: Request, services: ServicesDep) -> Response:
    """Create a dataset (or the next version of the dataset with this name) from stored data."""
    name, description, metadata, spec = _split_dataset_fields(
        await read_object(request, _BODY_LIMIT)
    )
    svc = services.datasets
    version = await run_in_threadpool(
        lambda: svc.create_version(name, spec, description=description, metadata=metadata)
    )
    return _json(svc.dataset_view(svc.get(version.dataset_id), version))


@router.post("/import", dependencies=[ADMIN])
async def import_dataset(request: Request, services: ServicesDep) -> Response:
    """A dataset version from an uploaded fine-tuning JSONL file (``file_id``)."""
    name, description, metadata, spec = _split_dataset_fields(
        await read_object(request, _BODY_LIMIT)
    )
    file_id = spec.pop("file_id", None)
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequestError("Missing required parameter: 'file_id'.", param="file_id")
    svc = services.datasets

    def run() -> Any:
        with services.files.open(file_id) as stream:
            return svc.import_jsonl(
                name,
                stream,
                spec,
                description=description,
                metadata=metadata,
                source_name=file_id,
            )

    version = await run_in_threadpool(run)
    return _json(svc.dataset_view(svc.get(version.dataset_id), version))


@router.post("/{dataset_id}/synthesize", dependencies=[ADMIN])
async def synthesize(dataset_id: str, request: Request, services: ServicesDep) -> Response:
    """Synthetic rows for a dataset: the teacher writes inputs like the seed version's, answers
    them as production does, and the rows that pass every check become the next version (with
    its curation report in ``stats.synthesis``). ``dry_run: true`` returns the estimate only."""
    body = await read_object(request, _BODY_LIMIT)
    return _json(await services.curation.synthesize(dataset_id, body))


@router.get("", dependencies=[ADMIN])
async def list_datasets(
    services: ServicesDep,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    page = services.datasets.list(after=after, limit=limit, order=order)
    return _list([services.datasets.dataset_view(d) for d in page.data], page.has_more)


@router.get("/{dataset_id}", dependencies=[ADMIN])
async def retrieve_dataset(dataset_id: str, services: ServicesDep) -> Response:
    svc = services.datasets
    dataset = svc.get(dataset_id)
    latest = svc.get_version(dataset.id) if dataset.latest_version else None
    return _json(svc.dataset_view(dataset, latest))


@router.delete("/{dataset_id}", dependencies=[ADMIN])
async def delete_dataset(dataset_id: str, services: ServicesDep) -> Response:
    dataset = services.datasets.delete(dataset_id)
    return _json({"id": dataset.id, "object": "distillery.dataset.deleted", "deleted": True})


@router.post("/{dataset_id}/versions", dependencies=[ADMIN])
async def create_version(dataset_id: str, request: Request, services: ServicesDep) -> Response:
    body = await read_object(request, _BODY_LIMIT)
    svc = services.datasets
    dataset = svc.get(dataset_id)
    version = await run_in_threadpool(lambda: svc.create_version(dataset.name, body))
    return _json(svc.version_view(version))


@router.get("/{dataset_id}/versions", dependencies=[ADMIN])
async def list_versions(dataset_id: str, services: ServicesDep) -> Response:
    svc = services.datasets
    versions = svc.list_versions(dataset_id)
    return _list([svc.version_view(v) for v in versions], False)


@router.get("/{dataset_id}/versions/{version}", dependencies=[ADMIN])
async def retrieve_version(dataset_id: str, version: str, services: ServicesDep) -> Response:
    svc = services.datasets
    return _json(svc.version_view(svc.get_version(dataset_id, _version_number(version))))


@router.get("/{dataset_id}/versions/{version}/items", dependencies=[ADMIN])
async def list_items(
    dataset_id: str,
    version: str,
    services: ServicesDep,
    split: str | None = None,
    after: int | None = Query(default=None, ge=0, le=INT64_MAX),
    limit: int = Query(default=20, ge=1, le=1000),
) -> Response:
    svc = services.datasets
    page = svc.list_items(
        dataset_id, _version_number(version), split=split, after=after, limit=limit
    )
    return _list([svc.item_view(i) for i in page.data], page.has_more)


@router.get("/{dataset_id}/versions/{version}/content", dependencies=[ADMIN])
async def download_version(
    dataset_id: str,
    version: str,
    services: ServicesDep,
    split: str | None = "train",
    lineage: bool = False,
) -> Response:
    """The split as fine-tuning JSONL (``split`` omitted or empty: every split); ``lineage``
    adds each line's origin (captured, imported, synthetic, relabel) under ``metadata``."""
    examples = services.datasets.iter_examples(
        dataset_id, _version_number(version), split=split or None, lineage=lineage
    )
    return StreamingResponse(
        (dump_line(example) for example in examples), media_type="application/jsonl"
    )


@router.post("/{dataset_id}/versions/{version}/export", dependencies=[ADMIN])
async def export_version(
    dataset_id: str, version: str, request: Request, services: ServicesDep
) -> Response:
    """Export a split as a ``fine-tune`` file: returns the FileObject (its id goes to a job)."""
    body = await read_object(request, _BODY_LIMIT)
    unknown = sorted(set(body) - {"split"})
    if unknown:
        raise InvalidRequestError(
            f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0]
        )
    split = body.get("split", "train")
    if split is not None and not isinstance(split, str):
        raise InvalidRequestError("'split' must be a string.", param="split")
    number = _version_number(version)
    record = await run_in_threadpool(
        lambda: services.datasets.export_to_file(dataset_id, version=number, split=split)
    )
    return _json(record.to_file_object())
