"""From a prompt's captured traffic to a gated student, in one run.

1. **inventory** (:mod:`plan`): the prompt's teacher answers, corrections in place, checked
   against the response format; too little data stops here with how much more is needed;
2. **dataset**: a snapshot of the usable completions (``distill-<prompt>-<fingerprint>``), split
   leakage-safe (one question never lands on both sides) into train, validation and a frozen
   test split; train and validation are exported as fine-tuning files;
3. **baselines**: one eval over the test split with the inferred graders, each item scored
   against the reference (the accepted correction, else the teacher's answer): the teacher's
   stored answers, then the base student generating;
4. **fine-tune** the student with the automatic recipe (``"auto"`` hyperparameters: the trainer
   reads the data and keeps the epoch the validation split scores best);
5. **evaluate** the distilled student on the same test items and **compare** it with the
   teacher (bootstrap intervals over the items);
5b. with ``rft``: **reinforce** the distilled student (a reinforcement job from its ``ft:``
   model, the graders as the reward, trained on the training prompts it gets wrong or answers
   unevenly, the step kept by the validation split) and evaluate it the same way;
6. **route**: the prompt's route in ``shadow`` with the comparison as its parity gate, for the
   better of the two students on the test split (the supervised one on a tie).

The eval runs, the job and the route go through distillery's own API (``base_url``): the server
runs them (its job worker trains, its eval runner generates). Every artifact is tagged with a
fingerprint of the run's inputs (the usable completions, their corrections, the options), so a
second run with the same inputs reuses what exists and an interrupted one resumes where it
stopped (a job from its last checkpoint).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distillery.capture.importer import export_lines
from distillery.costs.savings import payback, student_cost_per_1k, training_cost
from distillery.distill.plan import (
    Inventory,
    answer_of,
    measured_fields,
    reward_grader,
    take_inventory,
)
from distillery.distill.report import CriterionRow, DistillReport, Miss, RftStage, RunSummary
from distillery.errors import ConflictError, DistilleryError, InvalidRequestError
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.providers.base import ProviderContext
from distillery.providers.registry import provider_kind
from distillery.providers.replay import ReplayProviderConfig
from distillery.services import Services
from distillery.training.local.backend import LocalBackend
from distillery.training.local.measure import json_object
from distillery.weights import DEMO_STUDENT

MAX_MISSES = 5  # examples listed where the student fails what the teacher passes
ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "messages": {"type": "array"},
        "reference": {"type": "string"},
        "teacher": {"type": ["string", "null"]},
        "completion_id": {"type": "string"},
    },
    "required": ["messages", "reference"],
}


class DistillOptions(BaseModel):
    """What to distill and how (the body of ``POST /v1/distillery/distillations``); every
    field but ``prompt`` has a default chosen from the data."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=512, description="The traffic's `prompt`.")
    student: str = Field(default=DEMO_STUDENT, min_length=1, max_length=256)
    teacher: str | None = Field(
        default=None, max_length=256, description="Whose answers; default: the most used model."
    )
    prompt_version: str | None = Field(
        default=None, max_length=512, description="Default: the newest in the traffic."
    )
    graders: list[dict[str, Any]] | None = Field(
        default=None, min_length=1, max_length=16, description="Default: inferred from the data."
    )
    test_fraction: float | None = Field(
        default=None, ge=0.05, le=0.5, description="Default: 0.1 (0.2 under 200 examples)."
    )
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Literal["auto"] = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Literal["auto"] = "auto"
    method: Literal["lora", "full"] = "lora"
    lora_r: int | None = Field(default=None, ge=1, le=256)
    max_tokens: int | None = Field(
        default=None, ge=1, le=8192, description="Default: what the application asked for."
    )
    min_percent_of_teacher: float = Field(
        default=95.0, gt=0, le=1000, description="The gate: the student's lower bound."
    )
    route_name: str | None = Field(
        default=None, min_length=1, max_length=256, description='Default: "<prompt>-distilled".'
    )
    requests_per_day: float | None = Field(
        default=None, ge=0, description="For payback; default: the prompt's traffic rate."
    )
    rft: bool = Field(
        default=False,
        description="After the supervised student, reinforcement fine-tuning with the graders as "
        "the reward, on the training prompts it gets wrong; the route gets the better student.",
    )
    rft_hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="OpenAI's reinforcement hyperparameters for that stage (n_epochs, "
        "batch_size, compute_multiplier, ...); unset ones are auto.",
    )

    @field_validator("prompt")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name the prompt to distill")
        return value


