"""The objects of distillery's own resources (``/v1/distillery/...``), as documented in the
OpenAPI document: each says its ``object`` and the fields a client relies on; the views that
build them (``DatasetsService.dataset_view``, ``RoutesService.to_object``...) may add more."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict

from distillery.wire.base import WireModel
from distillery.wire.route_modes import PromoteTarget, RollbackTarget, RouteMode


class _Object(WireModel):
    model_config = ConfigDict(extra="allow")


class DatasetVersion(_Object):
    id: str
    object: Literal["distillery.dataset.version"] = "distillery.dataset.version"
    dataset_id: str
    version: int
    created_at: int | None = None


class Dataset(_Object):
    id: str
    object: Literal["distillery.dataset"] = "distillery.dataset"
    name: str
    description: str | None
    created_at: int
    metadata: dict[str, Any] | None
    latest_version: int | None
    version: DatasetVersion | None = None


class DatasetItem(_Object):
    id: str
    object: Literal["distillery.dataset.item"] = "distillery.dataset.item"
    version_id: str
    split: str
    completion_id: str | None
    corrected: bool
    example: dict[str, Any]


class DatasetDeleted(WireModel):
    id: str
    object: Literal["distillery.dataset.deleted"] = "distillery.dataset.deleted"
    deleted: bool


class AnnotationQueue(_Object):
    id: str
    object: Literal["distillery.annotation_queue"] = "distillery.annotation_queue"
    name: str
    created_at: int
    priority: str
    source: dict[str, Any]
    counts: dict[str, int]


class AnnotationItem(_Object):
    id: str
    object: Literal["distillery.annotation_item"] = "distillery.annotation_item"
    queue_id: str
    completion_id: str | None
    status: Literal["pending", "claimed", "accepted", "skipped"]
    version: int


class Route(_Object):
    id: str
    object: Literal["distillery.route"] = "distillery.route"
    created_at: int
    updated_at: int
    version: int
    name: str
    match: dict[str, Any]
    student: str
    mode: RouteMode


class RouteDeleted(WireModel):
    id: str
    object: Literal["distillery.route.deleted"] = "distillery.route.deleted"
    deleted: bool


class RouteEvent(_Object):
    id: str
    object: Literal["distillery.route.event"] = "distillery.route.event"
    created_at: int
    route_id: str
    type: str


class RouteGate(_Object):
    object: Literal["distillery.route_gate"] = "distillery.route_gate"
    route_id: str


class RouteStats(_Object):
    object: Literal["distillery.route_stats"] = "distillery.route_stats"
    route_id: str
    mode: str
    requests: int


class RouteTimeline(_Object):
    object: Literal["distillery.route_timeline"] = "distillery.route_timeline"
    route_id: str
    phases: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    marks: list[dict[str, Any]]
    truncated: bool


class CostsReport(_Object):
    object: Literal["distillery.costs_report"] = "distillery.costs_report"
    generated_at: int
    group_key: str
    since: int | None
    until: int | None
    by_model: list[dict[str, Any]]
    by_prompt: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    savings: list[dict[str, Any]]


class ModelLineage(_Object):
    object: Literal["distillery.model.lineage"] = "distillery.model.lineage"
    model: str
    base_model: str | None
    provider: str


class EvalComparison(_Object):
    object: Literal["distillery.eval_comparison"] = "distillery.eval_comparison"
    baseline_run_id: str
    runs: list[dict[str, Any]]


class JudgeCalibration(_Object):
    object: Literal["distillery.judge_calibration"] = "distillery.judge_calibration"
    queue_id: str
    labels: int
    graded: int


# -- the small request bodies of distillery's actions -------------------------------------------


class ClaimParams(WireModel):
    """``POST .../annotation_queues/{id}/claim``."""

    model_config = ConfigDict(extra="allow")

    reviewer: str


class DatasetExportParams(WireModel):
    """``POST .../versions/{version}/export``: the split to export (``null``: every split)."""

    split: str | None = "train"


class RoutePromoteParams(WireModel):
    model_config = ConfigDict(extra="allow")

    mode: PromoteTarget = RouteMode.CANARY
    percent: float | None = None
    force: bool = False


class RouteRollbackParams(WireModel):
    model_config = ConfigDict(extra="allow")

    mode: RollbackTarget = RouteMode.SHADOW
    reason: str | None = None


class SelfConsistencyParams(WireModel):
    """``POST /v1/distillery/eval_comparisons/self_consistency``."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    model: str | None = None


class Distillation(_Object):
    """A prompt distilled end to end: ``status`` queued, running, succeeded, failed or
    cancelled; ``step`` and ``progress`` while it runs; ``report`` when it succeeded (the three
    runs, the comparison, the job, the route and its gate); ``error`` when it failed."""

    id: str
    object: Literal["distillery.distillation"] = "distillery.distillation"
    created_at: int
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    prompt: str
    options: dict[str, Any]
    inventory: dict[str, Any]
    step: str | None = None
    progress: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    finished_at: int | None = None
