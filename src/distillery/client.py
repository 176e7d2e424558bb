"""The Evals API through the openai SDK, whatever the SDK does with ``client.evals``.

distillery answers OpenAI's Evals API (``/v1/evals``, runs, output items). The openai SDK marks
``client.evals`` deprecated (OpenAI shut its own Evals API down on 30 November 2026) and a later
major may remove it. Scripts written for it keep working against distillery:

    from openai import OpenAI
    import distillery.client

    client = distillery.client.wrap(OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="..."))
    ev = client.evals.create(name="router", data_source_config={...}, testing_criteria=[...])
    run = client.evals.runs.create(ev.id, data_source={...})
    for item in client.evals.runs.output_items.list(run.id, eval_id=ev.id):
        ...

``wrap`` gives the client an ``evals`` of this module's: the same methods and arguments as the
SDK's, sent with the SDK's own public ``get``/``post``/``delete``/``get_api_list`` (so the
client's base URL, key, retries and timeouts apply), answering the SDK's model types
(``openai.types.EvalCreateResponse``, ``openai.types.evals.RunRetrieveResponse``, ...) and its
auto-paginating ``SyncCursorPage``; no deprecation warning. Where an SDK no longer has those
types, the answers are ``EvalsObject``: the SDK's ``BaseModel`` with every field of the JSON
object as an attribute (nested objects as plain dicts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

import openai
from openai.pagination import SyncCursorPage

if TYPE_CHECKING:
    from openai.types import (
        EvalCreateResponse,
        EvalDeleteResponse,
        EvalListResponse,
        EvalRetrieveResponse,
        EvalUpdateResponse,
    )
    from openai.types.evals import (
        RunCancelResponse,
        RunCreateResponse,
        RunDeleteResponse,
        RunListResponse,
        RunRetrieveResponse,
    )
    from openai.types.evals.runs import OutputItemListResponse, OutputItemRetrieveResponse

__all__ = ["Evals", "EvalsObject", "OutputItems", "Runs", "wrap"]

Model = TypeVar("Model")
OpenAIClient = TypeVar("OpenAIClient", bound=openai.OpenAI)
Order = Literal["asc", "desc"]


class EvalsObject(openai.BaseModel):
    """An eval, run, output item or deletion where the SDK has no type for it any more.

    The SDK's ``BaseModel`` keeps every field of the answer (``ev.name``, ``run.status``);
    nested objects stay dicts (``run.result_counts["passed"]``).
    """

    object: str


def _sdk_type(module: str, name: str) -> type[Any]:
    """The SDK's model class ``module.name``, or ``EvalsObject`` where the SDK has none."""
    try:
        found = getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return EvalsObject
    return found if isinstance(found, type) else EvalsObject


_TYPES = "openai.types"
_RUN_TYPES = "openai.types.evals"
_ITEM_TYPES = "openai.types.evals.runs"
EvalObject = _sdk_type(_TYPES, "EvalCreateResponse")
EvalRetrieved = _sdk_type(_TYPES, "EvalRetrieveResponse")
EvalUpdated = _sdk_type(_TYPES, "EvalUpdateResponse")
EvalListed = _sdk_type(_TYPES, "EvalListResponse")
EvalDeleted = _sdk_type(_TYPES, "EvalDeleteResponse")
RunCreated = _sdk_type(_RUN_TYPES, "RunCreateResponse")
RunRetrieved = _sdk_type(_RUN_TYPES, "RunRetrieveResponse")
RunListed = _sdk_type(_RUN_TYPES, "RunListResponse")
RunCanceled = _sdk_type(_RUN_TYPES, "RunCancelResponse")
RunDeleted = _sdk_type(_RUN_TYPES, "RunDeleteResponse")
ItemListed = _sdk_type(_ITEM_TYPES, "OutputItemListResponse")
ItemRetrieved = _sdk_type(_ITEM_TYPES, "OutputItemRetrieveResponse")


