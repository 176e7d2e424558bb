"""The Evals API of OpenAI (``/v1/evals``), answered by distillery, plus run comparison.

Objects are OpenAI's (``eval``, ``eval.run``, ``eval.run.output_item``) and are stored as such.
Runs execute in the background inside the server (an asyncio task) or in the caller's process
(``execute``, used by the CLI); either way each output item is persisted as it is graded, and
runs left ``queued``/``in_progress`` by a stopped server are resumed by ``resume()`` at start-up.

Typical use from code (what the demo does)::

    ev = svc.create_eval({"name": "router", "data_source_config": {"type": "logs",
          "metadata": {"prompt": "router"}}, "testing_criteria": [...]})
    run = svc.create_run(ev["id"], {"data_source": {"type": "completions",
          "source": {"type": "stored_completions"}, "model": "smollm2-135m-instruct"}},
          background=False)
    run = await svc.execute(run["id"], progress=callback)
    run["per_testing_criteria_results"]      # passed / failed per criterion
    svc.compare([teacher_run_id, student_run_id], baseline=teacher_run_id)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from distillery import ids
from distillery.errors import DistilleryError, InvalidRequestError, NotFoundError
from distillery.evals import compare as comparing
from distillery.evals.datasources import DataSources, eval_config
from distillery.evals.runner import ACTIVE, Runner, build_graders, run_model
from distillery.progress import ProgressCallback
from distillery.providers.registry import ProviderRegistry
from distillery.store.base import Store
from distillery.store.completions import CompletionsRepo
from distillery.store.evals import EvalRunRecord, EvalsRepo, OutputItemRecord
from distillery.store.records import Page
from distillery.wire.base import list_object
from distillery.wire.chat import validate_metadata

log = logging.getLogger("distillery.evals")

Order = Literal["asc", "desc"]
REPEAT_KEY = "distillery_repeat_of"


def _public(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if not k.startswith("_")}


def _data_source_public(ds: Any) -> Any:
    """A run's ``data_source`` without the optional fields it has no value for (``model``,
    ``input_messages``, ``sampling_params``, a source's ``created_after``...): the SDK types
    declare them optional, so they are left out rather than sent as ``null``. Items and
    metadata inside are data and kept as they are."""
    if not isinstance(ds, dict):
        return ds
    out = {k: v for k, v in ds.items() if v is not None}
    for key in ("source", "sampling_params"):
        part = out.get(key)
        if isinstance(part, dict):
            out[key] = {k: v for k, v in part.items() if v is not None}
    return out


def _item_public(rec: OutputItemRecord) -> dict[str, Any]:
    return _public(rec.body)


def _name(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"'{param}' must be a string.", param=param)
    return value


def _unknown(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequestError(
            f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0]
        )


class EvalsService:
    def __init__(
        self,
        *,
        store: Store,
        completions: CompletionsRepo,
        providers: ProviderRegistry,
        home: Path,
        concurrency: int = 8,
    ) -> None:
        self.repo = EvalsRepo(store)
        self.sources = DataSources(self.repo, completions, home)
        self.providers = providers
        self.runner = Runner(self.repo, self.sources, providers, concurrency=concurrency)
        self._tasks: dict[str, asyncio.Task[dict[str, Any]]] = {}

    # -- graders on their own (``/v1/fine_tuning/alpha/graders``) -------------------------------

    async def run_grader(self, body: Any) -> dict[str, Any]:
        """Grade one sample with a grader object; model judges call the providers, as in runs."""
        from distillery.evals.graders.run import run_request

        return await run_request(body, judge=self.runner.judge)

    def validate_grader(self, body: Any) -> dict[str, Any]:
        """The grader object when it builds, else a 400 whose ``param`` names the problem."""
        from distillery.evals.graders.run import validate_request

        return validate_request(body)

    # -- evals -----------------------------------------------------------------------------------

    def create_eval(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise InvalidRequestError("The request body must be a JSON object.")
        _unknown(body, {"name", "metadata", "data_source_config", "testing_criteria"})
        if "data_source_config" not in body:
            raise InvalidRequestError(
                "Missing required parameter: 'data_source_config'.", param="data_source_config"
            )
        config = eval_config(body["data_source_config"])
        criteria = body.get("testing_criteria")
        if not isinstance(criteria, list) or not criteria:
            raise InvalidRequestError(
                "'testing_criteria' must be a non-empty array of graders.", param="testing_criteria"
            )
        graders = build_graders({"testing_criteria": criteria}, None)  # 400 with param if invalid
        seen: set[str] = set()
        for i, grader in enumerate(graders):
            if grader.name in seen:
                raise InvalidRequestError(
                    f"Two testing criteria are named {grader.name!r}; names must be unique.",
                    param=f"testing_criteria[{i}].name",
                )
            seen.add(grader.name)
        now = int(time.time())
        eval_id = ids.new_id(ids.EVAL)
        obj = {
            "object": "eval",
            "id": eval_id,
            "name": _name(body.get("name"), "name") or f"eval {time.strftime('%Y-%m-%d %H:%M')}",
            "created_at": now,
            "data_source_config": config,
            "testing_criteria": [dict(c) for c in criteria],
            "metadata": validate_metadata(body.get("metadata")) or {},
        }
        return self.repo.insert_eval(eval_id, now, obj).body

    def get_eval(self, eval_id: str) -> dict[str, Any]:
        return self.repo.get_eval(eval_id).body

    def list_evals(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Order = "asc",
        order_by: Literal["created_at", "updated_at"] = "created_at",
    ) -> dict[str, Any]:
        page = self.repo.list_evals(after=after, limit=limit, order=order, order_by=order_by)
        return list_object([r.body for r in page.data], page.has_more)

    def update_eval(self, eval_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise InvalidRequestError("The request body must be a JSON object.")
        _unknown(body, {"name", "metadata"})
        current = dict(self.repo.get_eval(eval_id).body)
        if body.get("name") is not None:
            current["name"] = _name(body["name"], "name")
        if "metadata" in body:
            current["metadata"] = validate_metadata(body["metadata"]) or {}
        return self.repo.update_eval(eval_id, current, int(time.time())).body

    def delete_eval(self, eval_id: str) -> dict[str, Any]:
        page: Page[EvalRunRecord] = self.repo.list_runs(eval_id, limit=10_000)
        for run in page.data:
            self._stop_task(run.id)
        self.repo.delete_eval(eval_id)
        return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}

    # -- runs ------------------------------------------------------------------------------------

    def create_run(
        self,
        eval_id: str,
        body: Any,
        *,
        background: bool = True,
        state: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a run (``queued``); with ``background`` it starts at once in this event loop."""
        if not isinstance(body, Mapping):
            raise InvalidRequestError("The request body must be a JSON object.")
        _unknown(body, {"name", "metadata", "data_source"})
        ev = self.repo.get_eval(eval_id)
        if "data_source" not in body:
            raise InvalidRequestError(
                "Missing required parameter: 'data_source'.", param="data_source"
            )
        ds = self.sources.validate(body["data_source"], ev.body)
        model = run_model(ds)
        if model is not None:
            try:
                self.providers.route(model)
            except NotFoundError as exc:
                raise NotFoundError(
                    exc.message, param="data_source.model", code="model_not_found"
                ) from exc
        source_model = (ds.get("source") or {}).get("model")
        label = model or source_model or ds.get("dataset_id") or ds["type"]
        now = int(time.time())
        run_id = ids.new_id(ids.EVAL_RUN)
        obj: dict[str, Any] = {
            "object": "eval.run",
            "id": run_id,
            "eval_id": eval_id,
            "name": _name(body.get("name"), "name") or str(label),
            "model": model or source_model or "",
            "status": "queued",
            "created_at": now,
            "data_source": ds,
            "error": {"code": "", "message": ""},
            "metadata": validate_metadata(body.get("metadata")) or {},
            "report_url": f"/evals/{eval_id}/runs/{run_id}",
            "result_counts": {"total": 0, "passed": 0, "failed": 0, "errored": 0},
            "per_testing_criteria_results": [],
            "per_model_usage": [],
        }
        if state is not None:
            obj["_state"] = dict(state)
        rec = self.repo.insert_run(run_id, eval_id, now, "queued", obj)
        if background:
            self.start(run_id)
        return self._run_public(rec)

    def _run_public(self, rec: EvalRunRecord) -> dict[str, Any]:
        body = _public(rec.body)
        if "data_source" in body:
            body["data_source"] = _data_source_public(body["data_source"])
        if rec.status in ACTIVE:  # live counts while the run is going
            counts = Counter(self.repo.status_counts(rec.id))
            total = int((rec.body.get("_state") or {}).get("total") or 0)
            body["result_counts"] = {
                "total": max(total, sum(counts.values())),
                "passed": counts["pass"],
                "failed": counts["fail"],
                "errored": counts["error"],
            }
        return body

    def get_run(self, run_id: str, *, eval_id: str | None = None) -> dict[str, Any]:
        return self._run_public(self.repo.get_run(run_id, eval_id=eval_id))

    def list_runs(
        self,
        eval_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Order = "asc",
        status: str | None = None,
    ) -> dict[str, Any]:
        self.repo.get_eval(eval_id)
        page = self.repo.list_runs(eval_id, after=after, limit=limit, order=order, status=status)
        return list_object([self._run_public(r) for r in page.data], page.has_more)

    def cancel_run(self, run_id: str, *, eval_id: str | None = None) -> dict[str, Any]:
        rec = self.repo.get_run(run_id, eval_id=eval_id)
        if rec.status in ACTIVE:
            body = {**rec.body, "status": "canceled"}
            body.update(self.runner.summary(run_id, self.repo.get_eval(rec.eval_id).body, None))
            self.repo.update_run(run_id, body, only_if_status=ACTIVE)
            self._stop_task(run_id)
        return self.get_run(run_id)

    def delete_run(self, run_id: str, *, eval_id: str | None = None) -> dict[str, Any]:
        self.repo.get_run(run_id, eval_id=eval_id)
        self._stop_task(run_id)
        self.repo.delete_run(run_id, eval_id=eval_id)
        return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}

    def list_output_items(
        self,
        run_id: str,
        *,
        eval_id: str | None = None,
        after: str | None = None,
        limit: int = 20,
        order: Order = "asc",
        status: str | None = None,
    ) -> dict[str, Any]:
        self.repo.get_run(run_id, eval_id=eval_id)
        page = self.repo.list_output_items(
            run_id, after=after, limit=limit, order=order, status=status
        )
        return list_object([_item_public(r) for r in page.data], page.has_more)

    def get_output_item(
        self, run_id: str, item_id: str, *, eval_id: str | None = None
    ) -> dict[str, Any]:
        self.repo.get_run(run_id, eval_id=eval_id)
        return _item_public(self.repo.get_output_item(run_id, item_id))

    def output_items(self, run_id: str) -> list[dict[str, Any]]:
        """Every output item of a run, in datasource order."""
        return [_item_public(r) for r in self.repo.iterate_output_items(run_id)]

    # -- execution -------------------------------------------------------------------------------

    async def execute(
        self, run_id: str, *, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Run (or continue) a run to its end in this task; returns the final run object."""
        rec = await asyncio.to_thread(self.repo.get_run, run_id)
        if rec.status not in ACTIVE:
            return self._run_public(rec)
        eval_body = (await asyncio.to_thread(self.repo.get_eval, rec.eval_id)).body
        state = dict(rec.body.get("_state") or {})
        try:
            if "total" not in state:
                snapshot = await asyncio.to_thread(self.sources.snapshot, rec.body["data_source"])
                state.update(snapshot)
            body = {**rec.body, "status": "in_progress", "_state": state}
            updated = await asyncio.to_thread(
                self.repo.update_run, run_id, body, only_if_status=ACTIVE
            )
            if updated is None:
                return self.get_run(run_id)
            ctx = self.runner.context(updated, eval_body)
            label = f"{eval_body.get('name')} · {rec.body.get('name')}"
            await self.runner.grade_pending(ctx, state, progress=progress, label=label)
        except DistilleryError as exc:
            log.warning("eval run %s failed: %s", run_id, exc.message)
            return self._finish(
                run_id, eval_body, state, "failed", exc.code or exc.type, exc.message
            )
        except Exception as exc:
            log.exception("eval run %s failed", run_id)
            return self._finish(
                run_id, eval_body, state, "failed", "internal_error", f"{type(exc).__name__}: {exc}"
            )
        return self._finish(run_id, eval_body, state, "completed")

    def _finish(
        self,
        run_id: str,
        eval_body: Mapping[str, Any],
        state: Mapping[str, Any],
        status: str,
        code: str = "",
        message: str = "",
    ) -> dict[str, Any]:
        rec = self.repo.get_run(run_id)
        if rec.status in ACTIVE:
            body = {**rec.body, "status": status, "error": {"code": code, "message": message}}
            body.update(self.runner.summary(run_id, eval_body, state.get("total")))
            self.repo.update_run(run_id, body, only_if_status=ACTIVE)
        return self.get_run(run_id)

    def start(self, run_id: str) -> None:
        """Run ``run_id`` in the background of the running event loop."""
        if run_id in self._tasks and not self._tasks[run_id].done():
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.execute(run_id), name=f"eval-run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))

    def _stop_task(self, run_id: str) -> None:
        task = self._tasks.pop(run_id, None)
        if task is not None and not task.done():
            task.cancel()

    async def resume(self) -> None:
        """Start-up hook: continue every run a stopped server left unfinished."""
        for rec in await asyncio.to_thread(self.repo.runs_with_status, ACTIVE):
            log.info("resuming eval run %s", rec.id)
            self.start(rec.id)

    async def shutdown(self) -> None:
        """Shutdown hook: stop the runs of this process; they stay in_progress and resume later."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def wait(self, run_id: str, *, poll_s: float = 0.2) -> dict[str, Any]:
        """Wait for a run to end (completed, canceled or failed)."""
        while True:
            run = await asyncio.to_thread(self.get_run, run_id)
            if run["status"] not in ACTIVE:
                return run
            await asyncio.sleep(poll_s)

    # -- comparison ------------------------------------------------------------------------------

    def compare(
        self,
        run_ids: list[str],
        *,
        baseline: str | None = None,
        resamples: int = 1000,
        seed: int = 0,
        confidence: float = 0.95,
    ) -> dict[str, Any]:
        """Runs side by side against ``baseline`` (default: the first run)."""
        unique = list(dict.fromkeys(run_ids))
        if not unique:
            raise InvalidRequestError("Give at least one run id.", param="run_ids")
        baseline = baseline or unique[0]
        if baseline not in unique:
            unique.insert(0, baseline)
        if not 1 <= resamples <= 100_000:
            raise InvalidRequestError("resamples must be within 1..100000.", param="resamples")
        if not 0 < confidence < 1:
            raise InvalidRequestError("confidence must be within (0, 1).", param="confidence")
        runs = [comparing.RunItems(self.get_run(rid), self.output_items(rid)) for rid in unique]
        return comparing.compare(
            runs, baseline, resamples=resamples, seed=seed, confidence=confidence
        )

    def repeat_run(
        self, run_id: str, *, model: str | None = None, background: bool = True
    ) -> dict[str, Any]:
        """A second run of the same teacher on the same inputs (teacher self-consistency).

        The repeat generates with the run's model (or ``model``; for a run that graded stored
        answers, the model that produced them) on exactly the run's items, and carries
        ``metadata.distillery_repeat_of``. Compare both runs to read the agreement rate.
        """
        rec = self.repo.get_run(run_id)
        ds = dict(rec.body["data_source"])
        chosen = model or run_model(ds) or self._stored_model(run_id)
        if not chosen:
            raise InvalidRequestError(
                "This run has no model to repeat; pass 'model'.", param="model"
            )
        if ds["type"] == "jsonl":  # generating needs a completions data source
            ds = {"type": "completions", "source": ds["source"]}
        ds["model"] = chosen
        ds.setdefault("input_messages", None)
        ds.setdefault("sampling_params", None)
        state = rec.body.get("_state") or {}
        frozen = {k: state[k] for k in ("total", "completion_ids") if k in state}
        metadata = {**(rec.body.get("metadata") or {}), REPEAT_KEY: run_id}
        body = {
            "name": f"{rec.body.get('name')} (repeat)",
            "metadata": dict(list(metadata.items())[-16:]),
            "data_source": ds,
        }
        return self.create_run(rec.eval_id, body, background=background, state=frozen or None)

    def _stored_model(self, run_id: str) -> str | None:
        models: Counter[str] = Counter()
        for rec in self.repo.iterate_output_items(run_id):
            model = (rec.body.get("datasource_item") or {}).get("model") or (
                rec.body.get("sample") or {}
            ).get("model")
            if isinstance(model, str) and model:
                models[model] += 1
        return models.most_common(1)[0][0] if models else None

    def self_consistency(self, run_id: str, repeat_run_id: str) -> dict[str, Any]:
        """Agreement of a run and its repeat (see ``compare.agreement``)."""
        a = comparing.RunItems(self.get_run(run_id), self.output_items(run_id))
        b = comparing.RunItems(self.get_run(repeat_run_id), self.output_items(repeat_run_id))
        return {
            "object": "distillery.self_consistency",
            "run_id": run_id,
            "repeat_run_id": repeat_run_id,
            **comparing.agreement(a, b),
        }
