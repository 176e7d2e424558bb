"""Unseen public tasks with default settings: CLINC150 intents and SNIPS intents + slots.

PRODUCT.md 4: a student distilled with the defaults, from at most 10 examples per label, reaches
at least 90% of the best published small-model figure, in at most 20 minutes of training.

Each task runs through distillery's public API exactly as a new user would: a server in-process
on 127.0.0.1 with a fresh ``DISTILLERY_HOME`` and the default configuration (the embedded
students served by the default ``local`` provider); a system prompt that lists every label; a
training file in OpenAI's chat fine-tuning format (system, user, and the JSON answer as the
assistant) uploaded with ``client.files.create``; one fine-tuning job with no hyperparameters
(every one "auto"); then the base student and the ``ft:`` model answer the test slice through
``client.chat.completions.create`` with a ``json_schema`` response format, ``temperature=0``.

* CLINC150 (Larson et al. 2019, CC BY 3.0): 150 intents plus ``oos`` (out of scope, a 151st label
  as in the paper's *oos-train*); N train utterances per intent and ``round(N x 100 / 32)`` oos
  ones (the shipped 32 per intent and 100 oos, scaled); test: 8 per intent (1,200) + 100 oos.
  Reported: in-scope accuracy, oos recall, overall accuracy, valid JSON. Anchors: the paper's
  Table 2 (BERT 96.9% in-scope at 100 per intent).
* SNIPS (sonos/nlu-benchmark 2017-06 custom intents, CC0): 7 intents, 39 slot names; N train
  utterances per intent; test: the 700 validation utterances. Reported: intent accuracy, slot F1
  (micro over (slot name, value) pairs, values matched exactly after collapsing whitespace; and
  macro per slot within each intent, averaged over intents, as the anchors are), valid JSON.
  Anchors: the commercial engines' figures from the repository's metrics files (10-70 per
  intent) and the joint BERT of the literature (full data). See ``benchmarks/data/*/ANCHORS.md``.

The assistant answers in the training file are compact JSON with the keys in the schema's order
(SNIPS's slots alphabetical), which is what the constrained decoder writes. The data ships under
``benchmarks/data/`` (``prepare.py`` regenerates it from the upstream commits). The local
provider gets every core for generation (training and generation never run at once here), as in
``make demo``; 32 requests at a time fill its batch.

    .venv/bin/python benchmarks/bench_public_tasks.py --quick            # smoke test, minutes
    .venv/bin/python benchmarks/bench_public_tasks.py --task clinc150 --per-label 8
    .venv/bin/python benchmarks/bench_public_tasks.py --task snips --per-label 32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
OOS = "oos"
OOS_SHIPPED, PER_LABEL_SHIPPED = 100, 32  # CLINC: oos train utterances per 32 per intent
BAR_SHARE, BAR_PER_LABEL, BAR_TRAINING_MIN = 0.90, 10, 20.0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def stratified(items: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """``limit`` items with each label's share kept (largest remainder), the lowest ranks first."""
    if limit is None or limit >= len(items):
        return items
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in sorted(items, key=lambda i: i["rank"]):
        by_label[item["intent"]].append(item)
    exact = {label: limit * len(rows) / len(items) for label, rows in by_label.items()}
    quota = {label: int(x) for label, x in exact.items()}
    # equal remainders: the labels in the order they first appear (sorted() is stable)
    order = sorted(by_label, key=lambda label: quota[label] - exact[label])
    for label in order[: limit - sum(quota.values())]:
        quota[label] += 1
    chosen = {id(i) for label, rows in by_label.items() for i in rows[: quota[label]]}
    return [item for item in items if id(item) in chosen]


def normalize(value: Any) -> str | None:
    return " ".join(value.split()) if isinstance(value, str) and value.strip() else None


