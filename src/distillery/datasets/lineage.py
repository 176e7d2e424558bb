"""Lineage: from an ``ft:`` model back to the data it learned from.

A fine-tuned model names its job; the job names its training and validation files; a file
exported from a dataset version (``DatasetsService.export_to_file``) is recorded with that version
and split. Each version keeps, from the moment it was built, where its examples came from (per
split: the teacher models, the prompts and prompt versions, how many were corrected by people) and
the teachers' terms with the acknowledgement, so the lineage stays whole after the stored
completions it copied are deleted. The corrections themselves (who, when, before and after) are
read from the annotations.

A file uploaded by hand has no recorded version: its lineage says ``dataset_version_id: null``.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from distillery.errors import NotFoundError
from distillery.store.completions import CompletionsRepo
from distillery.store.datasets import DatasetFile, DatasetsRepo, DatasetVersion
from distillery.store.jobs import JobsRepo
from distillery.store.models import FineTunedModelsRepo
from distillery.wire.base import list_object

if TYPE_CHECKING:
    from distillery.annotations.service import AnnotationsService

MAX_CORRECTIONS_LISTED = 100
_FILE_ROLES = (("training", "training_file"), ("validation", "validation_file"))


class LineageService:
    def __init__(
        self,
        *,
        datasets: DatasetsRepo,
        models: FineTunedModelsRepo,
        jobs: JobsRepo,
        completions: CompletionsRepo,
        annotations: AnnotationsService | None = None,
    ) -> None:
        self.datasets = datasets
        self.models = models
        self.jobs = jobs
        self.completions = completions
        self.annotations = annotations

    def model_lineage(self, model_id: str) -> dict[str, Any]:
        """The lineage of a fine-tuned model; 404 for a model distillery did not fine-tune."""
        model = self.models.get(model_id)
        if model is None:
            raise NotFoundError(
                f"No lineage for '{model_id}': it is not a fine-tuned model registered here.",
                param="model",
                code="model_not_found",
            )
        job: dict[str, Any] | None = None
        if model.job_id is not None:
            try:
                job = self.jobs.get(model.job_id).to_object()
            except NotFoundError:
                job = None
        files = [
            (role, str(job[key])) for role, key in _FILE_ROLES if job is not None and job.get(key)
        ]
        sources = self.datasets.file_sources([file_id for _, file_id in files])
        used: dict[str, tuple[DatasetFile, set[str] | None]] = {}
        for _, file_id in files:
            src = sources.get(file_id)
            if src is None:
                continue
            _, splits = used.get(src.version.id, (src, set()))
            if splits is not None and src.split is not None:
                splits.add(src.split)
            used[src.version.id] = (src, None if src.split is None else splits)
        versions = [self._version_view(src, splits) for src, splits in used.values()]
        teachers: Counter[str] = Counter()
        prompts: Counter[tuple[str | None, str | None]] = Counter()
        restricted: dict[str, dict[str, Any]] = {}
        for v in versions:
            teachers.update(v["teachers"])
            for p in v["prompts"]:
                prompts[(p["prompt"], p["prompt_version"])] += p["examples"]
            for name, r in ((v["terms"] or {}).get("restricted") or {}).items():
                restricted.setdefault(name, {"terms": r["terms"], "count": 0})["count"] += r[
                    "count"
                ]
        return {
            "object": "distillery.model.lineage",
            "model": model.id,
            "base_model": model.base_model,
            "provider": model.provider,
            "created_at": model.created_at,
            "job": None
            if job is None
            else {
                k: job.get(k)
                for k in ("id", "status", "created_at", "finished_at", "model", "method")
            },
            "files": [
                {
                    "id": file_id,
                    "role": role,
                    "dataset_id": sources[file_id].dataset_id if file_id in sources else None,
                    "dataset_version_id": sources[file_id].version.id
                    if file_id in sources
                    else None,
                    "split": sources[file_id].split if file_id in sources else None,
                }
                for role, file_id in files
            ],
            "dataset_versions": versions,
            "examples": sum(v["examples"] for v in versions),
            "corrected": sum(v["corrected"] for v in versions),
            "teachers": dict(sorted(teachers.items())),
            "prompts": [
                {"prompt": p, "prompt_version": pv, "examples": n}
                for (p, pv), n in sorted(prompts.items(), key=lambda kv: str(kv[0]))
            ],
            "terms": {
                "restricted": dict(sorted(restricted.items())),
                "acknowledged": bool(restricted)
                and all((v["terms"] or {}).get("acknowledged") for v in versions if v["terms"]),
            },
        }

    def completion_datasets(self, completion_id: str, *, must_exist: bool = True) -> dict[str, Any]:
        """The dataset versions that still hold a copy of a stored completion (deleted or not);
        404 for an id neither stored nor held (unless ``must_exist`` is False)."""
        holding = self.datasets.versions_holding(completion_id)
        if must_exist and not holding and not self.completions.get_many([completion_id]):
            raise NotFoundError(
                f"No chat completion found with id '{completion_id}'.", param="completion_id"
            )
        data = [
            {
                "object": "distillery.dataset.version",
                "id": h.version_id,
                "dataset_id": h.dataset_id,
                "dataset_name": h.dataset_name,
                "version": h.version,
                "items": h.items,
            }
            for h in holding
        ]
        return list_object(data, False)

    def terms_status(self, model_id: str) -> str | None:
        """A student's terms from its lineage: ``allowed`` when no teacher restricts training,
        else the restricting terms and whether they were acknowledged; None without lineage.
        Reads only the versions' recorded terms (``/v1/models`` asks this for every student)."""
        model = self.models.get(model_id)
        if model is None or model.job_id is None:
            return None
        try:
            job = self.jobs.get(model.job_id).to_object()
        except NotFoundError:
            return None
        file_ids = [str(job[key]) for _, key in _FILE_ROLES if job.get(key)]
        versions = {
            src.version.id: src.version for src in self.datasets.file_sources(file_ids).values()
        }
        if not versions:
            return None
        recorded = [v.stats.get("terms") or {} for v in versions.values()]
        restricted = {r["terms"] for t in recorded for r in (t.get("restricted") or {}).values()}
        if not restricted:
            return "allowed"
        acknowledged = all(t.get("acknowledged") for t in recorded if t.get("restricted"))
        terms = ",".join(sorted(restricted))
        return f"{terms} (acknowledged)" if acknowledged else terms

    def _version_view(self, src: DatasetFile, splits: set[str] | None) -> dict[str, Any]:
        v: DatasetVersion = src.version
        stats = v.stats
        split_stats: dict[str, dict[str, int]] = stats.get("splits") or {}
        chosen = sorted(split_stats) if splits is None else sorted(splits)
        recorded: dict[str, Any] = stats.get("sources") or {}
        teachers: Counter[str] = Counter()
        prompts: dict[tuple[str | None, str | None], dict[str, int]] = {}
        for split in chosen:
            part = recorded.get(split) or {}
            teachers.update(part.get("teachers") or {})
            for p in part.get("prompts") or []:
                row = prompts.setdefault(
                    (p["prompt"], p["prompt_version"]), {"examples": 0, "corrected": 0}
                )
                row["examples"] += p["examples"]
                row["corrected"] += p["corrected"]
        completion_ids: list[str] = []
        corrected_ids: list[str] = []
        for split in chosen:
            for item in self.datasets.iter_items(v.id, split=split):
                if item.completion_id is not None:
                    completion_ids.append(item.completion_id)
                    if item.corrected:
                        corrected_ids.append(item.completion_id)
        still = {c.id for c in self._completions(completion_ids)}
        return {
            "id": v.id,
            "dataset_id": src.dataset_id,
            "dataset_name": src.dataset_name,
            "version": v.version,
            "created_at": v.created_at,
            "splits": chosen,
            "source": (v.spec or {}).get("source"),
            "examples": sum(split_stats.get(s, {}).get("examples", 0) for s in chosen),
            "corrected": sum(split_stats.get(s, {}).get("corrected", 0) for s in chosen),
            "teachers": dict(sorted(teachers.items())),
            "prompts": [
                {"prompt": p, "prompt_version": pv, **row}
                for (p, pv), row in sorted(prompts.items(), key=lambda kv: str(kv[0]))
            ],
            "completions": {
                "referenced": len(completion_ids),
                "still_stored": len(still),
                "deleted": len(set(completion_ids) - still),
            },
            "corrections": self._corrections(corrected_ids),
            "terms": stats.get("terms"),
            "acknowledge_terms": bool((v.spec or {}).get("acknowledge_terms", False)),
        }

    def _completions(self, ids: list[str]) -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(ids), 500):
            out += self.completions.get_many(ids[start : start + 500])
        return out

    def _corrections(self, completion_ids: list[str]) -> list[dict[str, Any]]:
        """Who corrected what, when, before and after (the first ``MAX_CORRECTIONS_LISTED``)."""
        if self.annotations is None or not completion_ids:
            return []
        listed = completion_ids[:MAX_CORRECTIONS_LISTED]
        found = self.annotations.corrections(listed)
        originals = {c.id: c for c in self._completions(listed)}
        out = []
        for cid in listed:
            item = found.get(cid)
            if item is None:
                continue
            original = originals.get(cid)
            choices = ((original.response or {}).get("choices") or [{}]) if original else [{}]
            message = choices[0].get("message") if isinstance(choices[0], dict) else None
            out.append(
                {
                    "completion_id": cid,
                    "annotation_item_id": item.id,
                    "queue_id": item.queue_id,
                    "by": item.claimed_by,
                    "at": item.updated_at,
                    "before": message.get("content") if isinstance(message, dict) else None,
                    "after": item.corrected_output,
                }
            )
        return out
