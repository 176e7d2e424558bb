"""LoRA fine-tuning throughput: distillery's local trainer vs TRL ``SFTTrainer`` defaults.

Both train each embedded student (SmolLM2-135M-Instruct, Gemma 3 270M; ``--student``) on the same synthetic bilingual
inquiry-routing conversations, side by side in one run, on the CPU (or GPU with ``--device cuda``):

- anchor: TRL ``SFTTrainer`` with its defaults (bf16, gradient checkpointing, batch 8, padded,
  loss on all tokens) and ``use_cpu=True``, PEFT LoRA r=16 / alpha 32 on all projections;
- ours: ``LocalSFTTrainer`` with the same LoRA, batch 8, one epoch (packed, assistant-only loss,
  logits only at loss positions).

tokens/s counts the real (non-padding) tokens of the examples trained, over the training loop
only (model loading, tokenization and checkpoint saving excluded for both). Model-FLOPs
utilisation (MFU) = tokens/s x FLOPs per token / peak, with

    FLOPs per token (LoRA) = 4 N   (2N forward + 2N backward for activation gradients through
                                    the frozen weights; adapter, attention and lm_head FLOPs
                                    are left out, so the figure is a lower bound)
    FLOPs per token (full) = 6 N
    N = parameters of the decoder layers (embeddings / lm_head excluded)

and peak = measured ``torch.matmul`` of two 4096x4096 bf16 matrices with the same threads.

    .venv/bin/python benchmarks/bench_training.py --quick     # ~2-3 minutes on 2 cores
    .venv/bin/python benchmarks/bench_training.py             # the figures for RESULTS.md

The speed-up is taken from the median optimizer step of each trainer (the figure least disturbed
by other processes on a shared machine); the overall ratio is printed beside it. Where the time
goes: on a CPU whose bf16 matmul is only ~2x its fp32 (AVX512-BF16 without AMX, as on the AMD
EPYC development machines: ~110 GFLOP/s per core measured here under load, ~215 idle), matmuls
dominate both trainers, and TRL's defaults do ~1.8x our matmul work (a recomputed forward for
gradient checkpointing, logits over all positions and the 49k vocabulary, padding), so the
ratio lands near 3x; on AMX CPUs (~8x) TRL's casts and full-vocabulary softmax dominate instead.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# as the training worker sets it (both trainers run under it): idle OpenMP threads sleep rather
# than spin, which keeps 2-thread runs steady when other processes share the cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

SYSTEM = (
    "You route employee questions for the internal helpdesk. Answer only with JSON "
    '{"reason": "<one sentence>", "category": "<label>"} where label is one of 労務 (labour), '
    "人事 (HR), 総務 (general affairs), 経理 (accounting), 情報システム (IT)."
)
TOPICS = {
    "労務": [
        ("How many days of paid leave do I get in my second year?", "有給休暇は何日ありますか？"),
        ("Is overtime on a public holiday paid at a higher rate?", "休日出勤の割増率を教えて。"),
        ("My payslip shows a wrong commuting allowance.", "給与明細の通勤手当が違います。"),
    ],
    "人事": [
        ("How do I refer a friend for the open engineer role?", "知人を紹介したいのですが。"),
        ("When does the mid-year performance evaluation start?", "評価面談はいつ始まりますか？"),
        ("Can I apply for an internal transfer to the Osaka office?", "社内異動の申請方法は？"),
    ],
    "総務": [
        ("The meeting room projector on floor 5 is broken.", "会議室のプロジェクターが故障。"),
        ("I lost my ID card this morning.", "社員証を紛失しました。"),
        ("Where do I pick up parcels delivered for me?", "荷物はどこで受け取れますか？"),
    ],
    "経理": [
        ("How do I claim a taxi receipt from a client visit?", "タクシー代の精算方法は？"),
        ("The vendor says their invoice has not been paid.", "請求書の支払い状況を知りたい。"),
        ("Which cost centre should I use for the offsite?", "コストセンターはどれを使う？"),
    ],
    "情報システム": [
        ("My VPN disconnects every ten minutes at home.", "VPNが頻繁に切断されます。"),
        ("I need a licence for the diagram editor.", "ソフトのライセンスを申請したい。"),
        ("I clicked a suspicious link in an email.", "不審なメールのリンクを開いてしまった。"),
    ],
}
PREFIXES = [
    "",
    "Hi, ",
    "Quick question: ",
    "Sorry to bother you, ",
    "すみません、",
    "お疲れ様です。",
]
SUFFIXES = ["", " Thanks!", " Please help.", " 至急お願いします。", " よろしくお願いします。"]


def make_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Deterministic synthetic routing conversations, about half Japanese."""
    rng = random.Random(seed)
    records = []
    labels = list(TOPICS)
    for i in range(n):
        label = labels[i % len(labels)]
        en, ja = rng.choice(TOPICS[label])
        japanese = rng.random() < 0.5
        question = rng.choice(PREFIXES) + (ja if japanese else en) + rng.choice(SUFFIXES)
        reason = (
            f"この質問は{label}の担当範囲です。" if japanese else f"The question concerns {label}."
        )
        answer = json.dumps({"reason": reason, "category": label}, ensure_ascii=False)
        records.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return records


