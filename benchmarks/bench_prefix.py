"""Training cost against the length of the shared system prompt (issue 25, item 2).

Every example of a distillation dataset repeats the application's system prompt (the demo's is
345 tokens, an intent classifier listing its labels ~1,000). The trainer computes that shared
prefix once per forward pass (``packing.pack_shared``, exact) and the automatic recipe grows the
batch with the prefix, so the cost per example should hardly grow with the prompt. This measures
seconds per example and peak memory for prefixes of 100, 500 and 1,000 tokens (answers of 10-40
tokens) on the embedded students, side by side with the anchor: the old default batch of 4, where
the prefix is paid once per 4 examples.

Each configuration runs in a subprocess of its own (its peak RSS is its own), trains a few steps
of one epoch and reports the median step after the first.

    .venv/bin/python benchmarks/bench_prefix.py            # both students, 100/500/1000 tokens
    .venv/bin/python benchmarks/bench_prefix.py --quick    # smollm2 only, 100 and 1000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STEPS = 4  # optimizer steps per configuration (the first is not counted)
WORDS = [
    "account",
    "billing",
    "refund",
    "delivery",
    "password",
    "travel",
    "booking",
    "weather",
    "music",
    "playlist",
    "restaurant",
    "timer",
    "alarm",
    "balance",
    "transfer",
    "card",
    "insurance",
    "schedule",
    "meeting",
    "calendar",
    "reminder",
    "translate",
    "recipe",
    "nutrition",
    "flight",
    "hotel",
    "rental",
    "taxi",
    "train",
    "bus",
]


def system_prompt(tokenizer: Any, tokens: int) -> tuple[str, list[str]]:
    """A classifier's system prompt of about ``tokens`` tokens that lists its labels."""
    labels: list[str] = []
    rng = random.Random(0)
    head = 'Classify the request. Answer with JSON {"intent": "<label>", "note": "<why>"}. Labels:'
    text = head
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
        label = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{len(labels)}"
        labels.append(label)
        text += f"\n- {label}: requests about {rng.choice(WORDS)} and {rng.choice(WORDS)}"
    return text, labels


def records(tokenizer: Any, prefix: int, n: int) -> list[dict[str, Any]]:
    system, labels = system_prompt(tokenizer, prefix)
    rng = random.Random(1)
    out = []
    for _ in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + "?"
        note = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 24)))
        answer = json.dumps({"intent": rng.choice(labels), "note": note})
        out.append(
            {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return out


def run_one(student: str, prefix: int, batch: str, threads: int) -> dict[str, Any]:
    """One configuration, in this process: a few steps of training; the figures as a dict."""
    from distillery import weights
    from distillery.training.local.config import LocalSFTConfig
    from distillery.training.local.packing import shared_prefix_length
    from distillery.training.local.trainer import LocalSFTTrainer

    tokenizer = weights.load_tokenizer(weights.resolve_source(student))
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as tmp:
        work = Path(tmp)
        config = LocalSFTConfig(
            base_model=student,
            n_epochs=1,
            batch_size=int(batch) if batch != "auto" else "auto",
            checkpoint="last",
            threads=threads,
            max_length=2048,
            seed=3,
        )
        # enough examples that the 16-steps-an-epoch rule lets the automatic batch reach 32
        n = 16 * STEPS * (int(batch) if batch != "auto" else 8)
        path = work / "train.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records(tokenizer, prefix, n)))
        trainer = LocalSFTTrainer(config, path, None, work / "out")
        trainer._setup_runtime()
        trainer._load_data()
        trainer._load_model()
        cfg = trainer.config
        trainer._make_optimizer(math.ceil(len(trainer.train_data.examples) / int(cfg.batch_size)))
        examples = trainer.train_data.examples
        shared = shared_prefix_length(examples)
        batch_size = int(cfg.batch_size)
        seconds: list[float] = []
        tokens: list[int] = []
        for i in range(STEPS):
            chunk = examples[i * batch_size : (i + 1) * batch_size]
            t0 = time.perf_counter()
            stats = trainer._train_step(chunk)
            seconds.append(time.perf_counter() - t0)
            tokens.append(stats.tokens)
        step = statistics.median(seconds[1:])
        return {
            "student": student,
            "prefix_tokens": shared,
            "batch_size": batch_size,
            "mean_tokens_after_prefix": sum(ex.n_tokens - shared for ex in examples)
            / len(examples),
            "seconds_per_step": step,
            "seconds_per_example": step / batch_size,
            "example_tokens_per_second": statistics.median(tokens[1:]) / step,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--student", action="append", help="default: both embedded students")
    parser.add_argument("--one", nargs=3, metavar=("STUDENT", "PREFIX", "BATCH"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        student, prefix, batch = args.one
        print(json.dumps(run_one(student, int(prefix), batch, args.threads)))
        return 0
    students = args.student or (
        ["smollm2-135m-instruct"] if args.quick else ["gemma-3-270m", "smollm2-135m-instruct"]
    )
    prefixes = [100, 1000] if args.quick else [100, 500, 1000]
    rows: list[dict[str, Any]] = []
    for student in students:
        for prefix in prefixes:
            for batch in ("4", "auto"):
                out = subprocess.run(
                    [sys.executable, __file__, "--one", student, str(prefix), batch,
                     "--threads", str(args.threads)],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if out.returncode != 0:
                    print(out.stderr[-2000:], file=sys.stderr)
                    return 1
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["batch"] = batch
                rows.append(row)
                print(
                    f"  {student} prefix {row['prefix_tokens']} batch {row['batch_size']}: "
                    f"{row['seconds_per_example']:.3f} s/example",
                    flush=True,
                )
    print(
        "\n| student | shared prefix | batch | tokens after it | s/example | example tokens/s "
        "| peak RSS |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        label = f"{r['batch_size']} (auto)" if r["batch"] == "auto" else f"{r['batch_size']}"
        print(
            f"| {r['student']} | {r['prefix_tokens']} | {label} | "
            f"{r['mean_tokens_after_prefix']:.0f} | {r['seconds_per_example']:.3f} | "
            f"{r['example_tokens_per_second']:.0f} | {r['peak_rss_mb']:.0f} MB |"
        )
    for student in students:
        auto = [r for r in rows if r["student"] == student and r["batch"] == "auto"]
        if len(auto) >= 2:
            growth = auto[-1]["seconds_per_example"] / auto[0]["seconds_per_example"]
            print(
                f"{student}: {auto[-1]['prefix_tokens']}-token prefix costs {growth:.2f}x the "
                f"{auto[0]['prefix_tokens']}-token one per example with the automatic batch"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
