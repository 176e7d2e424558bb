"""Review queues: reviewers claim stored completions one at a time, correct, rate, accept or skip.

A queue is built once, from a filter over stored completions or from an eval run's output items,
in the order the user chose (:data:`PRIORITIES`):

- ``teacher_failed_first`` (default): first the items where the teacher failed a grader in
  ``teacher_run_id``, then those the teacher passed but the student failed in ``student_run_id``
  (runs matched by completion id, else by datasource item index), then the rest, oldest first
  within each tier. Without eval runs it is the same as ``oldest``;
- ``oldest``, ``newest``; ``random`` (shuffled with ``seed``, reproducible).

A claim hands an item to one reviewer only (see :mod:`distillery.store.annotations`); it expires
after ``claim_timeout_s`` so an abandoned item returns to the queue. A correction is stored beside
the original output (the stored completion is never changed); datasets use the accepted
corrections in place of the originals.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distillery.errors import InvalidRequestError
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.store.annotations import (
    STATUSES,
    AnnotationItem,
    AnnotationQueue,
    AnnotationsRepo,
    EvalOutput,
)
from distillery.store.completions import CompletionsRepo
from distillery.store.records import Page, StoredCompletion
from distillery.wire.chat import output_text
from distillery.wire.params import INT64_MAX, parse_params

Priority = Literal["teacher_failed_first", "oldest", "newest", "random"]
PRIORITIES: tuple[str, ...] = ("teacher_failed_first", "oldest", "newest", "random")
DEFAULT_CLAIM_TIMEOUT_S = 30 * 60
MAX_QUEUE_ITEMS = 100_000


class CompletionsSource(BaseModel):
    """Stored completions matching a filter (or a list of ids)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["completions"] = "completions"
    model: str | None = None
    metadata: dict[str, str] | None = None
    created_after: int | None = Field(default=None, ge=0, le=INT64_MAX)
    created_before: int | None = Field(default=None, ge=0, le=INT64_MAX)
    completion_ids: list[str] | None = Field(default=None, max_length=MAX_QUEUE_ITEMS)


class EvalRunSource(BaseModel):
    """The stored completions graded in an eval run."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["eval_run"]
    run_id: str


class QueueSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=256)
    source: CompletionsSource | EvalRunSource = Field(discriminator="type")
    priority: Priority = "teacher_failed_first"
    teacher_run_id: str | None = None
    student_run_id: str | None = None
    seed: int = 0
    claim_timeout_s: int = Field(default=DEFAULT_CLAIM_TIMEOUT_S, ge=1, le=7 * 24 * 3600)
    limit: int | None = Field(default=None, ge=1, le=MAX_QUEUE_ITEMS)
    metadata: dict[str, str] | None = None


class ItemUpdate(BaseModel):
    """An edit of one item. Only the fields that are sent change; ``null`` clears a field."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=0)
    corrected_output: str | None = Field(default=None, max_length=1_000_000)
    rating: int | None = Field(default=None, ge=1, le=5)
    tags: list[str] | None = Field(default=None, max_length=32)
    comment: str | None = Field(default=None, max_length=10_000)
    action: Literal["save", "accept", "skip", "release"] = "save"


def completion_id_of(output: EvalOutput) -> str | None:
    """The stored completion an eval output item was made from, when the item names it."""
    body = output.body
    found: list[Any] = []
    item = body.get("datasource_item")
    if isinstance(item, Mapping):
        found += [item.get("completion_id"), item.get("id")]
        inner = item.get("item")
        if isinstance(inner, Mapping):
            found += [inner.get("completion_id"), inner.get("id")]
    found.append(body.get("completion_id"))
    sample = body.get("sample")
    if isinstance(sample, Mapping):
        found.append(sample.get("completion_id"))
    return next((f for f in found if isinstance(f, str) and f), None)


def passed(output: EvalOutput) -> bool:
    """True when every grader passed; errors count as failures (they deserve a look)."""
    results = output.body.get("results")
    if isinstance(results, list) and results:
        return all(isinstance(r, Mapping) and r.get("passed") is True for r in results)
    return output.status == "pass"