def matmul_peak(threads: int, device: str, size: int = 4096, repeats: int = 6) -> float:
    """Best measured bf16 matmul GFLOP/s with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    b = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def decoder_params(model_path: Path) -> int:
    """N: parameters of the decoder layers (embeddings and lm_head excluded)."""
    from distillery import weights

    model = weights.load_model(weights.resolve_source("bench", model_path), dtype="bfloat16")
    body = model.base_model
    total = sum(p.numel() for p in body.parameters())
    return total - sum(p.numel() for p in body.get_input_embeddings().parameters())


def step_figures(steps: list[tuple[int, float]]) -> dict[str, Any]:
    """Per-step throughput: the median step and the steady state (all steps but the first).

    Other processes on a shared machine slow single steps down a lot; the median step is the
    figure least disturbed by them, so the speed-up is computed from it.
    """
    rates = sorted(t / s for t, s in steps)
    later = steps[1:] or steps
    return {
        "step_tokens_per_second": [round(t / s, 1) for t, s in steps],
        "median_step_tokens_per_second": statistics.median(rates),
        "steady_tokens_per_second": sum(t for t, _ in later) / sum(s for _, s in later),
    }


def run_ours(
    train_file: Path, workdir: Path, *, student: str, threads: int, device: str, batch_size: int
) -> dict[str, Any]:
    from distillery.training.local.config import LocalSFTConfig
    from distillery.training.local.trainer import LocalSFTTrainer

    config = LocalSFTConfig(
        base_model=student,
        n_epochs=1,
        batch_size=batch_size,
        threads=threads,
        device=device,
        warmup_ratio=0.0,
    )
    trainer = LocalSFTTrainer(config, train_file, None, workdir / "ours")
    result = trainer.run()
    tokens = int(result.trained_tokens)
    seconds = float(trainer.training_seconds)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        **step_figures(trainer.step_timings),
        "final_train_loss": result.metrics.get("train_loss"),
        "packing": trainer.use_packing,
        "bf16": trainer.use_bf16,
    }


def run_trl(
    records: list[dict[str, Any]],
    student: str,
    model_path: Path,
    workdir: Path,
    *,
    threads: int,
    device: str,
    batch_size: int,
    target_modules: list[str],
) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(threads)
    steps = len(records) // batch_size
    args = SFTConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=batch_size,
        num_train_epochs=1,
        max_steps=steps,
        use_cpu=device == "cpu",
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=42,
    )
    peft_config = LoraConfig(
        r=16, lora_alpha=32, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    from distillery import weights

    trainer = SFTTrainer(
        model=str(model_path),
        # the tokenizer as distillery loads it: a model without a chat template (the pretrained
        # Gemma) gets its family's, so both trainers see the same conversations
        processing_class=weights.load_tokenizer(weights.resolve_source(student, model_path)),
        args=args,
        train_dataset=Dataset.from_list(records),
        peft_config=peft_config,
    )

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.start = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    timer = StepTimer()
    trainer.add_callback(timer)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"][: steps * batch_size])
    output = trainer.train()
    seconds = float(output.metrics["train_runtime"])
    logs = trainer.state.log_history
    losses = [h["loss"] for h in logs if "loss" in h]
    seen = [0] + [int(float(h["num_tokens"])) for h in logs if "num_tokens" in h and "loss" in h]
    per_step = [b - a for a, b in itertools.pairwise(seen)]
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        **step_figures(list(zip(per_step, timer.seconds, strict=False))),
        "final_train_loss": losses[-1] if losses else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 examples (4 steps) per trainer")
    parser.add_argument("--examples", type=int, default=None, help="training examples (x8)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-trl", action="store_true", help="measure only our trainer")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--student",
        action="append",
        default=None,
        help="embedded student(s) to train (repeatable; default: both embedded students)",
    )
    args = parser.parse_args()
    students = args.student or ["smollm2-135m-instruct", "gemma-3-270m"]
    status = 0
    for student in students:
        print(f"\n### {student}\n", flush=True)
        status |= bench_student(args, student)
    return status


def bench_student(args: argparse.Namespace, student: str) -> int:
    batch_size = 8
    n = args.examples or (32 if args.quick else 256)
    n -= n % batch_size

    from distillery import weights
    from distillery.training.local.config import DEFAULT_TARGET_MODULES

    model_path = weights.materialize(weights.resolve_source(student)).path
    records = make_records(n)
    print(f"device={args.device} threads={args.threads} examples={n} batch={batch_size}")
    peak = matmul_peak(args.threads, args.device)
    print(f"measured bf16 matmul peak: {peak:.0f} GFLOP/s ({peak / args.threads:.0f} per thread)")
    n_params = decoder_params(model_path)
    flops_per_token = 4 * n_params
    results: dict[str, Any] = {
        "student": student,
        "device": args.device,
        "threads": args.threads,
        "examples": n,
        "peak_gflops": peak,
        "decoder_params": n_params,
        "flops_per_token": flops_per_token,
        "mfu_formula": "tokens/s * 4 * N / peak (LoRA; N = decoder-layer parameters)",
    }
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        train_file = work / "train.jsonl"
        train_file.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
        results["ours"] = run_ours(
            train_file,
            work,
            student=student,
            threads=args.threads,
            device=args.device,
            batch_size=batch_size,
        )
        if not args.skip_trl:
            results["trl"] = run_trl(
                records,
                student,
                model_path,
                work,
                threads=args.threads,
                device=args.device,
                batch_size=batch_size,
                target_modules=list(DEFAULT_TARGET_MODULES),
            )
    rows = [k for k in ("trl", "ours") if k in results]
    print(
        f"\n{'trainer':<28}{'tokens':>7}{'seconds':>9}{'tok/s':>8}"
        f"{'median step':>13}{'MFU (median)':>14}"
    )
    for key in rows:
        r = results[key]
        r["mfu"] = r["tokens_per_second"] * flops_per_token / (peak * 1e9)
        r["mfu_median_step"] = r["median_step_tokens_per_second"] * flops_per_token / (peak * 1e9)
        label = "TRL SFTTrainer defaults" if key == "trl" else "distillery LocalSFTTrainer"
        print(
            f"{label:<28}{r['tokens']:>7}{r['seconds']:>9.1f}{r['tokens_per_second']:>8.0f}"
            f"{r['median_step_tokens_per_second']:>13.0f}{r['mfu_median_step']:>14.1%}"
        )
        print(f"{'':<28}per step: {r['step_tokens_per_second']}")
    if "trl" in results:
        ours, trl = results["ours"], results["trl"]
        results["speedup"] = (
            ours["median_step_tokens_per_second"] / trl["median_step_tokens_per_second"]
        )
        results["speedup_overall"] = ours["tokens_per_second"] / trl["tokens_per_second"]
        print(
            f"speed-up vs TRL defaults: {results['speedup']:.2f}x median step, "
            f"{results['speedup_overall']:.2f}x overall (bar: 3x)"
        )
    print(f"MFU = tokens/s x 4N / peak, N = {n_params / 1e6:.1f}M decoder parameters")
    if args.json:
        path = args.json.with_name(f"{args.json.stem}-{student}{args.json.suffix}")
        path.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
