"""``/v1/distillery/models/{id}/export``: a fine-tuned student in a form other tools load."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse

from distillery.api.deps import ADMIN, ServicesDep
from distillery.services import Services

router = APIRouter(prefix="/v1/distillery/models", tags=["models"])


def _archive(folder: Path, archive: str) -> Path:
    """``folder`` as one ``.tar`` or ``.zip`` beside it (built once: an export never changes)."""
    target = folder.with_name(f"{folder.name}.{archive}")
    if not target.is_file():
        tmp = folder.with_name(f".{folder.name}.{archive}.tmp")
        built = shutil.make_archive(
            str(tmp),
            "tar" if archive == "tar" else "zip",
            root_dir=folder.parent,
            base_dir=folder.name,
        )
        Path(built).rename(target)
    return target


def _export(services: Services, model_id: str, fmt: str, gguf_type: str, archive: str) -> Path:
    path = services.exports.export(model_id, fmt, gguf_type=gguf_type)
    return path if path.is_file() else _archive(path, archive)


@router.get("/{model_id}/export", dependencies=[ADMIN])
async def export_model(
    model_id: str,
    services: ServicesDep,
    format: str = Query("merged", description="peft, merged or gguf"),
    gguf_type: str = Query("f16", description="f32, f16, bf16 or q8_0 (format=gguf)"),
    archive: Literal["tar", "zip"] = Query("tar", description="how a folder is sent"),
) -> FileResponse:
    """Download a fine-tuned model: the PEFT adapter folder, a merged transformers folder (a tar
    or zip), or one GGUF file."""
    path = await run_in_threadpool(_export, services, model_id, format, gguf_type, archive)
    media = {".tar": "application/x-tar", ".zip": "application/zip"}.get(
        path.suffix, "application/octet-stream"
    )
    name = path.name if path.suffix == ".gguf" else f"{path.parent.name}-{path.name}"
    return FileResponse(path, media_type=media, filename=name)