class AnnotationsService:
    def __init__(self, repo: AnnotationsRepo, completions: CompletionsRepo) -> None:
        self.repo = repo
        self.completions = completions

    # --- queues ---------------------------------------------------------------------------------

    def create_queue(
        self, spec: QueueSpec | Mapping[str, Any], *, progress: ProgressCallback | None = None
    ) -> AnnotationQueue:
        """Build a queue; a source that matches no stored completion is a 400 and stores nothing."""
        spec = parse_params(QueueSpec, dict(spec) if isinstance(spec, Mapping) else spec)
        completions, skipped = self._select(spec)
        if not completions:
            raise InvalidRequestError(
                "The queue's source matches no stored completion with an output: nothing to "
                "review (check the model, metadata, time range or run id).",
                param="source",
                code="empty_selection",
            )
        report(progress, ProgressEvent("queue", 0, len(completions), message="ordering"))
        ordered = self._order(spec, completions)
        n = len(ordered)
        items = [(c.id, float(n - rank)) for rank, c in enumerate(ordered)]
        source = {
            **spec.source.model_dump(exclude_none=True),
            "teacher_run_id": spec.teacher_run_id,
            "student_run_id": spec.student_run_id,
            "seed": spec.seed,
            "claim_timeout_s": spec.claim_timeout_s,
            "skipped": skipped,
        }
        queue = self.repo.create_queue(
            name=spec.name,
            source=source,
            priority=spec.priority,
            items=items,
            metadata=spec.metadata,
        )
        report(progress, ProgressEvent("queue", n, n))
        return queue

    def _select(self, spec: QueueSpec) -> tuple[list[StoredCompletion], int]:
        src = spec.source
        limit = spec.limit or MAX_QUEUE_ITEMS
        if isinstance(src, EvalRunSource):
            outputs = self.repo.eval_output_items(src.run_id, param="source.run_id")
            wanted = [cid for cid in (completion_id_of(o) for o in outputs) if cid]
            found = self._get_many(list(dict.fromkeys(wanted)))
        elif src.completion_ids is not None:
            found = self._get_many(list(dict.fromkeys(src.completion_ids)))
            missing = sorted(set(src.completion_ids) - {c.id for c in found})
            if missing:
                raise InvalidRequestError(
                    f"No stored completion with id '{missing[0]}' ({len(missing)} missing).",
                    param="source.completion_ids",
                )
        else:
            found = []
            for c in self.completions.iterate(
                model=src.model,
                metadata=src.metadata,
                created_after=src.created_after,
                created_before=src.created_before,
                status="completed",
            ):
                found.append(c)
                if len(found) >= limit:
                    break
        usable = [c for c in found if c.status == "completed" and c.response][:limit]
        return usable, len(found) - len(usable)

    def _get_many(self, ids_: list[str]) -> list[StoredCompletion]:
        out: list[StoredCompletion] = []
        for start in range(0, len(ids_), 500):
            out.extend(self.completions.get_many(ids_[start : start + 500]))
        return out

    def _results(self, run_id: str | None, param: str) -> tuple[dict[str, bool], dict[int, bool]]:
        if run_id is None:
            return {}, {}
        by_completion: dict[str, bool] = {}
        by_index: dict[int, bool] = {}
        for out in self.repo.eval_output_items(run_id, param=param):
            ok = passed(out)
            cid = completion_id_of(out)
            if cid:
                by_completion[cid] = ok
            by_index[out.datasource_item_id] = ok
        return by_completion, by_index

    def _order(
        self, spec: QueueSpec, completions: list[StoredCompletion]
    ) -> list[StoredCompletion]:
        oldest = sorted(completions, key=lambda c: (c.created_at, c.seq))
        if spec.priority == "oldest":
            return oldest
        if spec.priority == "newest":
            return oldest[::-1]
        if spec.priority == "random":
            shuffled = list(oldest)
            random.Random(spec.seed).shuffle(shuffled)
            return shuffled
        teacher_run = spec.teacher_run_id
        if teacher_run is None and isinstance(spec.source, EvalRunSource):
            teacher_run = spec.source.run_id
        t_by_id, t_by_index = self._results(teacher_run, "teacher_run_id")
        s_by_id, s_by_index = self._results(spec.student_run_id, "student_run_id")
        index_of: dict[str, int] = {}
        if teacher_run is not None:
            for out in self.repo.eval_output_items(teacher_run, param="teacher_run_id"):
                cid = completion_id_of(out)
                if cid:
                    index_of.setdefault(cid, out.datasource_item_id)

        def tier(c: StoredCompletion) -> int:
            index = index_of.get(c.id)
            teacher = t_by_id.get(c.id, t_by_index.get(index) if index is not None else None)
            student = s_by_id.get(c.id, s_by_index.get(index) if index is not None else None)
            if teacher is False:
                return 2
            if teacher is True and student is False:
                return 1
            return 0

        return sorted(oldest, key=lambda c: -tier(c))  # stable: oldest first within a tier

    def get_queue(self, queue_id: str) -> AnnotationQueue:
        return self.repo.get_queue(queue_id)

    def list_queues(
        self, *, after: str | None = None, limit: int = 20, order: Literal["asc", "desc"] = "desc"
    ) -> Page[AnnotationQueue]:
        return self.repo.list_queues(after=after, limit=limit, order=order)

    # --- items ----------------------------------------------------------------------------------

    def claim(self, queue_id: str, reviewer: str) -> AnnotationItem | None:
        """The next item for ``reviewer`` (never one another reviewer holds), or None when done."""
        if not reviewer or len(reviewer) > 256:
            raise InvalidRequestError(
                "'reviewer' must be a name of 1 to 256 characters.", param="reviewer"
            )
        queue = self.repo.get_queue(queue_id)
        return self.repo.claim_next(queue_id, reviewer, claim_timeout_s=self.claim_timeout(queue))

    def get_item(self, queue_id: str, item_id: str) -> AnnotationItem:
        return self.repo.get_item(queue_id, item_id)

    def list_items(
        self,
        queue_id: str,
        *,
        status: str | None = None,
        after: str | None = None,
        limit: int = 20,
    ) -> Page[AnnotationItem]:
        self.repo.get_queue(queue_id)
        return self.repo.list_items(queue_id, status=status, after=after, limit=limit)

    def submit(
        self, queue_id: str, item_id: str, update: ItemUpdate | Mapping[str, Any]
    ) -> AnnotationItem:
        """Edit, rate, tag, comment, accept, skip or release an item (409 on a stale version)."""
        upd = parse_params(ItemUpdate, dict(update) if isinstance(update, Mapping) else update)
        item = self.repo.get_item(queue_id, item_id)
        changes: dict[str, Any] = {}
        for name in ("rating", "comment"):
            if name in upd.model_fields_set:
                changes[name] = getattr(upd, name)
        if "tags" in upd.model_fields_set:
            tags = [t.strip() for t in upd.tags or [] if t.strip()]
            if any(len(t) > 64 for t in tags):
                raise InvalidRequestError("Tags are at most 64 characters.", param="tags")
            changes["tags"] = list(dict.fromkeys(tags)) or None
        if "corrected_output" in upd.model_fields_set:
            corrected = upd.corrected_output
            original = output_text(self.completions.get(item.completion_id).response or {})
            changes["corrected_output"] = None if corrected == original else corrected
        if upd.action == "accept":
            changes["status"] = "accepted"
        elif upd.action == "skip":
            changes["status"] = "skipped"
        elif upd.action == "release":
            changes.update(status="pending", claimed_by=None, claimed_at=None)
        return self.repo.update_item(
            queue_id, item_id, expected_version=upd.version, changes=changes
        )

    def corrections(self, completion_ids: Sequence[str]) -> dict[str, AnnotationItem]:
        """Accepted corrections by completion id (the latest accepted one wins)."""
        return self.repo.accepted_corrections(completion_ids)

    def accepted_completion_ids(self, queue_id: str) -> list[str]:
        return self.repo.accepted_completion_ids(queue_id)

    # --- views ----------------------------------------------------------------------------------

    @staticmethod
    def claim_timeout(queue: AnnotationQueue) -> int:
        value = queue.source.get("claim_timeout_s")
        return int(value) if isinstance(value, int) else DEFAULT_CLAIM_TIMEOUT_S

    def item_view(
        self, item: AnnotationItem, queue: AnnotationQueue | None = None
    ) -> dict[str, Any]:
        """The item as the API returns it, with the input messages and the original output."""
        queue = queue or self.repo.get_queue(item.queue_id)
        completion = self.completions.get_many([item.completion_id])
        c = completion[0] if completion else None
        response = (c.response if c else None) or {}
        choices = response.get("choices") or [{}]
        expires = (
            item.claimed_at + self.claim_timeout(queue)
            if item.status == "claimed" and item.claimed_at is not None
            else None
        )
        return {
            "id": item.id,
            "object": "distillery.annotation_item",
            "queue_id": item.queue_id,
            "completion_id": item.completion_id,
            "status": item.status,
            "priority": item.priority,
            "claimed_by": item.claimed_by,
            "claimed_at": item.claimed_at,
            "claim_expires_at": expires,
            "version": item.version,
            "updated_at": item.updated_at,
            "model": c.model if c else None,
            "metadata": c.metadata if c else {},
            "input": {
                "messages": c.messages if c else [],
                "tools": c.request.get("tools") if c else None,
            },
            "output": output_text(response),
            "output_message": choices[0].get("message"),
            "corrected_output": item.corrected_output,
            "rating": item.rating,
            "tags": item.tags,
            "comment": item.comment,
        }

    @staticmethod
    def queue_view(queue: AnnotationQueue) -> dict[str, Any]:
        return {
            "id": queue.id,
            "object": "distillery.annotation_queue",
            "name": queue.name,
            "created_at": queue.created_at,
            "priority": queue.priority,
            "source": queue.source,
            "metadata": queue.metadata,
            "counts": queue.counts,
        }


# STATUSES, AnnotationItem and AnnotationQueue: an item's states and the records the service
# returns, for the edges
__all__ = [
    "DEFAULT_CLAIM_TIMEOUT_S",
    "MAX_QUEUE_ITEMS",
    "PRIORITIES",
    "STATUSES",
    "AnnotationItem",
    "AnnotationQueue",
    "AnnotationsService",
    "CompletionsSource",
    "EvalRunSource",
    "ItemUpdate",
    "Priority",
    "QueueSpec",
    "completion_id_of",
    "passed",
]
