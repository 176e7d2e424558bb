"""``/v1/evals`` shapes: the requests as in ``openai.types`` (``EvalCreateParams``,
``EvalUpdateParams``, ``evals.RunCreateParams``) and the objects as OpenAI's OpenAPI document
names them (``Eval``, ``EvalRun``, ``EvalRunOutputItem``; deletions as the SDK's
``EvalDeleteResponse`` and ``RunDeleteResponse``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from distillery.wire.base import WireModel

RunStatus = Literal["queued", "in_progress", "completed", "canceled", "failed"]


class EvalCreateParams(WireModel):
    name: str | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]


class EvalUpdateParams(WireModel):
    name: str | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)


class RunCreateParams(WireModel):
    name: str | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    data_source: dict[str, Any]


class Eval(WireModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["eval"] = "eval"
    name: str
    created_at: int
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]
    metadata: dict[str, str] | None


class EvalDeleteResponse(WireModel):
    object: Literal["eval.deleted"] = "eval.deleted"
    deleted: bool
    eval_id: str


class EvalRun(WireModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["eval.run"] = "eval.run"
    eval_id: str
    name: str
    model: str
    status: RunStatus
    created_at: int
    data_source: dict[str, Any]


class RunDeleteResponse(WireModel):
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: bool
    run_id: str


class EvalRunOutputItem(WireModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["eval.run.output_item"] = "eval.run.output_item"
    eval_id: str
    run_id: str
    created_at: int
    status: str
    datasource_item_id: int
    datasource_item: dict[str, Any]
    results: list[dict[str, Any]]
