"""What a request asks a dataset version to be built from: the bodies of the two ways in.

:class:`DatasetSpec` (``POST /v1/distillery/datasets``: a version from stored completions) names
the source selection, the split ratios, deduplication, the prompt-version guard (``strict``), the
model and epochs the training cost is estimated for and the acknowledgement of restrictive
teacher terms. :class:`ImportSpec` (a version from a fine-tuning JSONL upload) has the same
building options without a selection. Unknown fields are refused (``extra="forbid"``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from distillery.datasets.dedupe import DEFAULT_NEAR_THRESHOLD, DedupeMode
from distillery.datasets.select import DatasetSource


class DatasetSpec(BaseModel):
    """How to build a version. ``split`` ratios must sum to 1."""

    model_config = ConfigDict(extra="forbid")
    source: DatasetSource = Field(default_factory=DatasetSource)
    split: dict[str, float] | None = None
    dedupe: DedupeMode = "exact"
    near_threshold: float = Field(default=DEFAULT_NEAR_THRESHOLD, gt=0, le=1)
    keep_duplicates: bool = False
    prompt_version_key: str = Field(default="prompt_version", min_length=1, max_length=64)
    strict: bool = False
    training_model: str | None = None
    epochs: int | None = Field(default=None, ge=1, le=50)
    acknowledge_terms: bool = False


class ImportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: dict[str, float] | None = None
    dedupe: DedupeMode = "exact"
    near_threshold: float = Field(default=DEFAULT_NEAR_THRESHOLD, gt=0, le=1)
    keep_duplicates: bool = False
    training_model: str | None = None
    epochs: int | None = Field(default=None, ge=1, le=50)
