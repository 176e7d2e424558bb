"""``/v1/models``: the providers' models, the local embedding model and the fine-tuned students.

``DELETE /v1/models/{id}`` deletes a fine-tuned model (an ``ft:`` id distillery registered), as
OpenAI's ``models.delete`` does: it is no longer listed nor served (by this process at once; a
provider's own copy of a model it trained stays with that provider, and a local adapter's folder
stays on disk). A base model is a 403, an unknown id a 404.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from distillery.api.deps import ADMIN, INGEST, ServicesDep
from distillery.api.responses import json_response
from distillery.errors import NotFoundError, PermissionDeniedError
from distillery.services import Services
from distillery.weights import embedded_license, preparing
from distillery.wire.models import Model, ModelDeleted, ModelLoading

router = APIRouter(prefix="/v1/models", tags=["models"])

_LOCAL_EMBEDDING_LICENSE = "Apache-2.0"  # sentence-transformers/all-MiniLM-L6-v2


def _model_object(
    model_id: str, owned_by: str, created: int, base_model: str | None = None
) -> Model:
    """OpenAI's model object; an embedded model also says its licence and, while its weights
    are converted for the first use, ``status: "loading"`` with the current stage."""
    model = Model(id=model_id, created=created, owned_by=owned_by)
    terms = embedded_license(base_model or model_id)  # a fine-tune carries its base's terms
    if terms is not None:
        model.license = terms["license"]
        model.license_file = terms["terms"] or None
    stage = preparing().get(model_id)
    if stage is not None:
        model.status = "loading"
        model.loading = ModelLoading(stage=stage.task, completed=stage.completed, total=stage.total)
    return model


def _all_models(services: Services) -> list[Model]:
    data = [_model_object(m.id, m.owned_by, m.created) for m in services.providers.models()]
    for m in services.embeddings.models():
        local = _model_object(m.id, m.owned_by, m.created)
        local.license = _LOCAL_EMBEDDING_LICENSE
        data.append(local)
    listed = {m.id for m in data}
    data += [  # fine-tuned models (LoRA students and provider fine-tunes) from the store
        _model_object(m.id, m.provider, m.created_at, m.base_model)
        for m in services.fine_tuning.list_models()
        if m.id not in listed
    ]
    return data


def _with_terms(services: Services, models: list[Model]) -> list[Model]:
    """A teacher's terms from the config, a student's from its lineage (``terms`` absent when
    neither says)."""
    for m in models:
        m.terms = services.config.terms_of(m.id) or services.lineage.terms_status(m.id)
    return models


@router.get("", dependencies=[INGEST])
async def list_models(services: ServicesDep) -> Response:
    models = await run_in_threadpool(lambda: _with_terms(services, _all_models(services)))
    return json_response({"object": "list", "data": [m.to_wire() for m in models]})


def _find(services: Services, model_id: str) -> Model:
    for m in services.providers.models():
        if m.id == model_id:
            return _model_object(m.id, m.owned_by, m.created)
    for m in services.embeddings.models():
        if m.id == model_id:
            local = _model_object(m.id, m.owned_by, m.created)
            local.license = _LOCAL_EMBEDDING_LICENSE
            return local
    tuned = services.fine_tuning.get_model(model_id)
    if tuned is not None:
        return _model_object(tuned.id, tuned.provider, tuned.created_at, tuned.base_model)
    try:
        provider = services.providers.route(model_id)
    except NotFoundError:
        raise _not_found(model_id) from None
    return _model_object(model_id, provider.name, 0)


def _not_found(model_id: str) -> NotFoundError:
    return NotFoundError(
        f"The model '{model_id}' does not exist", param="model", code="model_not_found"
    )


@router.get("/{model_id:path}", dependencies=[INGEST])
async def retrieve_model(model_id: str, services: ServicesDep) -> Response:
    found = await run_in_threadpool(lambda: _with_terms(services, [_find(services, model_id)]))
    return json_response(found[0].to_wire())


def _delete(services: Services, model_id: str) -> ModelDeleted:
    if services.fine_tuning.delete_model(model_id):
        services.providers.retire(model_id)
        return ModelDeleted(id=model_id, deleted=True)
    _find(services, model_id)  # 404 unless it is a model served here
    raise PermissionDeniedError(
        f"You do not have permission to delete the model '{model_id}': only fine-tuned models "
        "(ft:...) can be deleted.",
        param="model",
        code="insufficient_permissions",
    )


@router.delete("/{model_id:path}", dependencies=[ADMIN])
async def delete_model(model_id: str, services: ServicesDep) -> Response:
    return json_response((await run_in_threadpool(_delete, services, model_id)).to_wire())
