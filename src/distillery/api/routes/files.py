"""``/v1/files``: upload, list, retrieve, download and delete files (OpenAI's Files API)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import FileResponse, Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.errors import InvalidRequestError, PayloadTooLargeError

router = APIRouter(prefix="/v1/files", tags=["files"])

_MULTIPART_OVERHEAD = 64 * 1024


@router.post("", dependencies=[ADMIN])
async def create_file(request: Request, services: ServicesDep) -> Response:
    limit = services.config.files.max_file_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise PayloadTooLargeError(
            f"The file is larger than the limit of {limit} bytes (files.max_file_bytes).",
            param="file",
            code="file_too_large",
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError(
            "Upload files as multipart/form-data with the fields 'file' and 'purpose'.",
            param="file",
        )
    try:
        form = await request.form(max_files=1, max_fields=16)
    except Exception as exc:  # malformed multipart bodies
        raise InvalidRequestError(
            f"Could not parse the multipart body: {exc}", param="file"
        ) from exc
    try:
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("Missing required parameter: 'file'.", param="file")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequestError("Missing required parameter: 'purpose'.", param="purpose")
        record = await run_in_threadpool(
            services.files.create, upload.file, filename=upload.filename, purpose=purpose
        )
    finally:
        await form.close()
    return _json(record.to_file_object())


@router.get("", dependencies=[ADMIN])
async def list_files(
    services: ServicesDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = Query(default=10_000, ge=1, le=10_000),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    page = services.files.list(purpose=purpose, after=after, limit=limit, order=order)
    data = [f.to_file_object() for f in page.data]
    return _json(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )


@router.get("/{file_id}", dependencies=[ADMIN])
async def retrieve_file(file_id: str, services: ServicesDep) -> Response:
    return _json(services.files.get(file_id).to_file_object())


@router.get("/{file_id}/content", dependencies=[ADMIN])
async def retrieve_file_content(file_id: str, services: ServicesDep) -> Response:
    path = services.files.path(file_id)
    return FileResponse(path, media_type="application/octet-stream")


@router.delete("/{file_id}", dependencies=[ADMIN])
async def delete_file(file_id: str, services: ServicesDep) -> Response:
    record = await run_in_threadpool(services.files.delete, file_id)
    return _json({"id": record.id, "object": "file", "deleted": True})