def parse(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# -- the tasks -------------------------------------------------------------------------------------


@dataclass
class Task:
    name: str
    labels: list[str]
    system: str
    schema: dict[str, Any]
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    max_tokens: int
    strict: bool  # json_schema strict: every property required (SNIPS's slots are optional)
    answer: Callable[[dict[str, Any]], dict[str, Any]]  # the gold JSON answer of an item
    score: Callable[[list[dict[str, Any]]], dict[str, float]]  # per-item results -> figures
    note: str = ""  # what was trained, for the report

    def messages(self, item: dict[str, Any]) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": item["text"]},
        ]

    def response_format(self) -> dict[str, Any]:
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "strict": self.strict, "schema": self.schema},
        }

    def training_lines(self) -> list[str]:
        return [
            json.dumps(
                {
                    "messages": [
                        *self.messages(item),
                        {
                            "role": "assistant",
                            # compact, as OpenAI and the constrained decoder write JSON
                            "content": json.dumps(
                                self.answer(item), ensure_ascii=False, separators=(",", ":")
                            ),
                        },
                    ]
                },
                ensure_ascii=False,
            )
            for item in self.train
        ]


def clinc150(
    per_label: int, oos_train: int | None, test_limit: int | None, labels: int | None
) -> Task:
    domains: dict[str, list[str]] = json.loads((DATA / "clinc150/domains.json").read_text())
    intents = [i for names in domains.values() for i in names][:labels]
    keep = set(intents)
    grouped = {d: [i for i in names if i in keep] for d, names in domains.items()}
    listing = "\n".join(f"- {d}: {', '.join(names)}" for d, names in grouped.items() if names)
    system = (
        "You classify the requests that users send to a virtual assistant. Answer with the one "
        f"intent below that the request asks for (the {len(intents)} intents are grouped by "
        f'domain), or "{OOS}" when the request is out of scope: it fits none of them.\n\n'
        f"{listing}\n\n"
        f'Reply with JSON only: {{"intent":"<an intent from the list, or {OOS}>"}}'
    )
    n_oos = round(per_label * OOS_SHIPPED / PER_LABEL_SHIPPED) if oos_train is None else oos_train
    train = [
        i
        for i in read_jsonl(DATA / "clinc150/train.jsonl")
        if (i["intent"] in keep and i["rank"] < per_label)
        or (i["intent"] == OOS and i["rank"] < n_oos)
    ]
    test = [i for i in read_jsonl(DATA / "clinc150/test.jsonl") if i["intent"] in keep | {OOS}]
    labels_all = [*intents, OOS]
    return Task(
        name="clinc150",
        labels=labels_all,
        system=system,
        schema={
            "type": "object",
            "properties": {"intent": {"type": "string", "enum": labels_all}},
            "required": ["intent"],
            "additionalProperties": False,
        },
        train=train,
        test=stratified(test, test_limit),
        max_tokens=32,
        strict=True,
        answer=lambda item: {"intent": item["intent"]},
        score=score_clinc,
        note=f"{per_label} per intent x {len(intents)} + {n_oos} {OOS}",
    )


def snips(per_label: int, test_limit: int | None) -> Task:
    slots: dict[str, list[str]] = json.loads((DATA / "snips/slots.json").read_text())
    names = sorted({n for ns in slots.values() for n in ns})  # the order the decoder allows
    listing = "\n".join(f"- {intent}: {', '.join(ns)}" for intent, ns in slots.items())
    system = (
        "You understand the requests that users say to a voice assistant. Give the request's "
        "intent, one of the 7 below, and its slots: for each slot of that intent (listed after "
        "it) that the request mentions, the words of the request that fill it, copied exactly. "
        "Leave out the slots it does not mention.\n\n"
        f"{listing}\n\n"
        'Reply with JSON only: {"intent":"<intent>","slots":{"<slot>":"<words from the '
        'request>",...}} with the slots in alphabetical order.'
    )
    train = [i for i in read_jsonl(DATA / "snips/train.jsonl") if i["rank"] < per_label]
    return Task(
        name="snips",
        labels=list(slots),
        system=system,
        schema={
            "type": "object",
            "properties": {
                "intent": {"type": "string", "enum": list(slots)},
                "slots": {
                    "type": "object",
                    "properties": {n: {"type": "string"} for n in names},
                    "additionalProperties": False,
                },
            },
            "required": ["intent", "slots"],
            "additionalProperties": False,
        },
        train=train,
        test=stratified(read_jsonl(DATA / "snips/test.jsonl"), test_limit),
        max_tokens=128,
        strict=False,
        answer=lambda item: {
            "intent": item["intent"],
            "slots": dict(sorted(item["slots"].items())),
        },
        score=score_snips,
        note=f"{per_label} per intent x {len(slots)}",
    )


