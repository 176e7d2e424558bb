"""``/v1/files``: upload, list, retrieve, download and delete files (OpenAI's Files API)."""

from __future__ import annotations

import codecs
from collections.abc import AsyncGenerator
from typing import Literal

import python_multipart
from fastapi import APIRouter, Query, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, Response

from distillery.api.deps import ADMIN, ServicesDep
from distillery.api.responses import json_response as _json
from distillery.api.responses import list_response
from distillery.errors import InvalidRequestError, PayloadTooLargeError

router = APIRouter(prefix="/v1/files", tags=["files"])

_MULTIPART_OVERHEAD = 64 * 1024
# room for a long file name in a part's headers (python-multipart allows 4 KiB, which answered an
# opaque 400); FilesService keeps at most 255 characters of it
_MAX_PART_HEADER = 64 * 1024


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The file is larger than the limit of {limit} bytes (files.max_file_bytes).",
        param="file",
        code="file_too_large",
    )


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body as it streams in, cut off with a 413 past ``limit`` bytes (a chunked upload
    never declared its size: it is refused as soon as it is too large, not once spooled)."""
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + _MULTIPART_OVERHEAD:
                raise _too_large(limit)
            yield chunk
    except ClientDisconnect:
        raise InvalidRequestError("The client disconnected during the upload.") from None


class _UploadParser(MultiPartParser):
    """Starlette's multipart parser, with part headers of up to ``_MAX_PART_HEADER`` bytes."""

    async def parse(self) -> FormData:
        _, params = parse_options_header(self.headers["Content-Type"])
        charset = params.get(b"charset", b"utf-8")
        try:
            self._charset = codecs.lookup(charset.decode("latin-1")).name
        except LookupError:
            self._charset = "latin-1"
        boundary = params.get(b"boundary")
        if not boundary:
            raise MultiPartException("Missing boundary in multipart.")
        callbacks = {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }
        try:
            parser = python_multipart.MultipartParser(
                boundary,
                callbacks,  # type: ignore[arg-type]
                max_header_size=_MAX_PART_HEADER,
            )
            async for chunk in self.stream:
                parser.write(chunk)
                for part, data in self._file_parts_to_write:
                    assert part.file is not None
                    await part.file.write(data)
                for part in self._file_parts_to_finish:
                    assert part.file is not None
                    await part.file.seek(0)
                self._file_parts_to_write.clear()
                self._file_parts_to_finish.clear()
            parser.finalize()
        except BaseException as exc:  # a too-large or broken body: drop what was spooled
            for file in self._files_to_close_on_error:
                file.close()
            if isinstance(exc, FormParserError):
                raise MultiPartException(f"Invalid multipart data: {exc}") from exc
            raise
        return FormData(self.items)


@router.post("", dependencies=[ADMIN])
async def create_file(request: Request, services: ServicesDep) -> Response:
    limit = services.config.files.max_file_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise _too_large(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError(
            "Upload files as multipart/form-data with the fields 'file' and 'purpose'.",
            param="file",
        )
    parser = _UploadParser(request.headers, _limited(request, limit), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except PayloadTooLargeError:
        raise
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
    return list_response(data, page.has_more)


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