def slug(text: str, limit: int = 40) -> str:
    """A name part from free text: lowercase letters, digits and dashes."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (out or hashlib.sha256(text.encode()).hexdigest()[:8])[:limit]


@dataclass
class RftRun:
    """The reinforcement stage: its job, the trainer's account of the step it kept, its eval."""

    job: dict[str, Any]
    selection: str | None
    run: dict[str, Any]


def _side(run: Mapping[str, Any], comparison: Mapping[str, Any]) -> Mapping[str, Any]:
    """``run``'s side of an eval comparison."""
    return next(s for s in comparison["overall"]["runs"] if s["run_id"] == run["id"])  # type: ignore[no-any-return]


def _pass_rate(run: Mapping[str, Any], comparison: Mapping[str, Any]) -> float:
    return float(_side(run, comparison)["pass_rate"] or 0.0)


class Interrupted(Exception):
    """The run was asked to stop (its process is shutting down); it resumes later."""


class Distillation:
    """One prompt distilled (``run``); each step reuses what a previous run made."""

    def __init__(
        self,
        services: Services,
        options: DistillOptions,
        *,
        progress: ProgressCallback | None = None,
        say: Callable[[str], None] = lambda _m: None,
        on_step: Callable[[str], None] = lambda _s: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.services = services
        self.options = options
        self.progress = progress
        self.say = say
        self.on_step = on_step
        self.should_stop = should_stop
        self.inventory: Inventory | None = None
        self.corrections: dict[str, str] = {}
        self.fp = ""

    def step(self, name: str) -> None:
        self._check_stop()
        self.on_step(name)

    # -- 1. inventory ----------------------------------------------------------------------------

    def take_inventory(self) -> Inventory:
        o = self.options
        stored = self.services.stored_completions
        completions = list(stored.iterate(metadata={"prompt": o.prompt}))
        fixes = self.services.annotations.corrections([c.id for c in completions])
        corrections = {
            cid: item.corrected_output
            for cid, item in fixes.items()
            if item.corrected_output is not None
        }
        prompts = [
            str(s["prompt"]) for s in self.services.costs.report()["by_prompt"] if s.get("prompt")
        ]
        inventory = take_inventory(
            completions,
            corrections,
            prompt=o.prompt,
            known_prompts=sorted(set(prompts)),
            teacher=o.teacher,
            prompt_version=o.prompt_version,
            graders=o.graders,
        )
        self.inventory = inventory
        self.corrections = corrections
        return inventory

    def fingerprint(self, inventory: Inventory) -> str:
        o = self.options
        data = {
            "usable": inventory.usable,
            "corrections": {
                c: self.corrections[c] for c in inventory.usable if c in self.corrections
            },
            "graders": inventory.graders,
            "options": o.model_dump(exclude={"requests_per_day", "rft", "rft_hyperparameters"}),
        }
        raw = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()
        return hashlib.sha256(raw).hexdigest()[:12]

    # -- 2. dataset ------------------------------------------------------------------------------

    @property
    def dataset_name(self) -> str:
        return f"distill-{slug(self.options.prompt)}-{self.fp}"

    def dataset(self, inventory: Inventory) -> dict[str, int]:
        """The snapshot (made once per fingerprint); its example count per split."""
        datasets = self.services.datasets
        try:
            version = datasets.get_version(self.dataset_name)
            self.say(f"dataset: reusing {self.dataset_name}")
        except DistilleryError:
            version = datasets.create_version(
                self.dataset_name,
                {
                    "source": {"completion_ids": inventory.usable},
                    "split": inventory.ratios(self.options.test_fraction),
                    "dedupe": "exact",
                    "training_model": self.options.student,
                },
                description=f"prompt {self.options.prompt}: {inventory.teacher}'s answers",
                metadata={"distill": self.fp, "prompt": self.options.prompt},
                progress=self.progress,
            )
            self.say(f"dataset: created {self.dataset_name}")
        splits = version.stats.get("splits") or {}
        counts = {
            name: int(v["examples"] if isinstance(v, dict) else v) for name, v in splits.items()
        }
        if counts.get("test", 0) == 0 or counts.get("train", 0) == 0:
            raise InvalidRequestError(
                f"The split of {len(inventory.usable)} examples left "
                f"{counts.get('train', 0)} to train on and {counts.get('test', 0)} to test on: "
                "capture more traffic (or raise test_fraction).",
                param="prompt",
                code="too_little_data",
            )
        return counts

    def _file(self, filename: str, purpose: str) -> str | None:
        for f in self.services.files.list(purpose=purpose).data:
            if f.filename == filename:
                return f.id
        return None

    def exported(self, split: str) -> str | None:
        """The fine-tuning file of a split (exported once), or None when it is empty."""
        found = self._file(f"{self.dataset_name}-v1-{split}.jsonl", "fine-tune")
        if found is not None:
            return found
        try:
            return self.services.datasets.export_to_file(self.dataset_name, split=split).id
        except InvalidRequestError:
            return None

    # -- 3. the eval and its items -----------------------------------------------------------

    def test_items(self) -> list[dict[str, Any]]:
        """The frozen test split as eval lines: the prompt, the reference (the correction, else
        the teacher's answer) and the teacher's own stored answer as the teacher run's sample."""
        lines = []
        stored = self.services.stored_completions
        page_after: int | None = None
        while True:
            page = self.services.datasets.list_items(
                self.dataset_name, split="test", after=page_after, limit=100
            )
            for row in page.data:
                messages = list(row.example.get("messages") or [])
                reference = ""
                if messages and messages[-1].get("role") == "assistant":
                    reference = str(messages.pop().get("content") or "")
                item: dict[str, Any] = {"messages": messages, "reference": reference}
                ref_json = json_object(reference)
                if ref_json is not None:
                    item["reference_json"] = ref_json
                teacher: str | None = None
                if row.completion_id:
                    item["completion_id"] = row.completion_id
                    teacher = answer_of(stored.get(row.completion_id), None)
                item["teacher"] = teacher
                lines.append({"item": item, "sample": {"output_text": teacher or ""}})
            if not page.has_more or not page.data:
                break
            page_after = page.data[-1].seq
        return lines

    def items_file(self, lines: list[dict[str, Any]]) -> str:
        filename = f"{self.dataset_name}-test-items.jsonl"
        found = self._file(filename, "evals")
        if found is not None:
            return found
        body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        return self.services.files.create(
            io.BytesIO(body.encode()), filename=filename, purpose="evals"
        ).id

    def eval_id(self, inventory: Inventory) -> str:
        name = f"distill {self.options.prompt[:200]} {self.fp}"
        after: str | None = None
        while True:
            page = self.services.evals.list_evals(after=after, limit=100, order="desc")
            for ev in page["data"]:
                if ev.get("name") == name:
                    return str(ev["id"])
            if not page.get("has_more") or not page["data"]:
                break
            after = page["data"][-1]["id"]
        created = self.services.evals.create_eval(
            {
                "name": name,
                "data_source_config": {
                    "type": "custom",
                    "item_schema": ITEM_SCHEMA,
                    "include_sample_schema": True,
                },
                "testing_criteria": inventory.graders,
                "metadata": {"distill": self.fp, "prompt": self.options.prompt[:512]},
            }
        )
        return str(created["id"])

    def max_tokens(self, inventory: Inventory, items: list[dict[str, Any]]) -> int:
        if self.options.max_tokens is not None:
            return self.options.max_tokens
        if inventory.max_completion_tokens is not None:
            return inventory.max_completion_tokens
        longest = max((len(line["item"]["reference"]) for line in items), default=0)
        return min(1024, max(32, longest))  # characters bound tokens from above, in any script

    def _start_run(self, run_id: str) -> None:
        """Start an eval run on the server's event loop (this process's ``serve``, or the
        CLI's in-process stack): the runner and the providers it calls live there."""
        self._check_stop()
        loop = self.services.lifecycle.loop
        if loop is None or loop.is_closed():
            raise RuntimeError(
                "eval runs need a running server in this process (distillery serve, or the "
                "stack `distillery distill` starts)"
            )

        async def start() -> None:
            self.services.evals.start(run_id)

        asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)

    def evaluate(
        self, eval_id: str, file_id: str, *, role: str, model: str | None, max_tokens: int
    ) -> dict[str, Any]:
        """A completed run (reused when one with the same role exists): the stored teacher
        answers when ``model`` is None, else ``model`` generating."""
        evals = self.services.evals
        if model is None:
            data_source: dict[str, Any] = {
                "type": "jsonl",
                "source": {"type": "file_id", "id": file_id},
            }
        else:
            params: dict[str, Any] = {
                "max_completion_tokens": max_tokens,
                "temperature": 0,
                "seed": 0,
            }
            if self.inventory is not None and self.inventory.response_format is not None:
                params["response_format"] = self.inventory.response_format
            data_source = {
                "type": "completions",
                "source": {"type": "file_id", "id": file_id},
                "model": model,
                "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
                "sampling_params": params,
            }
        run_meta = {"distill": self.fp, "role": role}
        listed = evals.list_runs(eval_id, limit=100, order="desc")["data"]
        run = next(
            (
                r
                for r in listed
                if r.get("metadata") == run_meta
                and r["status"] in ("completed", "in_progress", "queued")
                # a run of another model in this role (an RFT student of another recipe): new run
                and (model is None or (r.get("data_source") or {}).get("model") == model)
            ),
            None,
        )
        label = f"evaluate {role}"
        if run is None:
            run = evals.create_run(
                eval_id,
                {"name": role, "data_source": data_source, "metadata": run_meta},
                background=False,
            )
        else:
            self.say(f"eval: reusing run {run['id']} ({role}, {run['status']})")
        started = time.monotonic()
        if run["status"] in ("queued", "in_progress"):
            self._start_run(run["id"])  # a no-op when this process already runs it
        while run["status"] in ("queued", "in_progress"):
            self._check_stop()
            counts = run.get("result_counts") or {}
            done = sum(int(counts.get(k) or 0) for k in ("passed", "failed", "errored"))
            report(self.progress, ProgressEvent(label, done, counts.get("total") or None))
            time.sleep(0.5)
            run = evals.get_run(run["id"])
        if run["status"] != "completed":
            raise RuntimeError(f"the {role} evaluation ended {run['status']}: {run.get('error')}")
        total = int((run.get("result_counts") or {}).get("total") or 0)
        report(self.progress, ProgressEvent(label, total, total))
        return {**run, "elapsed_s": time.monotonic() - started}

    # -- 4. fine-tune ----------------------------------------------------------------------------

    def fine_tune(
        self, train_file: str, validation_file: str | None
    ) -> tuple[dict[str, Any], str | None]:
        """The succeeded job (started once per fingerprint; a job worker trains it: this
        process's, or any sharing the database) and the trainer's account of the checkpoint it
        kept."""
        o = self.options
        jobs = self.services.fine_tuning
        meta = {"distill": self.fp}
        job = self._live_job(meta)
        if job is None:
            # local training's own options, sent only when set (a provider's fine-tuning API,
            # which trains its own way, refuses them)
            extra: dict[str, Any] = {"method": o.method} if o.method != "lora" else {}
            if o.lora_r is not None:
                extra |= {"lora_r": o.lora_r, "lora_alpha": 2 * o.lora_r}
            # the checkpoint is chosen by the fields the graders compare (the user's graders
            # may name other fields than the trainer would infer)
            fields = measured_fields(self.inventory.graders) if self.inventory else []
            if fields and isinstance(jobs.registry.resolve(o.student).backend, LocalBackend):
                extra["measure_fields"] = fields
            job = jobs.create(
                {
                    "model": o.student,
                    "training_file": train_file,
                    "validation_file": validation_file,
                    "suffix": slug(o.prompt, 18),
                    "seed": 42,
                    "metadata": meta,
                    "method": {
                        "type": "supervised",
                        "supervised": {
                            "hyperparameters": {
                                "n_epochs": o.n_epochs,
                                "batch_size": o.batch_size,
                                "learning_rate_multiplier": o.learning_rate_multiplier,
                            }
                        },
                    },
                }
                | ({"distillery": extra} if extra else {})
            )
            self.say(f"distill: started job {job['id']}")
        else:
            self.say(f"distill: reusing job {job['id']} ({job['status']})")
        return self._follow(job, "fine-tune")

    def _live_job(self, meta: dict[str, str]) -> dict[str, Any] | None:
        """The job tagged ``meta`` that has not failed or been cancelled, if any."""
        return next(
            (
                j
                for j in self.services.fine_tuning.list(limit=100, metadata=meta).data
                if j["status"] not in ("failed", "cancelled")
            ),
            None,
        )

    def _follow(self, job: dict[str, Any], label: str) -> tuple[dict[str, Any], str | None]:
        """Wait for ``job`` with a progress bar; the succeeded job and its trainer's account of
        the checkpoint it kept."""
        jobs = self.services.fine_tuning
        total: float | None = None
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            self._check_stop()
            step = 0.0
            for ev in jobs.events(job["id"], limit=20).data:
                data: dict[str, Any] = ev["data"] if isinstance(ev.get("data"), dict) else {}
                if ev.get("type") == "metrics" and "step" in data:
                    step = max(step, float(data["step"]))
                    total = float(data.get("total_steps") or 0) or total
            report(self.progress, ProgressEvent(label, step, total))
            time.sleep(2.0)
            job = jobs.retrieve(job["id"])
        if job["status"] != "succeeded":
            raise RuntimeError(f"fine-tuning job {job['id']} {job['status']}: {job.get('error')}")
        report(self.progress, ProgressEvent(label, total or 1.0, total or 1.0))
        selection: str | None = None
        for event in jobs.all_events(job["id"]):
            found = event.body.get("data")
            if isinstance(found, dict) and isinstance(found.get("selection"), dict):
                selection = str(found["selection"].get("reason") or "") or None
        return job, selection

    # -- 5b. reinforce ---------------------------------------------------------------------------

    def rft_file(self, file_id: str | None, split: str) -> str | None:
        """A split's fine-tuning file as reinforcement rows (made once): each prompt without its
        answer, the answer as ``reference`` and, when it parses, ``reference_json``: the fields
        the graders read, as the eval's items carry them."""
        if file_id is None:
            return None
        filename = f"{self.dataset_name}-v1-{split}-rft.jsonl"
        found = self._file(filename, "fine-tune")
        if found is not None:
            return found
        lines = []
        with self.services.files.open(file_id) as fh:
            for raw in fh:
                if not raw.strip():
                    continue
                messages = list(json.loads(raw)["messages"])
                reference = str(messages.pop().get("content") or "")
                row: dict[str, Any] = {"messages": messages, "reference": reference}
                parsed = json_object(reference)
                if parsed is not None:
                    row["reference_json"] = parsed
                lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        return self.services.files.create(
            io.BytesIO("".join(lines).encode()), filename=filename, purpose="fine-tune"
        ).id

    def reinforce(
        self,
        inventory: Inventory,
        parent: Mapping[str, Any],
        train_file: str,
        validation_file: str | None,
        max_tokens: int,
    ) -> tuple[dict[str, Any], str | None]:
        """The succeeded reinforcement job from the distilled student (started once per
        fingerprint), and its account of the step it kept."""
        jobs = self.services.fine_tuning
        hyper = self.options.rft_hyperparameters
        recipe = hashlib.sha256(json.dumps(hyper, sort_keys=True).encode()).hexdigest()[:8]
        meta = {"distill_rft": f"{self.fp}-{recipe}"}
        job = self._live_job(meta)
        if job is None:
            section: dict[str, Any] = {
                "grader": reward_grader(inventory.graders),
                "hyperparameters": dict(hyper),
            }
            if inventory.response_format is not None:
                section["response_format"] = inventory.response_format
            job = jobs.create(
                {
                    "model": str(parent["fine_tuned_model"]),
                    "training_file": self.rft_file(train_file, "train"),
                    "validation_file": self.rft_file(validation_file, "validation"),
                    "suffix": slug(self.options.prompt, 14) + "-rft",
                    "seed": 42,
                    "metadata": meta,
                    "method": {"type": "reinforcement", "reinforcement": section},
                    "distillery": {"max_completion_tokens": max_tokens},
                }
            )
            self.say(f"reinforce: started job {job['id']} from {parent['fine_tuned_model']}")
        else:
            self.say(f"reinforce: reusing job {job['id']} ({job['status']})")
        return self._follow(job, "reinforce")

    # -- 6. route --------------------------------------------------------------------------------

    def serve_teacher(self, inventory: Inventory) -> str | None:
        """Make sure a provider answers the teacher's model, which the route needs. When none
        does (traffic imported, not captured live), the teacher's recorded answers serve it in
        this process (a ``replay`` provider, as the demo's offline teacher); returns a note."""
        try:
            self.services.providers.route(inventory.teacher)
            return None
        except DistilleryError:
            pass
        home = self.services.settings.home
        path = home / "distill" / f"recorded-teacher-{self.fp}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = self.services.stored_completions
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for line in export_lines([stored.get(c) for c in inventory.usable]):
                out.write(line)
        tmp.replace(path)
        config = ReplayProviderConfig(
            kind="replay", models=[inventory.teacher], recordings=[str(path)]
        )
        provider = provider_kind("replay").build(
            f"recorded-{slug(inventory.teacher)}", config, ProviderContext(home=home)
        )
        self.services.providers.add(provider)  # type: ignore[arg-type]
        return (
            f"no provider serves {inventory.teacher} here: for this run its recorded answers "
            f"do ({path.name}); configure a provider of {inventory.teacher} before the route "
            "takes live traffic"
        )

    def route(
        self, inventory: Inventory, student: str, teacher_run: str, student_run: str, n_test: int
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The prompt's route in shadow, gated by the comparison, and a note when there is
        none. The route that already takes the prompt's traffic is reused: as it is when this
        run made it with these runs, else in shadow (or off) it gets the new student, graders and
        gate (runs done again, after one was deleted, are new runs); serving users (canary,
        full) it is left as it is, and the note says so."""
        routes = self.services.routes
        name = self.options.route_name or f"{slug(self.options.prompt)}-distilled"
        spec: dict[str, Any] = {
            "student": student,
            "mode": "shadow",
            "graders": route_graders(inventory.graders),
            "gate": {
                "teacher_run": teacher_run,
                "student_run": student_run,
                "min_percent_of_teacher": self.options.min_percent_of_teacher,
                "min_shadow_pairs": max(1, min(50, n_test)),
            },
            "metadata": {"distill": self.fp, "prompt": self.options.prompt[:512]},
        }
        name_taken = False
        for old in self._routes():
            theirs = old.get("match") or {}
            same_traffic = (
                theirs.get("model") == inventory.teacher
                and (theirs.get("metadata") or {}).get("prompt") == self.options.prompt
            )
            name_taken = name_taken or old["name"] == name
            if not same_traffic:
                continue
            gate = old.get("gate") or {}
            if (old.get("metadata") or {}).get("distill") == self.fp and (
                gate.get("teacher_run"),
                gate.get("student_run"),
            ) == (teacher_run, student_run):
                self.say(f"route: reusing {old['id']}")
                return old, None
            if old.get("mode") not in ("shadow", "off"):
                return None, (
                    f"route {old['name']} ({old['id']}) already serves this prompt's traffic in "
                    f"{old.get('mode')} mode: it is left as it is; to move it to {student}, "
                    "update its student and gate with the runs above"
                )
            updated = routes.update(old["id"], spec, actor="distill")
            self.say(f"route: {old['name']} ({old['id']}) now shadows {student}")
            return updated, None
        match: dict[str, Any] = {
            "model": inventory.teacher,
            "metadata": {"prompt": self.options.prompt},
        }
        if inventory.prompt_version is not None:
            match["prompt_version"] = inventory.prompt_version
        try:
            created = routes.create(
                {"name": f"{name}-{self.fp[:6]}" if name_taken else name, "match": match, **spec},
                actor="distill",
            )
        except ConflictError as exc:  # a broader route already takes this traffic
            return None, f"no route created: {exc.message}"
        self.say(f"route: created {created['id']} in shadow")
        return created, None

    def _routes(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page, more = self.services.routes.page(after=after, limit=100, order="asc")
            found.extend(page)
            if not more or not page:
                return found
            after = page[-1]["id"]

    # -- the whole run ---------------------------------------------------------------------------

    def _check_stop(self) -> None:
        if self.should_stop():
            raise Interrupted("stopped; the next run resumes where this one was")

    def run(self) -> DistillReport:
        started = time.time()
        inventory = self.take_inventory()
        unusable = len(inventory.unusable)
        self.say(
            f"traffic: {len(inventory.usable)} usable answers of {inventory.teacher} "
            f"({inventory.corrected} corrected"
            + (f", {unusable} not parsing as the response format, left out" if unusable else "")
            + ")"
        )
        inventory.check_enough()
        self.fp = self.fingerprint(inventory)
        self.step("dataset")
        counts = self.dataset(inventory)
        train_file = self.exported("train")
        assert train_file is not None  # dataset() checked the split has examples
        validation_file = self.exported("validation")
        lines = self.test_items()
        items_file = self.items_file(lines)
        eval_id = self.eval_id(inventory)
        max_tokens = self.max_tokens(inventory, lines)
        o = self.options
        self.step("baselines")
        teacher = self.evaluate(
            eval_id, items_file, role="teacher", model=None, max_tokens=max_tokens
        )
        base = self.evaluate(
            eval_id, items_file, role="base", model=o.student, max_tokens=max_tokens
        )
        self.step("fine-tune")
        job, selection = self.fine_tune(train_file, validation_file)
        student_model = str(job["fine_tuned_model"])
        self.step("evaluate")
        student = self.evaluate(
            eval_id, items_file, role="student", model=student_model, max_tokens=max_tokens
        )
        runs = [teacher, base, student]
        rft: RftRun | None = None
        rft_note: str | None = None
        if o.rft and not isinstance(
            self.services.fine_tuning.registry.resolve(o.student).backend, LocalBackend
        ):
            rft_note = "reinforcement fine-tuning runs on the local trainer only: skipped"
        elif o.rft:
            self.step("reinforce")
            rft_job, rft_selection = self.reinforce(
                inventory, job, train_file, validation_file, max_tokens
            )
            rft_model = str(rft_job["fine_tuned_model"])
            rft_eval = self.evaluate(
                eval_id, items_file, role="rft", model=rft_model, max_tokens=max_tokens
            )
            runs.append(rft_eval)
            rft = RftRun(rft_job, rft_selection, rft_eval)
        comparison = self.services.evals.compare([r["id"] for r in runs], baseline=teacher["id"])
        routed, routed_model = student, student_model
        if rft is not None and _pass_rate(rft.run, comparison) > _pass_rate(student, comparison):
            routed, routed_model = rft.run, str(rft.job["fine_tuned_model"])
        self.step("route")
        teacher_note = self.serve_teacher(inventory)
        if teacher_note:
            self.say(f"route: {teacher_note}")
        route, route_note = self.route(
            inventory, routed_model, teacher["id"], routed["id"], len(lines)
        )
        gate = self.services.routes.gate(route["id"]) if route is not None else {}
        notes = [n for n in (teacher_note, rft_note, route_note) if n]
        return self._report(
            inventory,
            counts=counts,
            runs=runs,
            comparison=comparison,
            job=job,
            selection=selection,
            rft=rft,
            routed=routed,
            route=route,
            gate=gate,
            started=started,
            notes=notes,
        )

    # -- the report ------------------------------------------------------------------------------

    def _summary(
        self, run: Mapping[str, Any], label: str, model: str, comparison: Mapping[str, Any]
    ) -> RunSummary:
        side = _side(run, comparison)
        criteria = {
            c["testing_criteria"].rsplit("-", 1)[0]: c["passed"] / max(c["passed"] + c["failed"], 1)
            for c in run.get("per_testing_criteria_results") or []
        }
        items = self.services.evals.output_items(run["id"])
        prompt_tokens = completion_tokens = 0
        for item in items:
            usage = (item.get("sample") or {}).get("usage") or {}
            prompt_tokens += int(usage.get("prompt_tokens") or 0)
            completion_tokens += int(usage.get("completion_tokens") or 0)
        n = max(len(items), 1)
        return RunSummary(
            label=label,
            model=model,
            run_id=str(run["id"]),
            pass_rate=float(side["pass_rate"] or 0.0),
            pass_rate_ci=side.get("pass_rate_ci"),
            percent_of_teacher=side.get("percent_of_baseline"),
            percent_of_teacher_ci=side.get("percent_of_baseline_ci"),
            criteria=criteria,
            items=len(items),
            errored=int((run.get("result_counts") or {}).get("errored") or 0),
            prompt_tokens_per_request=prompt_tokens / n,
            completion_tokens_per_request=completion_tokens / n,
            seconds_per_request=float(run.get("elapsed_s") or 0.0) / n,
        )

    def _misses(self, teacher_run: str, student_run: str) -> list[Miss]:
        """Test items where the student fails a criterion the teacher's answer passes."""
        teacher = {_key(i): i for i in self.services.evals.output_items(teacher_run)}
        out = []
        for item in self.services.evals.output_items(student_run):
            before = teacher.get(_key(item))
            if before is None:
                continue
            passed = {r["name"]: bool(r.get("passed")) for r in before.get("results") or []}
            failed = [
                r["name"]
                for r in item.get("results") or []
                if not r.get("passed") and passed.get(r["name"])
            ]
            if not failed:
                continue
            ds = item.get("datasource_item") or {}
            messages = ds.get("messages") or []
            question = next(
                (str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
            )
            out.append(
                Miss(
                    completion_id=str(ds.get("completion_id") or ""),
                    question=question[:300],
                    reference=str(ds.get("reference") or "")[:300],
                    student=_answer_text(item.get("sample") or {})[:300],
                    criteria=failed,
                )
            )
            if len(out) >= MAX_MISSES:
                break
        return out

    def _report(
        self,
        inventory: Inventory,
        *,
        counts: dict[str, int],
        runs: list[dict[str, Any]],
        comparison: Mapping[str, Any],
        job: Mapping[str, Any],
        selection: str | None,
        rft: RftRun | None,
        routed: Mapping[str, Any],
        route: Mapping[str, Any] | None,
        gate: Mapping[str, Any],
        started: float,
        notes: list[str],
    ) -> DistillReport:
        o = self.options
        teacher_run, base_run, student_run = runs[:3]
        teacher = self._summary(teacher_run, "teacher", inventory.teacher, comparison)
        base = self._summary(base_run, "base student", o.student, comparison)
        distilled = self._summary(
            student_run, "distilled student", str(job["fine_tuned_model"]), comparison
        )
        summaries = [teacher, base, distilled]
        stage: RftStage | None = None
        student = distilled  # the one the route gates
        if rft is not None:
            rft_summary = self._summary(
                rft.run, "RFT student", str(rft.job["fine_tuned_model"]), comparison
            )
            summaries.append(rft_summary)
            if routed["id"] == rft.run["id"]:
                student = rft_summary
            stage = RftStage(
                job_id=str(rft.job["id"]),
                fine_tuned_model=str(rft.job["fine_tuned_model"]),
                hyperparameters=dict(rft.job.get("hyperparameters") or {}),
                selection=rft.selection,
                training_seconds=float(
                    (rft.job.get("finished_at") or rft.job["created_at"]) - rft.job["created_at"]
                ),
                routed=student is rft_summary,
            )
        criteria = [
            CriterionRow(
                name,
                teacher.criteria.get(name),
                base.criteria.get(name),
                student.criteria.get(name),
            )
            for name in [g["name"] for g in inventory.graders]
        ]
        stored = [self.services.stored_completions.get(c) for c in inventory.usable]
        teacher_1k = 1000 * sum(c.cost_usd or 0.0 for c in stored) / max(len(stored), 1)
        prices = self.services.prices
        student_1k = student_cost_per_1k(
            prices,
            o.student,
            prompt_tokens=student.prompt_tokens_per_request,
            completion_tokens=student.completion_tokens_per_request,
            seconds_per_request=student.seconds_per_request,
        )
        seconds = float((job.get("finished_at") or job["created_at"]) - job["created_at"])
        trained = int(job.get("trained_tokens") or 0)
        cost = training_cost(prices, o.student, trained_tokens=trained, seconds=seconds)
        per_day = o.requests_per_day
        if per_day is None:
            per_day = sum(
                float(s["requests_per_day"])
                for s in self.services.costs.report()["by_prompt"]
                if s.get("prompt") == o.prompt and s.get("model") == inventory.teacher
            )
        saving = payback(
            teacher_model=inventory.teacher,
            student_model=student.model,
            teacher_cost_per_1k=teacher_1k,
            student_cost_per_1k=student_1k,
            requests_per_day=per_day,
            training_cost=cost,
        )
        return DistillReport(
            prompt=o.prompt,
            fingerprint=self.fp,
            inventory=inventory.to_json(),
            splits=counts,
            dataset=self.dataset_name,
            graders=inventory.graders,
            runs=summaries,
            criteria=criteria,
            misses=self._misses(teacher.run_id, student.run_id),
            job_id=str(job["id"]),
            fine_tuned_model=str(job["fine_tuned_model"]),
            hyperparameters=dict(job.get("hyperparameters") or {}),
            selection=selection,
            trained_tokens=trained,
            training_seconds=seconds,
            training_cost_usd=cost,
            teacher_cost_per_1k=teacher_1k,
            student_cost_per_1k=student_1k,
            requests_per_day=per_day,
            daily_saving=saving.daily_saving,
            payback_days=saving.payback_days,
            route_id=str(route["id"]) if route is not None else None,
            route_name=str(route["name"]) if route is not None else None,
            gate=dict(gate),
            min_percent_of_teacher=o.min_percent_of_teacher,
            seconds=time.time() - started,
            notes=notes,
            rft=stage,
        )


def route_graders(graders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The eval's graders for the route's shadow pairs: the reference is the teacher's live
    answer; a format check blocks (a student answer that fails it goes to the teacher)."""
    out = []
    for grader in graders:
        text = json.dumps(grader, ensure_ascii=False)
        text = text.replace("item.reference_json.", "item.teacher_json.").replace(
            "{{item.reference}}", "{{item.teacher}}"
        )
        converted: dict[str, Any] = json.loads(text)
        if grader["type"] in ("json_schema", "valid_json"):
            converted["blocking"] = True
        out.append(converted)
    return out


def _answer_text(sample: Mapping[str, Any]) -> str:
    """The text of an output item's sample (its first output message)."""
    for message in sample.get("output") or []:
        if isinstance(message, Mapping) and message.get("content"):
            return str(message["content"])
    return str(sample.get("output_text") or "")


def _key(item: Mapping[str, Any]) -> str:
    ds = item.get("datasource_item") or {}
    return str(ds.get("completion_id") or f"#{item.get('datasource_item_id')}")