# -- scoring ---------------------------------------------------------------------------------------


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else float("nan")


def score_clinc(rows: list[dict[str, Any]]) -> dict[str, float]:
    def right(r: dict[str, Any]) -> bool:
        return r["output"] is not None and r["output"].get("intent") == r["intent"]

    return {
        "in_scope_accuracy": _mean(right(r) for r in rows if r["intent"] != OOS),
        "oos_recall": _mean(right(r) for r in rows if r["intent"] == OOS),
        "accuracy": _mean(right(r) for r in rows),
        "valid_json": _mean(r["output"] is not None for r in rows),
    }


def _pairs(slots: Any) -> set[tuple[str, str]]:
    if not isinstance(slots, dict):
        return set()
    return {(str(k), v) for k, raw in slots.items() if (v := normalize(raw)) is not None}


def _f1(tp: float, pred: float, gold: float) -> float:
    return 2 * tp / (pred + gold) if pred + gold else 0.0


def score_snips(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Intent accuracy; slot F1 micro over (name, value) pairs, and macro: per (gold intent,
    slot name) with gold occurrences, averaged over the intent's slots, then over intents."""
    tp = pred = gold = 0
    per_slot: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in rows:
        out = r["output"] or {}
        predicted = _pairs(out.get("slots"))
        truth = _pairs(r["slots"])
        tp, pred, gold = tp + len(predicted & truth), pred + len(predicted), gold + len(truth)
        for name, _ in predicted:
            per_slot[(r["intent"], name)]["pred"] += 1
        for name, value in truth:
            per_slot[(r["intent"], name)]["gold"] += 1
            per_slot[(r["intent"], name)]["tp"] += (name, value) in predicted
    by_intent: dict[str, list[float]] = defaultdict(list)
    for (intent, _), c in per_slot.items():
        if c["gold"]:
            by_intent[intent].append(_f1(c["tp"], c["pred"], c["gold"]))
    return {
        "intent_accuracy": _mean(
            r["output"] is not None and r["output"].get("intent") == r["intent"] for r in rows
        ),
        "slot_f1": _f1(tp, pred, gold),
        "slot_precision": tp / pred if pred else 0.0,
        "slot_recall": tp / gold if gold else 0.0,
        "slot_f1_macro": _mean(sum(v) / len(v) for v in by_intent.values()),
        "valid_json": _mean(r["output"] is not None for r in rows),
    }


# -- the API calls ---------------------------------------------------------------------------------


def evaluate(client: Any, task: Task, model: str, concurrency: int) -> dict[str, Any]:
    """Every test item through ``chat.completions`` (``concurrency`` at once); per-item rows,
    the task's figures, the wall time and the mean prompt tokens."""
    fmt = task.response_format()

    def ask(item: dict[str, Any]) -> dict[str, Any]:
        try:
            r = client.chat.completions.create(
                model=model,
                messages=task.messages(item),
                response_format=fmt,
                temperature=0,
                max_tokens=task.max_tokens,
            )
        except Exception as exc:  # an answer that failed counts as wrong, with its error
            return {**item, "output": None, "raw": None, "error": str(exc)[:300]}
        text = r.choices[0].message.content
        usage = r.usage.prompt_tokens if r.usage else None
        return {**item, "output": parse(text), "raw": text, "prompt_tokens": usage}

    started = time.perf_counter()
    ask(task.test[0])  # not scored: the first request loads the model (or adapter) and grammar
    first = time.perf_counter() - started
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(ask, task.test))
    seconds = time.perf_counter() - started
    tokens = [r["prompt_tokens"] for r in rows if r.get("prompt_tokens")]
    errors = Counter(r["error"] for r in rows if r.get("error"))
    for message, n in errors.most_common(3):
        print(f"    {n} request(s) failed: {message}", flush=True)
    return {
        "model": model,
        "figures": task.score(rows),
        "seconds": seconds,
        "first_request_seconds": first,
        "items": len(rows),
        "errors": sum(errors.values()),
        "prompt_tokens": sum(tokens) / len(tokens) if tokens else None,
        "rows": rows,
    }


