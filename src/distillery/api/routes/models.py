"""``/v1/models``: the providers' models and the fine-tuned students."""

from __future__ import annotations

from fastapi import APIRouter

from distillery.api.deps import INGEST, ServicesDep
from distillery.errors import NotFoundError
from distillery.weights import embedded_license, preparing

router = APIRouter(prefix="/v1/models", tags=["models"])


def _model_object(
    model_id: str, owned_by: str, created: int, base_model: str | None = None
) -> dict[str, object]:
    """OpenAI's model object; an embedded student also says its licence and, while its weights
    are converted for the first use, ``status: "loading"`` with the current stage."""
    out: dict[str, object] = {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": owned_by,
    }
    terms = embedded_license(base_model or model_id)  # a fine-tune carries its base's terms
    if terms is not None:
        out["license"] = terms["license"]
        if terms["terms"]:
            out["license_file"] = terms["terms"]
    stage = preparing().get(model_id)
    if stage is not None:
        out["status"] = "loading"
        out["loading"] = {"stage": stage.task, "completed": stage.completed, "total": stage.total}
    return out


@router.get("", dependencies=[INGEST])
async def list_models(services: ServicesDep) -> dict[str, object]:
    data = [_model_object(m.id, m.owned_by, m.created) for m in services.providers.models()]
    listed = {m["id"] for m in data}
    data += [  # fine-tuned models (LoRA students and provider fine-tunes) from the store
        _model_object(m.id, m.provider, m.created_at, m.base_model)
        for m in services.fine_tuned_models.list()
        if m.id not in listed
    ]
    return {"object": "list", "data": data}


@router.get("/{model_id:path}", dependencies=[INGEST])
async def retrieve_model(model_id: str, services: ServicesDep) -> dict[str, object]:
    for m in services.providers.models():
        if m.id == model_id:
            return _model_object(m.id, m.owned_by, m.created)
    tuned = services.fine_tuned_models.get(model_id)
    if tuned is not None:
        return _model_object(tuned.id, tuned.provider, tuned.created_at, tuned.base_model)
    try:
        provider = services.providers.route(model_id)
    except NotFoundError:
        raise NotFoundError(
            f"The model '{model_id}' does not exist", param="model", code="model_not_found"
        ) from None
    return _model_object(model_id, provider.name, 0)
