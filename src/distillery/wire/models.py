"""``/v1/models`` objects: ``Model`` and ``ModelDeleted`` as in ``openai.types``.

distillery adds optional fields of its own to a model (absent when they do not apply): the
licence of an embedded model (``license``, ``license_file``) and, while its weights are prepared
for the first use, ``status: "loading"`` with the current ``loading`` stage.
"""

from __future__ import annotations

from typing import Literal

from distillery.wire.base import WireModel


class ModelLoading(WireModel):
    stage: str
    completed: int | float | None = None
    total: int | float | None = None


class Model(WireModel):
    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str
    license: str | None = None
    license_file: str | None = None
    terms: str | None = None  # distillery's: what the teacher's terms allow ([providers.X] terms)
    status: Literal["loading"] | None = None
    loading: ModelLoading | None = None


class ModelDeleted(WireModel):
    id: str
    deleted: bool
    object: Literal["model"] = "model"
