"""The OpenAPI document of the API (``GET /openapi.json``), written in this one place.

The routes read their bodies themselves (bounded reads, OpenAI-style 400s with ``param``: see
``api/responses.py``), so FastAPI sees no body and no response model. ``document`` starts from
FastAPI's document (paths, query and path parameters) and fills in, per operation:

- the request body: a JSON schema from the pydantic model that validates it where one exists
  (``QueueSpec``, ``RouteSpec``...), else the documented shape in ``distillery.wire`` (a
  fine-tuning job's in ``training.job_wire``, beside the code that checks and builds it);
  ``POST /v1/files`` is ``multipart/form-data``;
- the answer: the wire model of the object, inside the cursor-list envelope for lists;
- the error statuses the operation can answer, each with the ``ErrorResponse`` envelope: 400
  for every operation (parameters, the ``Host`` check), 401 and 403 where a key is required,
  404 with a path parameter or an ``after`` cursor, 413 with a body, 415 with a JSON body, and
  those ``OPERATIONS`` adds (409 for a conflict, the provider's 429/502/503/504 on the gateway).
  FastAPI's 422 is dropped: validation errors are answered as OpenAI's 400s (``api/errors.py``);
- the ``bearerAuth`` (HTTP bearer) security requirement on the operations behind ``ADMIN`` or
  ``INGEST``.

An operation missing from ``OPERATIONS`` (a new route) still gets the generic part: its errors,
its security and, for a POST, an optional JSON object body.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from distillery.annotations.service import ItemUpdate, QueueSpec
from distillery.curation.plan import SynthesisSpec
from distillery.curation.relabel import RelabelSpec
from distillery.datasets.service import DatasetSpec, ImportSpec
from distillery.distill.pipeline import DistillOptions
from distillery.evals.calibration import CalibrationSpec
from distillery.routing.spec import RouteSpec
from distillery.training.job_wire import (
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    JobCreateParams,
)
from distillery.wire.chat import (
    ChatCompletion,
    ChatCompletionCreateParams,
    ChatCompletionDeleted,
    ChatCompletionUpdateParams,
)
from distillery.wire.chat_store import ChatCompletionStoreMessage
from distillery.wire.completions import Completion, CompletionCreateParams
from distillery.wire.embeddings import CreateEmbeddingResponse, EmbeddingCreateParams
from distillery.wire.errors import ErrorResponse
from distillery.wire.evals import (
    Eval,
    EvalCreateParams,
    EvalDeleteResponse,
    EvalRun,
    EvalRunOutputItem,
    EvalUpdateParams,
    RunCreateParams,
    RunDeleteResponse,
)
from distillery.wire.files import FileCreateParams, FileDeleted, FileObject
from distillery.wire.graders import (
    GraderRunParams,
    GraderRunResponse,
    GraderValidateParams,
    GraderValidateResponse,
)
from distillery.wire.models import Model, ModelDeleted
from distillery.wire.resources import (
    AnnotationItem,
    AnnotationQueue,
    ClaimParams,
    CostsReport,
    Dataset,
    DatasetDeleted,
    DatasetExportParams,
    DatasetItem,
    DatasetVersion,
    Distillation,
    EvalComparison,
    JudgeCalibration,
    ModelLineage,
    Route,
    RouteDeleted,
    RouteEvent,
    RouteGate,
    RoutePromoteParams,
    RouteRollbackParams,
    RouteStats,
    RouteTimeline,
    SelfConsistencyParams,
)
from distillery.wire.responses import (
    Response,
    ResponseCreateParams,
    ResponseDeleted,
    ResponseItem,
)

SECURITY_SCHEME = "bearerAuth"
ERROR_SCHEMA = "ErrorResponse"

_REASONS = {
    400: "Invalid request (OpenAI's `invalid_request_error`, `param` names the field).",
    401: "No API key, or an unknown one (`[server] auth` on).",
    403: "The key's scope does not allow this call, or the request came from another site.",
    404: "Not found.",
    409: "Conflict with the current state (a stale version, a name taken, a refused gate).",
    413: "The request body is larger than the limit.",
    415: "The request body is not JSON.",
    429: "Rate limited (by the provider).",
    502: "The provider failed or could not be reached.",
    503: "The database or the capture writer is unavailable.",
    504: "The provider did not answer in time.",
}
_PROXY = (404, 429, 502, 503, 504)  # a call answered by a provider


class DatasetCreateParams(DatasetSpec):
    """``POST /v1/distillery/datasets``: a name, and how to build the version (``DatasetSpec``)."""

    name: str = Field(min_length=1)
    description: str | None = None
    metadata: dict[str, Any] | None = None


class DatasetImportParams(ImportSpec):
    """``POST /v1/distillery/datasets/import``: a name and the uploaded JSONL's ``file_id``."""

    name: str = Field(min_length=1)
    file_id: str = Field(min_length=1)
    description: str | None = None
    metadata: dict[str, Any] | None = None


