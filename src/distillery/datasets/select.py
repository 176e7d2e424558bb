"""Which stored completions go into a dataset, and the training example made from each.

A source is a filter over stored completions (model, metadata pairs, creation time), an explicit
list of completion ids, or an annotation queue's accepted items. Only completions that finished
with an output are used. When an accepted annotation holds a corrected output, the example's
assistant message is the correction (the stored completion itself is never changed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distillery.errors import InvalidRequestError
from distillery.store.completions import CompletionsRepo
from distillery.store.records import StoredCompletion
from distillery.wire.fine_tuning_jsonl import build_example
from distillery.wire.params import INT64_MAX

if TYPE_CHECKING:
    from distillery.annotations.service import AnnotationsService

MAX_ITEMS = 1_000_000


class DatasetSource(BaseModel):
    """Where a dataset version's rows come from (one of: a filter, ids, a queue)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    metadata: dict[str, str] | None = None
    created_after: int | None = Field(default=None, ge=0, le=INT64_MAX)
    created_before: int | None = Field(default=None, ge=0, le=INT64_MAX)
    completion_ids: list[str] | None = None
    queue_id: str | None = None
    limit: int | None = Field(default=None, ge=1, le=MAX_ITEMS)

    @model_validator(mode="after")
    def _one_kind(self) -> DatasetSource:
        kinds = [self.completion_ids is not None, self.queue_id is not None]
        if sum(kinds) > 1:
            raise ValueError("give either completion_ids or queue_id, not both")
        return self

    def describe(self) -> str:
        if self.queue_id is not None:
            return f"the accepted items of annotation queue {self.queue_id}"
        if self.completion_ids is not None:
            return f"{len(self.completion_ids)} completion id(s)"
        parts = []
        if self.model:
            parts.append(f"model={self.model}")
        parts += [f"metadata[{k}]={v}" for k, v in (self.metadata or {}).items()]
        if self.created_after is not None:
            parts.append(f"created_after={self.created_after}")
        if self.created_before is not None:
            parts.append(f"created_before={self.created_before}")
        return "the filter " + (" ".join(parts) if parts else "(all stored completions)")


@dataclass
class Selection:
    completions: list[StoredCompletion] = field(default_factory=list)
    no_output: int = 0  # matched, but failed or without an output


def _get_many(repo: CompletionsRepo, ids_: list[str]) -> list[StoredCompletion]:
    out: list[StoredCompletion] = []
    for start in range(0, len(ids_), 500):
        out.extend(repo.get_many(ids_[start : start + 500]))
    return out


def select_completions(
    repo: CompletionsRepo,
    source: DatasetSource,
    *,
    annotations: AnnotationsService | None = None,
) -> Selection:
    """The completions of ``source`` in a stable order (oldest first)."""
    limit = source.limit or MAX_ITEMS
    if source.queue_id is not None:
        if annotations is None:
            raise InvalidRequestError("annotation queues are not available", param="source")
        wanted = annotations.accepted_completion_ids(source.queue_id)
        found = _get_many(repo, list(dict.fromkeys(wanted)))
    elif source.completion_ids is not None:
        unique = list(dict.fromkeys(source.completion_ids))
        found = _get_many(repo, unique)
        missing = sorted(set(unique) - {c.id for c in found})
        if missing:
            raise InvalidRequestError(
                f"No stored completion with id '{missing[0]}' ({len(missing)} missing).",
                param="source.completion_ids",
            )
    else:
        found = []
        for c in repo.iterate(
            model=source.model,
            metadata=source.metadata,
            created_after=source.created_after,
            created_before=source.created_before,
        ):
            found.append(c)
            if len(found) >= limit:
                break
    found.sort(key=lambda c: (c.created_at, c.seq))
    selection = Selection()
    for c in found:
        if c.status == "completed" and (c.response or {}).get("choices"):
            selection.completions.append(c)
        else:
            selection.no_output += 1
    del selection.completions[limit:]
    return selection


def example_from_completion(
    completion: StoredCompletion, corrected_output: str | None = None
) -> dict[str, Any]:
    """The fine-tuning line of a stored completion (its correction replacing the output)."""
    choices = (completion.response or {}).get("choices") or [{}]
    message: Mapping[str, Any] = choices[0].get("message") or {}
    if corrected_output is not None:
        message = {"role": "assistant", "content": corrected_output}
    return build_example(
        completion.messages,
        message,
        tools=completion.request.get("tools"),
        parallel_tool_calls=completion.request.get("parallel_tool_calls"),
    )