def follow(client: Any, job_id: str) -> tuple[Any, float | None]:
    """Print the job's events as they come (metrics about every tenth of the steps) until it
    ends; the job and the training worker's peak resident memory (MiB) when an event has it."""
    seen: set[str] = set()
    peak: float | None = None
    while True:
        fresh = [
            e
            for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data
            if e.id not in seen
        ]
        for event in reversed(fresh):  # the list is newest first
            seen.add(event.id)
            data = event.data if isinstance(event.data, dict) else {}
            peak = data.get("peak_rss_mb", peak)
            if event.type == "metrics":
                step, total = int(data.get("step", 0)), int(data.get("total_steps") or 0)
                if total and step % max(1, total // 10) and step != total:
                    continue
            print(f"    [{time.strftime('%H:%M:%S')}] {event.message}", flush=True)
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled") and not fresh:
            return job, peak
        time.sleep(2.0)


def distill(
    client: Any, task: Task, student: str, workdir: Path, n_epochs: int | None = None
) -> dict[str, Any]:
    path = workdir / f"{task.name}-train.jsonl"
    path.write_text("\n".join(task.training_lines()) + "\n", encoding="utf-8")
    with path.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    started = time.perf_counter()
    # the defaults: no hyperparameters (a sweep may set the epochs; the rest stays "auto")
    method = (
        {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": n_epochs}}}
        if n_epochs
        else None
    )
    job = client.fine_tuning.jobs.create(
        model=student,
        training_file=uploaded.id,
        suffix=task.name,
        **({"method": method} if method else {}),
    )
    what = f"n_epochs {n_epochs}, the rest auto" if n_epochs else "every hyperparameter auto"
    print(f"  job {job.id}: {len(task.train)} examples, {what}", flush=True)
    job, peak = follow(client, job.id)
    wall = time.perf_counter() - started
    if job.status != "succeeded":
        raise RuntimeError(f"fine-tuning job {job.id} {job.status}: {job.error}")
    hyper = job.hyperparameters
    return {
        "job": job.id,
        "model": job.fine_tuned_model,
        "wall_seconds": wall,
        "job_seconds": (job.finished_at or 0) - job.created_at,
        "trained_tokens": job.trained_tokens,
        "peak_rss_mb": peak,
        "hyperparameters": hyper.model_dump() if hyper is not None else None,
        "examples": len(task.train),
    }


# -- the report ------------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}%"


def anchors(task: str) -> dict[str, Any]:
    return dict(json.loads((DATA / task / "anchors.json").read_text()))


def table(header: list[str], rows: list[list[str]]) -> None:
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def student_rows(results: dict[str, Any], per_label: int, keys: list[str]) -> list[list[str]]:
    rows = []
    for label, key, shots in (("base", "base", 0), ("distilled", "distilled", per_label)):
        if key in results:
            f = results[key]["figures"]
            rows.append(
                [f"{label}: {results[key]['model']}", str(shots), *(pct(f[k]) for k in keys)]
            )
    return rows


def report_clinc(results: dict[str, Any], per_label: int) -> None:
    t2 = anchors("clinc150")["table_2"]
    keys = ["in_scope_accuracy", "oos_recall", "accuracy", "valid_json"]
    rows = student_rows(results, per_label, keys)
    for method, model in (("oos-train", "BERT"), ("oos-threshold", "BERT"), ("oos-train", "SVM")):
        a = t2[method][model]
        for size, shots in (("full", "100"), ("small", "50")):
            name = f"{model}, {method} (Larson et al. 2019, Table 2)"
            rows.append([name, shots, f"{a[size]:.1f}%", f"{a['oos_' + size]:.1f}%", "-", "-"])
    header = ["model", "train per intent", "in-scope accuracy", "oos recall", "accuracy", "JSON ok"]
    table(header, rows)
    if "distilled" in results:
        got = results["distilled"]["figures"]["in_scope_accuracy"]
        anchor = t2["oos-train"]["BERT"]["full"] / 100
        bar("in-scope accuracy", got, anchor, "BERT's at 100 per intent", per_label, results)


def report_snips(results: dict[str, Any], per_label: int) -> None:
    engines = anchors("snips")["engines"]
    # the anchors' training size nearest at or above ours, 70 and the full train files
    size = next((s for s in ("10", "20", "50", "70") if int(s) >= per_label), "70")
    keys = ["intent_accuracy", "slot_f1", "slot_f1_macro", "valid_json"]
    rows = student_rows(results, per_label, keys)
    for engine, sizes in engines.items():
        for n, a in sizes.items():
            if n in (size, "70", "full"):
                own = "-" if a["intent_recall"] is None else f"({a['intent_recall']:.1f}% own)"
                micro = f"<= {a['micro_slot_f1_upper_bound']:.1f}%"
                name = f"{engine} (sonos/nlu-benchmark 2017, one intent at a time)"
                rows.append([name, n, own, micro, f"{a['macro_slot_f1']:.1f}%", "-"])
    for name, acc, f1 in (
        ("Joint BERT (Chen et al. 2019)", 98.6, 97.0),
        ("Slot-gated (Goo et al. 2018)", 97.0, 88.8),
    ):
        rows.append(
            [
                f"{name}, Goo et al.'s test split",
                "~1,870",
                f"{acc}%",
                f"{f1}% (conlleval)",
                "-",
                "-",
            ]
        )
    header = [
        "model",
        "train per intent",
        "intent accuracy",
        "slot F1",
        "slot F1 (macro)",
        "JSON ok",
    ]
    table(header, rows)
    if "distilled" in results:
        best, engine = max(
            (a["micro_slot_f1_upper_bound"] / 100, e)
            for e, s in engines.items()
            for n, a in s.items()
            if n == size
        )
        got = results["distilled"]["figures"]["slot_f1"]
        of = f"the best engine's at {size} per intent ({engine}, an upper bound)"
        bar("slot F1", got, best, of, per_label, results)


def bar(
    what: str, got: float, anchor: float, of: str, per_label: int, results: dict[str, Any]
) -> None:
    minutes, share = results["training"]["wall_seconds"] / 60, got / anchor
    print(
        f"\nbar (PRODUCT.md 4): {what} {got:.1%} is {share:.1%} of {of}, {anchor:.1%} (needs "
        f"{BAR_SHARE:.0%}: {'met' if share >= BAR_SHARE else 'NOT met'}); {per_label} examples "
        f"per label (needs <= {BAR_PER_LABEL}: "
        f"{'met' if per_label <= BAR_PER_LABEL else 'NOT met'}); training {minutes:.1f} min "
        f"(needs <= {BAR_TRAINING_MIN:.0f}: {'met' if minutes <= BAR_TRAINING_MIN else 'NOT met'})"
    )


def report(task: Task, results: dict[str, Any], per_label: int) -> None:
    (report_clinc if task.name == "clinc150" else report_snips)(results, per_label)
    tr = results["training"]
    peak = "-" if tr["peak_rss_mb"] is None else f"{tr['peak_rss_mb'] / 1024:.2f} GiB"
    print(
        f"training: {task.note}: {tr['examples']} examples, {tr['trained_tokens']:,} tokens "
        f"trained in {tr['wall_seconds'] / 60:.1f} min (job created to succeeded; the job's "
        f"own timestamps {tr['job_seconds'] / 60:.1f} min), hyperparameters "
        f"{tr['hyperparameters']}, training worker's peak RSS {peak}"
    )
    for key in ("base", "distilled"):
        if key not in results:
            continue
        r = results[key]
        tokens = "-" if r["prompt_tokens"] is None else f"{r['prompt_tokens']:.0f}"
        print(
            f"evaluation ({key}): {r['items']} items in {r['seconds']:.0f} s "
            f"({r['items'] / r['seconds']:.1f} items/s, {r['errors']} failed) after a first "
            f"request of {r['first_request_seconds']:.0f} s; {tokens} prompt tokens per request"
        )
    print(
        f"system prompt: {results['system_prompt_tokens']} tokens with {results['student']}'s "
        "chat template"
    )


# -- main ------------------------------------------------------------------------------------------


def prompt_tokens(student: str, task: Task) -> int:
    from distillery.weights import load_tokenizer, resolve_source

    tokenizer = load_tokenizer(resolve_source(student))

    def count(messages: list[dict[str, str]]) -> int:
        ids = tokenizer.apply_chat_template(messages, tokenize=True)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)  # a BatchEncoding or a list

    # the system prompt's share of a request: the same user message with and without it
    return count(task.messages({"text": "x"})) - count([{"role": "user", "content": "x"}])


def run_task(client: Any, task: Task, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    print(
        f"\n## {task.name}: {len(task.labels)} labels, {len(task.train)} train / {len(task.test)} test items\n",
        flush=True,
    )
    results: dict[str, Any] = {
        "task": task.name,
        "student": args.student,
        "per_label": args.per_label,
    }
    results["system_prompt_tokens"] = prompt_tokens(args.student, task)
    if not args.no_base:
        print(f"  base student {args.student} on the test slice ...", flush=True)
        results["base"] = evaluate(client, task, args.student, args.concurrency)
    print(f"  distilling {args.student} ...", flush=True)
    results["training"] = distill(client, task, args.student, workdir, args.n_epochs)
    print(f"  distilled student {results['training']['model']} on the test slice ...", flush=True)
    results["distilled"] = evaluate(client, task, results["training"]["model"], args.concurrency)
    report(task, results, args.per_label)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=["clinc150", "snips", "all"], default="all")
    parser.add_argument("--per-label", type=int, default=8, help="train examples per label (<= 32)")
    parser.add_argument("--student", default="gemma-3-270m", help="or smollm2-135m-instruct")
    parser.add_argument(
        "--test-limit", type=int, default=None, help="a stratified subset of the test slice"
    )
    parser.add_argument(
        "--oos", type=int, default=None, help="CLINC oos train items (default N x 100 / 32)"
    )
    parser.add_argument(
        "--labels", type=int, default=None, help="CLINC: only the first K intents (+ oos)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="requests at once (8-32)")
    parser.add_argument(
        "--n-epochs", type=int, default=None, help="sweeps only: an explicit epoch count"
    )
    parser.add_argument("--no-base", action="store_true", help="sweeps: skip the base student")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 per label, CLINC on 10 intents, 20 test items",
    )
    parser.add_argument("--home", type=Path, default=None, help="keep the run here")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write every figure and item here"
    )
    args = parser.parse_args()
    if args.quick:
        args.per_label, args.test_limit = 2, args.test_limit or 20
        args.labels = args.labels or 10
    if not 1 <= args.per_label <= PER_LABEL_SHIPPED:
        parser.error(f"--per-label must be 1..{PER_LABEL_SHIPPED} (the shipped train sets)")
    names = ["clinc150", "snips"] if args.task == "all" else [args.task]
    with tempfile.TemporaryDirectory(prefix="bench-public-") as tmp:
        home = args.home or Path(tmp) / "home"
        os.environ["DISTILLERY_HOME"] = str(home)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        results = run(args, names, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0


def run(args: argparse.Namespace, names: list[str], workdir: Path) -> list[dict[str, Any]]:
    import openai

    from distillery.demo.stack import LocalStack
    from distillery.providers.local_config import LocalProviderConfig
    from distillery.services import build_services
    from distillery.weights import materialize, resolve_source, usable_cores

    started = time.perf_counter()
    materialize(resolve_source(args.student))  # the first use converts the embedded weights
    print(f"student {args.student} ready in {time.perf_counter() - started:.0f} s", flush=True)
    services = build_services()
    for provider in services.config.providers.values():
        if isinstance(provider, LocalProviderConfig) and provider.threads is None:
            provider.threads = usable_cores()
    tasks = {
        "clinc150": lambda: clinc150(args.per_label, args.oos, args.test_limit, args.labels),
        "snips": lambda: snips(args.per_label, args.test_limit),
    }
    results = []
    try:
        with LocalStack(services) as stack:
            client = openai.OpenAI(
                base_url=stack.url + "/v1", api_key="bench", max_retries=2, timeout=900
            )
            for name in names:
                results.append(run_task(client, tasks[name](), args, workdir))
    finally:
        services.close_sync()
    return results


if __name__ == "__main__":
    raise SystemExit(main())
