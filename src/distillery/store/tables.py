"""Declarative tables. ORM rows never leave ``store/``: repositories return records.

Timestamps are Unix seconds (as OpenAI's ``created_at``); ``seq`` columns give a stable total order
for cursor pagination. JSON columns hold wire-format payloads as sent: ``json`` on PostgreSQL too,
not ``jsonb``, which sorts object keys (shorter first) and would hand back a request's JSON schema
with its properties reordered, and a model writes the fields of a structured answer in the
schema's order. Nothing queries inside them (metadata filters use ``completion_metadata``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON()
SeqType = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY = rowid on SQLite

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# --- capture ---------------------------------------------------------------------------------


class CompletionRow(Base):
    __tablename__ = "completions"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(256))
    provider: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # completed | failed
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    request: Mapped[dict[str, Any]] = mapped_column(JSONType)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cached_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    # set when a route answered the request: the model the application asked for (``model``
    # is the one that answered) and the route
    requested_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    route_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # what [capture.redaction] replaced: {"status", "counts": {kind: n}}, never a value
    redaction: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    __table_args__ = (
        Index("ix_completions_model_seq", "model", "seq"),
        Index("ix_completions_created_at", "created_at"),
    )


class CompletionMetadataRow(Base):
    """One row per metadata pair, so ``metadata[key]=value`` filters use an index."""

    __tablename__ = "completion_metadata"
    completion_seq: Mapped[int] = mapped_column(
        SeqType, ForeignKey("completions.seq", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(512))
    __table_args__ = (Index("ix_completion_metadata_kv_seq", "key", "value", "completion_seq"),)


class ResponseRow(Base):
    """A stored completion that is a Responses API exchange (``POST /v1/responses``): its data
    lives in the completion (chat shape, with the Response object), this row marks it as one and
    links the conversation (``previous_response_id``)."""

    __tablename__ = "responses"
    completion_seq: Mapped[int] = mapped_column(
        SeqType, ForeignKey("completions.seq", ondelete="CASCADE"), primary_key=True
    )
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scope: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


# --- files -------------------------------------------------------------------------------------


class FileRow(Base):
    __tablename__ = "files"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    status_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


# --- annotations -------------------------------------------------------------------------------


class AnnotationQueueRow(Base):
    __tablename__ = "annotation_queues"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[dict[str, Any]] = mapped_column(JSONType)  # filter or eval run
    priority: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType, nullable=True)


class AnnotationItemRow(Base):
    __tablename__ = "annotation_items"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    queue_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("annotation_queues.id", ondelete="CASCADE")
    )
    completion_id: Mapped[str] = mapped_column(String(64))
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16))  # pending | claimed | accepted | skipped
    claimed_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    claimed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    corrected_output: Mapped[str | None] = mapped_column(Text, nullable=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tags: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        UniqueConstraint("queue_id", "completion_id"),
        Index("ix_annotation_items_queue_status_priority", "queue_id", "status", "priority"),
        Index("ix_annotation_items_completion_id", "completion_id"),  # corrections by completion
    )


# --- datasets ----------------------------------------------------------------------------------


class DatasetRow(Base):
    __tablename__ = "datasets"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType, nullable=True)


class DatasetVersionRow(Base):
    __tablename__ = "dataset_versions"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    dataset_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("datasets.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)  # filter, ratios, dedupe options
    stats: Mapped[dict[str, Any]] = mapped_column(JSONType)  # counts, tokens, dedupe report
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)


class DatasetItemRow(Base):
    __tablename__ = "dataset_items"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    version_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("dataset_versions.id", ondelete="CASCADE")
    )
    split: Mapped[str] = mapped_column(String(16))
    completion_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    example: Mapped[dict[str, Any]] = mapped_column(JSONType)  # OpenAI fine-tuning JSONL line
    corrected: Mapped[bool] = mapped_column(Boolean, default=False)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    # where the row came from when not captured traffic: "synthetic", "relabel" (None: captured
    # or imported, as before this column existed)
    origin: Mapped[str | None] = mapped_column(String(16), nullable=True)
    __table_args__ = (
        Index("ix_dataset_items_version_split", "version_id", "split", "seq"),
        Index("ix_dataset_items_completion_id", "completion_id"),  # which versions hold it
    )


class DatasetFileRow(Base):
    """A file exported from a dataset version: a fine-tuning job's training file traces back
    to the version (and split) it holds."""

    __tablename__ = "dataset_files"
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("dataset_versions.id", ondelete="CASCADE")
    )
    split: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None: every split
    created_at: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_dataset_files_version_id", "version_id"),)


# --- evals -------------------------------------------------------------------------------------


class JudgeCalibrationRow(Base):
    """A model grader compared with people's ratings; ``grader_key`` names the grader config."""

    __tablename__ = "judge_calibrations"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    grader_key: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the calibration object
    __table_args__ = (Index("ix_judge_calibrations_grader_key_seq", "grader_key", "seq"),)