class RouteCreateParams(RouteSpec):
    """``POST /v1/distillery/routes``: the route; ``force`` passes a refused gate (recorded)."""

    force: bool = False


@dataclass(frozen=True)
class Doc:
    """What FastAPI cannot see of one operation."""

    body: type[BaseModel] | None = None  # the JSON body (a form with ``form``)
    form: bool = False  # multipart/form-data
    body_required: bool = True  # False: an empty body reads as ``{}``
    returns: type[BaseModel] | None = None
    page: bool = False  # ``returns`` inside the list envelope
    cursor: bool = True  # the list has ``first_id``, ``last_id`` and ``has_more``
    media: str | None = None  # a download: its media type instead of JSON
    stream: bool = False  # ``stream: true`` answers server-sent events
    errors: tuple[int, ...] = ()  # beyond the generic ones
    bodiless: bool = False  # a POST that reads no body


OPERATIONS: dict[str, Doc] = {
    # chat completions: the gateway and the stored completions
    "POST /v1/chat/completions": Doc(
        ChatCompletionCreateParams, returns=ChatCompletion, stream=True, errors=_PROXY
    ),
    "GET /v1/chat/completions": Doc(returns=ChatCompletion, page=True),
    "GET /v1/chat/completions/{completion_id}": Doc(returns=ChatCompletion),
    "POST /v1/chat/completions/{completion_id}": Doc(
        ChatCompletionUpdateParams, returns=ChatCompletion
    ),
    "DELETE /v1/chat/completions/{completion_id}": Doc(returns=ChatCompletionDeleted),
    "GET /v1/chat/completions/{completion_id}/messages": Doc(
        returns=ChatCompletionStoreMessage, page=True
    ),
    "POST /v1/completions": Doc(
        CompletionCreateParams, returns=Completion, stream=True, errors=_PROXY
    ),
    "POST /v1/embeddings": Doc(
        EmbeddingCreateParams, returns=CreateEmbeddingResponse, errors=_PROXY
    ),
    # the Responses API
    "POST /v1/responses": Doc(ResponseCreateParams, returns=Response, stream=True, errors=_PROXY),
    "GET /v1/responses/{response_id}": Doc(returns=Response),
    "DELETE /v1/responses/{response_id}": Doc(returns=ResponseDeleted),
    "GET /v1/responses/{response_id}/input_items": Doc(returns=ResponseItem, page=True),
    # models
    "GET /v1/models": Doc(returns=Model, page=True, cursor=False),
    "GET /v1/models/{model_id}": Doc(returns=Model),
    "DELETE /v1/models/{model_id}": Doc(returns=ModelDeleted),
    # files
    "POST /v1/files": Doc(FileCreateParams, form=True, returns=FileObject),
    "GET /v1/files": Doc(returns=FileObject, page=True),
    "GET /v1/files/{file_id}": Doc(returns=FileObject),
    "GET /v1/files/{file_id}/content": Doc(media="application/octet-stream"),
    "DELETE /v1/files/{file_id}": Doc(returns=FileDeleted),
    # fine-tuning
    "POST /v1/fine_tuning/jobs": Doc(JobCreateParams, returns=FineTuningJob, errors=(404,)),
    "GET /v1/fine_tuning/jobs": Doc(returns=FineTuningJob, page=True),
    "GET /v1/fine_tuning/jobs/{job_id}": Doc(returns=FineTuningJob),
    "POST /v1/fine_tuning/jobs/{job_id}/cancel": Doc(
        returns=FineTuningJob, bodiless=True, errors=(409,)
    ),
    "GET /v1/fine_tuning/jobs/{job_id}/events": Doc(returns=FineTuningJobEvent, page=True),
    "GET /v1/fine_tuning/jobs/{job_id}/checkpoints": Doc(
        returns=FineTuningJobCheckpoint, page=True
    ),
    "POST /v1/fine_tuning/alpha/graders/run": Doc(GraderRunParams, returns=GraderRunResponse),
    "POST /v1/fine_tuning/alpha/graders/validate": Doc(
        GraderValidateParams, returns=GraderValidateResponse
    ),
    # evals
    "POST /v1/evals": Doc(EvalCreateParams, returns=Eval, errors=(404,)),
    "GET /v1/evals": Doc(returns=Eval, page=True),
    "GET /v1/evals/{eval_id}": Doc(returns=Eval),
    "POST /v1/evals/{eval_id}": Doc(EvalUpdateParams, returns=Eval),
    "DELETE /v1/evals/{eval_id}": Doc(returns=EvalDeleteResponse),
    "POST /v1/evals/{eval_id}/runs": Doc(RunCreateParams, returns=EvalRun),
    "GET /v1/evals/{eval_id}/runs": Doc(returns=EvalRun, page=True),
    "GET /v1/evals/{eval_id}/runs/{run_id}": Doc(returns=EvalRun),
    "POST /v1/evals/{eval_id}/runs/{run_id}": Doc(returns=EvalRun, bodiless=True),
    "POST /v1/evals/{eval_id}/runs/{run_id}/cancel": Doc(returns=EvalRun, bodiless=True),
    "DELETE /v1/evals/{eval_id}/runs/{run_id}": Doc(returns=RunDeleteResponse),
    "GET /v1/evals/{eval_id}/runs/{run_id}/output_items": Doc(returns=EvalRunOutputItem, page=True),
    "GET /v1/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}": Doc(
        returns=EvalRunOutputItem
    ),
    "GET /v1/distillery/eval_comparisons": Doc(returns=EvalComparison, errors=(404,)),
    "POST /v1/distillery/eval_comparisons/self_consistency": Doc(
        SelfConsistencyParams, returns=EvalRun, errors=(404,)
    ),
    "POST /v1/distillery/judge_calibrations": Doc(
        CalibrationSpec, returns=JudgeCalibration, errors=(404,)
    ),
    # datasets
    "POST /v1/distillery/datasets": Doc(DatasetCreateParams, returns=Dataset, errors=(404, 409)),
    "POST /v1/distillery/datasets/import": Doc(
        DatasetImportParams, returns=Dataset, errors=(404, 409)
    ),
    "POST /v1/distillery/datasets/{dataset_id}/synthesize": Doc(
        SynthesisSpec, returns=Dataset, errors=(404, 409)
    ),
    "POST /v1/distillery/relabels": Doc(RelabelSpec, errors=(404, 409)),
    "GET /v1/distillery/datasets": Doc(returns=Dataset, page=True),
    "GET /v1/distillery/datasets/{dataset_id}": Doc(returns=Dataset),
    "DELETE /v1/distillery/datasets/{dataset_id}": Doc(returns=DatasetDeleted),
    "POST /v1/distillery/datasets/{dataset_id}/versions": Doc(
        DatasetSpec, body_required=False, returns=DatasetVersion, errors=(409,)
    ),
    "GET /v1/distillery/datasets/{dataset_id}/versions": Doc(returns=DatasetVersion, page=True),
    "GET /v1/distillery/datasets/{dataset_id}/versions/{version}": Doc(returns=DatasetVersion),
    "GET /v1/distillery/datasets/{dataset_id}/versions/{version}/items": Doc(
        returns=DatasetItem, page=True
    ),
    "GET /v1/distillery/datasets/{dataset_id}/versions/{version}/content": Doc(
        media="application/jsonl"
    ),
    "POST /v1/distillery/datasets/{dataset_id}/versions/{version}/export": Doc(
        DatasetExportParams, body_required=False, returns=FileObject
    ),
    "GET /v1/distillery/completions/{completion_id}/datasets": Doc(
        returns=DatasetVersion, page=True
    ),
    "GET /v1/distillery/models/{model_id}/lineage": Doc(returns=ModelLineage),
    "GET /v1/distillery/models/{model_id}/export": Doc(media="application/octet-stream"),
    # annotation queues
    "POST /v1/distillery/annotation_queues": Doc(QueueSpec, returns=AnnotationQueue, errors=(404,)),
    "GET /v1/distillery/annotation_queues": Doc(returns=AnnotationQueue, page=True),
    "GET /v1/distillery/annotation_queues/{queue_id}": Doc(returns=AnnotationQueue),
    "GET /v1/distillery/annotation_queues/{queue_id}/items": Doc(returns=AnnotationItem, page=True),
    "POST /v1/distillery/annotation_queues/{queue_id}/claim": Doc(
        ClaimParams, body_required=False, returns=AnnotationItem
    ),
    "GET /v1/distillery/annotation_queues/{queue_id}/items/{item_id}": Doc(returns=AnnotationItem),
    "POST /v1/distillery/annotation_queues/{queue_id}/items/{item_id}": Doc(
        ItemUpdate, returns=AnnotationItem, errors=(409,)
    ),
    # routes
    "POST /v1/distillery/routes": Doc(RouteCreateParams, returns=Route, errors=(404, 409)),
    "GET /v1/distillery/routes": Doc(returns=Route, page=True),
    "GET /v1/distillery/routes/{route_id}": Doc(returns=Route),
    "POST /v1/distillery/routes/{route_id}": Doc(body_required=False, returns=Route, errors=(409,)),
    "DELETE /v1/distillery/routes/{route_id}": Doc(returns=RouteDeleted),
    "POST /v1/distillery/routes/{route_id}/promote": Doc(
        RoutePromoteParams, body_required=False, returns=Route, errors=(409,)
    ),
    "POST /v1/distillery/routes/{route_id}/rollback": Doc(
        RouteRollbackParams, body_required=False, returns=Route, errors=(409,)
    ),
    "GET /v1/distillery/routes/{route_id}/gate": Doc(returns=RouteGate),
    "GET /v1/distillery/routes/{route_id}/events": Doc(returns=RouteEvent, page=True),
    "GET /v1/distillery/routes/{route_id}/stats": Doc(returns=RouteStats),
    "GET /v1/distillery/routes/{route_id}/timeline": Doc(returns=RouteTimeline),
    # distillations: a prompt's traffic to a gated student
    "POST /v1/distillery/distillations": Doc(DistillOptions, returns=Distillation, errors=(404,)),
    "GET /v1/distillery/distillations": Doc(returns=Distillation, page=True),
    "GET /v1/distillery/distillations/{distillation_id}": Doc(returns=Distillation),
    "POST /v1/distillery/distillations/{distillation_id}/cancel": Doc(
        bodiless=True, returns=Distillation, errors=(409,)
    ),
    # costs
    "GET /v1/distillery/costs": Doc(returns=CostsReport),
}

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_schema(item: dict[str, Any], *, cursor: bool) -> dict[str, Any]:
    """OpenAI's list envelope (``wire.base.list_object``) around ``item``."""
    properties: dict[str, Any] = {
        "object": {"const": "list", "type": "string"},
        "data": {"type": "array", "items": item},
    }
    required = ["object", "data"]
    if cursor:
        properties |= {
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"},
        }
        required += ["first_id", "last_id", "has_more"]
    return {"type": "object", "properties": properties, "required": required}


