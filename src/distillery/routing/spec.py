"""What a route is: the traffic it matches, the student it binds, and how it moves traffic.

A route matches the requests an application sends to its teacher (``match.model``) for one prompt
(``match.metadata``, e.g. ``{"prompt": "router"}``, optionally ``prompt_version``), and binds them
to ``student``. The application changes nothing; the gateway decides who answers by the route's
``mode`` (``distillery.wire.route_modes.RouteMode``: off, shadow, canary with ``percent`` and
``sticky_key``, full).

``graders`` are the evals' grader configs plus three fields of the route's own: ``blocking`` (a
failing grade on the student's answer makes the gateway call the teacher and return its answer
instead), ``sample_rate`` (the share of answers graded, for judges that cost a model call)
and ``block_on_error`` (a grader that errors, e.g. a judge whose provider is down, blocks the
answer too; by default it is counted and the answer passes).
A grader sees ``{{sample.output_text}}`` (the student's answer) and the ``item`` namespace
``{"input", "messages", "teacher", "teacher_json", "metadata"}``, where ``item.teacher`` is the
teacher's answer (present in shadow mode and after a fallback) and ``item.teacher_json`` the same
parsed as JSON.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distillery.wire.chat import validate_metadata
from distillery.wire.route_modes import RollbackTarget, RouteMode

ROUTE_FIELDS = ("blocking", "sample_rate", "block_on_error")  # beyond the grader config


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Match(_Spec):
    model: str = Field(min_length=1, max_length=256, description="The teacher model requested.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Pairs a request carries.")
    prompt_version: str | None = Field(default=None, max_length=512)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return validate_metadata(value, param="match.metadata") or {}

    def pairs(self) -> dict[str, str]:
        """The metadata a request must carry (``prompt_version`` is one more pair)."""
        if self.prompt_version is None:
            return dict(self.metadata)
        return {**self.metadata, "prompt_version": self.prompt_version}


class Gate(_Spec):
    """The parity gate: a frozen held-out comparison of two completed eval runs."""

    teacher_run: str | None = Field(default=None, description="Eval run of the teacher.")
    student_run: str | None = Field(default=None, description="Eval run of the student.")
    min_percent_of_teacher: float = Field(default=95.0, gt=0, le=1000)
    min_shadow_pairs: int = Field(default=50, ge=1, le=1_000_000)
    min_shadow_agreement: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Percent of the shadow pairs that must pass the graders; unset: the same "
        "as min_percent_of_teacher. Lower it when graders compare with a teacher known to be "
        "wrong at times (a student trained on corrected answers disagrees with its mistakes).",
    )


class Rollback(_Spec):
    """Automatic rollback when the student's online pass rate falls below ``floor``."""

    floor: float | None = Field(default=None, ge=0, le=1)
    window: int = Field(default=200, ge=1, le=100_000)
    min_samples: int = Field(default=20, ge=1, le=100_000)
    to: RollbackTarget = RouteMode.SHADOW


class Shadow(_Spec):
    sample_rate: float = Field(default=1.0, ge=0, le=1)
    max_concurrency: int = Field(default=4, ge=1, le=256)
    max_queue: int = Field(
        default=256, ge=0, le=100_000, description="Shadow requests waiting; beyond: skipped."
    )


class Cache(_Spec):
    """Exact-match response cache for the route's requests."""

    enabled: bool = False
    ttl_s: int = Field(default=3600, ge=1, le=366 * 86400)
    deterministic_only: bool = Field(
        default=True, description="Only requests with temperature 0 or a seed are cached."
    )


class RouteSpec(_Spec):
    name: str = Field(min_length=1, max_length=256)
    match: Match
    student: str = Field(min_length=1, max_length=256)
    mode: RouteMode = RouteMode.SHADOW
    percent: float = Field(default=0.0, ge=0, le=100)
    sticky_key: str | None = Field(default=None, min_length=1, max_length=64)
    graders: list[dict[str, Any]] = Field(default_factory=list, max_length=16)
    gate: Gate = Field(default_factory=Gate)
    rollback: Rollback = Field(default_factory=Rollback)
    shadow: Shadow = Field(default_factory=Shadow)
    cache: Cache = Field(default_factory=Cache)
    metadata: dict[str, str] | None = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return validate_metadata(value)

    @model_validator(mode="after")
    def _student_differs(self) -> RouteSpec:
        if self.student == self.match.model:
            raise ValueError("the student must differ from the teacher (match.model)")
        return self


UPDATABLE = frozenset(RouteSpec.model_fields) - {"name", "match"}


def route_fields(grader: dict[str, Any]) -> tuple[dict[str, Any], bool, float]:
    """A route grader split into (the grader config, blocking, sample_rate)."""
    config = {k: v for k, v in grader.items() if k not in ROUTE_FIELDS}
    return config, bool(grader.get("blocking", False)), float(grader.get("sample_rate", 1.0))