class EvalRow(Base):
    __tablename__ = "evals"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the eval object


class EvalRunRow(Base):
    __tablename__ = "eval_runs"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    eval_id: Mapped[str] = mapped_column(String(64), ForeignKey("evals.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the run object
    __table_args__ = (Index("ix_eval_runs_eval_seq", "eval_id", "seq"),)


class EvalOutputItemRow(Base):
    __tablename__ = "eval_output_items"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("eval_runs.id", ondelete="CASCADE"))
    datasource_item_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pass | fail | error
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    __table_args__ = (
        UniqueConstraint("run_id", "datasource_item_id"),
        Index("ix_eval_output_items_run_seq", "run_id", "seq"),
    )


# --- fine-tuning -------------------------------------------------------------------------------


class FineTuningJobRow(Base):
    __tablename__ = "fine_tuning_jobs"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    backend: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the job object
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # what the worker needs beyond the OpenAI object: provider, backend handle, extras, restarts
    state: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    __table_args__ = (Index("ix_fine_tuning_jobs_status", "status", "seq"),)


class FineTuningEventRow(Base):
    __tablename__ = "fine_tuning_events"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE")
    )
    created_at: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    __table_args__ = (Index("ix_fine_tuning_events_job_seq", "job_id", "seq"),)


class FineTuningCheckpointRow(Base):
    __tablename__ = "fine_tuning_checkpoints"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE")
    )
    created_at: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)


class FineTunedModelRow(Base):
    """A servable fine-tuned model: a LoRA adapter on a base, or a provider's remote model."""

    __tablename__ = "fine_tuned_models"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(256), unique=True)  # ft:<base>:<suffix>:<short>
    created_at: Mapped[int] = mapped_column(BigInteger)
    base_model: Mapped[str] = mapped_column(String(256))
    provider: Mapped[str] = mapped_column(String(128))
    adapter_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType, nullable=True)


# --- routes ------------------------------------------------------------------------------------


class RouteRow(Base):
    """A prompt's traffic bound to a student: its spec (``body``) and current mode."""

    __tablename__ = "routes"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    mode: Mapped[str] = mapped_column(String(16))  # a RouteMode (distillery.wire.route_modes)
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped on every change
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)


class RouteEventRow(Base):
    __tablename__ = "route_events"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    route_id: Mapped[str] = mapped_column(String(64), ForeignKey("routes.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    __table_args__ = (Index("ix_route_events_route_seq", "route_id", "seq"),)


class RouteOutcomeRow(Base):
    """One routed request: who answered, how the student's answer graded, what it cost."""

    __tablename__ = "route_outcomes"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    route_id: Mapped[str] = mapped_column(String(64), ForeignKey("routes.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    mode: Mapped[str] = mapped_column(String(16))
    served_by: Mapped[str] = mapped_column(String(16))  # teacher | student | fallback | cache
    model: Mapped[str] = mapped_column(String(256))  # the model whose answer was returned
    completion_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    student_completion_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # student's grades
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(String(256), nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    saved_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    grades: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    __table_args__ = (Index("ix_route_outcomes_route_seq", "route_id", "seq"),)


class ResponseCacheRow(Base):
    """Exact-match cache of deterministic requests (key: the normalised request's SHA-256)."""

    __tablename__ = "response_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    route_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(256))
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    __table_args__ = (Index("ix_response_cache_expires_at", "expires_at"),)


class DistillationRow(Base):
    """One prompt distilled end to end (``distillery.distill``): ``body`` is the public object
    (options, step, progress, report or error); ``worker_id``/``heartbeat_at`` claim it."""

    __tablename__ = "distillations"
    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str] = mapped_column(String(512))
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    __table_args__ = (Index("ix_distillations_status_seq", "status", "seq"),)