def _schemas() -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """Each documented model's ``$ref`` and the component schemas they need."""
    models: list[type[BaseModel]] = [ErrorResponse]
    for doc in OPERATIONS.values():
        models += [m for m in (doc.body, doc.returns) if m is not None and m not in models]
    refs, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    return {m: refs[(m, "validation")] for m in models}, top.get("$defs", {})


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route, also inside included routers (FastAPI keeps an included router whole,
    as its ``original_router``)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


def _requires_key(route: APIRoute) -> bool:
    from distillery.api.deps import ADMIN, INGEST

    gates = {ADMIN.dependency, INGEST.dependency}
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if dependant.call in gates:
            return True
        pending += dependant.dependencies
    return False


def _error(status: int) -> dict[str, Any]:
    return {
        "description": _REASONS.get(status, "Error."),
        "content": {_JSON: {"schema": _ref(ERROR_SCHEMA)}},
    }


@dataclass(frozen=True)
class Operation:
    """One operation as documented: its ``Doc`` (None: not in ``OPERATIONS``), whether a key
    is required, its request body's media type (None: no body) and its error statuses."""

    doc: Doc | None
    keyed: bool
    body_media: str | None
    errors: tuple[int, ...]

    @property
    def body_name(self) -> str | None:
        """The request body's schema name (``object`` for an undescribed body)."""
        if self.body_media is None:
            return None
        return self.doc.body.__name__ if self.doc and self.doc.body else "object"

    @property
    def answer_name(self) -> str:
        """What a success answers: a schema name, a list of one, or a download's media type."""
        doc = self.doc
        if doc is not None and doc.media is not None:
            return doc.media
        if doc is None or doc.returns is None:
            return "object"
        name = doc.returns.__name__
        name = f"list of {name}" if doc.page else name
        return f"{name} (or SSE with stream)" if doc.stream else name