def _path(*parts: str) -> str:
    for part in parts[1::2]:
        if not part:
            raise ValueError("expected a non-empty id in the evals path")
    return "/".join(quote(part, safe="") if i % 2 else part for i, part in enumerate(parts))


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters or a body: what was given (``None`` means not given)."""
    return {key: value for key, value in values.items() if value is not None}


class _Resource:
    def __init__(self, client: openai.OpenAI) -> None:
        self._client = client

    def _get(self, path: str, cast_to: type[Model]) -> Model:
        return self._client.get(path, cast_to=cast_to)

    def _post(self, path: str, cast_to: type[Model], body: Mapping[str, Any]) -> Model:
        return self._client.post(path, cast_to=cast_to, body=dict(body))

    def _delete(self, path: str, cast_to: type[Model]) -> Model:
        return self._client.delete(path, cast_to=cast_to)

    def _list(self, path: str, model: type[Model], **query: Any) -> SyncCursorPage[Model]:
        return self._client.get_api_list(
            path,
            model=model,
            page=SyncCursorPage[model],  # type: ignore[valid-type]
            options={"params": _params(**query)},
        )


class OutputItems(_Resource):
    """``/v1/evals/{eval_id}/runs/{run_id}/output_items``: what each data item got."""

    def list(
        self,
        run_id: str,
        *,
        eval_id: str,
        after: str | None = None,
        limit: int | None = None,
        order: Order | None = None,
        status: Literal["fail", "pass"] | None = None,
    ) -> SyncCursorPage[OutputItemListResponse]:
        path = _path("/evals", eval_id, "runs", run_id, "output_items")
        return self._list(path, ItemListed, after=after, limit=limit, order=order, status=status)

    def retrieve(
        self, output_item_id: str, *, eval_id: str, run_id: str
    ) -> OutputItemRetrieveResponse:
        path = _path("/evals", eval_id, "runs", run_id, "output_items", output_item_id)
        return self._get(path, ItemRetrieved)  # type: ignore[no-any-return]


class Runs(_Resource):
    """``/v1/evals/{eval_id}/runs``: an eval run over stored data or a model's fresh answers."""

    @property
    def output_items(self) -> OutputItems:
        return OutputItems(self._client)

    def create(
        self,
        eval_id: str,
        *,
        data_source: Mapping[str, Any],
        metadata: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> RunCreateResponse:
        body = _params(data_source=data_source, metadata=metadata, name=name)
        return self._post(_path("/evals", eval_id, "runs"), RunCreated, body)  # type: ignore[no-any-return]

    def retrieve(self, run_id: str, *, eval_id: str) -> RunRetrieveResponse:
        return self._get(_path("/evals", eval_id, "runs", run_id), RunRetrieved)  # type: ignore[no-any-return]

    def list(
        self,
        eval_id: str,
        *,
        after: str | None = None,
        limit: int | None = None,
        order: Order | None = None,
        status: Literal["queued", "in_progress", "completed", "canceled", "failed"] | None = None,
    ) -> SyncCursorPage[RunListResponse]:
        path = _path("/evals", eval_id, "runs")
        return self._list(path, RunListed, after=after, limit=limit, order=order, status=status)

    def cancel(self, run_id: str, *, eval_id: str) -> RunCancelResponse:
        path = _path("/evals", eval_id, "runs", run_id, "cancel")
        return self._post(path, RunCanceled, {})  # type: ignore[no-any-return]

    def delete(self, run_id: str, *, eval_id: str) -> RunDeleteResponse:
        return self._delete(_path("/evals", eval_id, "runs", run_id), RunDeleted)  # type: ignore[no-any-return]


class Evals(_Resource):
    """``/v1/evals``: an eval's data source and testing criteria (graders)."""

    @property
    def runs(self) -> Runs:
        return Runs(self._client)

    def create(
        self,
        *,
        data_source_config: Mapping[str, Any],
        testing_criteria: Iterable[Mapping[str, Any]],
        metadata: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> EvalCreateResponse:
        body = _params(
            data_source_config=data_source_config,
            testing_criteria=[dict(criterion) for criterion in testing_criteria],
            metadata=metadata,
            name=name,
        )
        return self._post("/evals", EvalObject, body)  # type: ignore[no-any-return]

    def retrieve(self, eval_id: str) -> EvalRetrieveResponse:
        return self._get(_path("/evals", eval_id), EvalRetrieved)  # type: ignore[no-any-return]

    def update(
        self, eval_id: str, *, metadata: Mapping[str, str] | None = None, name: str | None = None
    ) -> EvalUpdateResponse:
        body = _params(metadata=metadata, name=name)
        return self._post(_path("/evals", eval_id), EvalUpdated, body)  # type: ignore[no-any-return]

    def list(
        self,
        *,
        after: str | None = None,
        limit: int | None = None,
        order: Order | None = None,
        order_by: Literal["created_at", "updated_at"] | None = None,
    ) -> SyncCursorPage[EvalListResponse]:
        return self._list(
            "/evals", EvalListed, after=after, limit=limit, order=order, order_by=order_by
        )

    def delete(self, eval_id: str) -> EvalDeleteResponse:
        return self._delete(_path("/evals", eval_id), EvalDeleted)  # type: ignore[no-any-return]


def wrap(client: OpenAIClient) -> OpenAIClient:
    """``client`` with this module's ``evals`` (the same client object, returned for chaining).

    The SDK's ``evals`` is a cached property; the instance attribute set here takes its place,
    and is there too when an SDK no longer has ``evals`` at all. Clients the SDK derives later
    (``client.with_options(...)``, ``client.copy()``) are plain SDK clients: wrap them too.
    """
    vars(client)["evals"] = Evals(client)
    return client