def describe(route: APIRoute, method: str) -> Operation:
    """How ``method`` on ``route`` is documented (the same for the document and ``api.md``)."""
    doc = OPERATIONS.get(f"{method.upper()} {route.path_format}")
    keyed = _requires_key(route)
    media: str | None = None
    if doc is not None and doc.body is not None:
        media = "multipart/form-data" if doc.form else _JSON
    elif method.lower() == "post" and not (doc and doc.bodiless):  # some JSON object, or none
        media = _JSON
    statuses = {400, *(doc.errors if doc else ())}
    if keyed:
        statuses |= {401, 403}
    cursor = any(p.name == "after" for p in route.dependant.query_params)
    if route.dependant.path_params or cursor:  # a path id, or an ``after`` cursor, unknown
        statuses.add(404)
    if media is not None:
        statuses.add(413)
        if media == _JSON:
            statuses.add(415)
    return Operation(doc, keyed, media, tuple(sorted(statuses)))


def _document_operation(
    operation: dict[str, Any], described: Operation, refs: dict[type[BaseModel], dict[str, Any]]
) -> None:
    doc = described.doc
    if described.body_media is not None:
        schema = refs[doc.body] if doc and doc.body else {"type": "object"}
        operation["requestBody"] = {
            "required": bool(doc and doc.body and doc.body_required),
            "content": {described.body_media: {"schema": schema}},
        }

    ok: dict[str, Any] = {"description": "Successful Response"}
    if doc is not None and doc.media is not None:
        ok["content"] = {doc.media: {"schema": {"type": "string", "format": "binary"}}}
    elif doc is not None and doc.returns is not None:
        answer = refs[doc.returns]
        if doc.page:
            answer = _list_schema(answer, cursor=doc.cursor)
        ok["content"] = {_JSON: {"schema": answer}}
        if doc.stream:
            ok["description"] += " (with `stream: true`, server-sent events of chunks)"
            ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    else:
        ok["content"] = {_JSON: {"schema": {"type": "object"}}}
    responses: dict[str, Any] = {"200": ok}
    responses |= {str(status): _error(status) for status in described.errors}
    operation["responses"] = responses
    if described.keyed:
        operation["security"] = [{SECURITY_SCHEME: []}]


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (see the module's docstring)."""
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    refs, schemas = _schemas()
    routes = {
        (method.lower(), route.path_format): route
        for route in _api_routes(app.routes)
        for method in route.methods or ()
    }
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            route = routes.get((method, path))
            if route is None:
                continue
            _document_operation(operation, describe(route, method), refs)
    components = spec.setdefault("components", {})
    kept = {
        name: schema
        for name, schema in components.get("schemas", {}).items()
        if name not in ("HTTPValidationError", "ValidationError")
    }
    components["schemas"] = kept | schemas
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`distillery keys create`), required when `[server] auth` "
            "is on; `admin` keys may call everything, `ingest` keys the gateway routes.",
        }
    }
    return spec


def install(app: FastAPI) -> None:
    """Serve :func:`document` as the app's ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
