"""Distillation quality on the demo task: does the LoRA student learn the routing?

Runs the demo pipeline (PRODUCT.md 3) in a fresh ``DISTILLERY_HOME`` through the public API:
import the demo traffic, evaluate the base student and the reference outputs on the held-out
test split (100 questions, half Japanese), distill with LoRA, evaluate the distilled student and,
with ``--every-epoch``, every epoch's checkpoint (the accuracy curve). The anchors are the base
student (what the student does before distillation) and the reference outputs (the teacher).

Bars (PRODUCT.md 3): category accuracy >= 90%, >= 85% in each language, valid JSON >= 99.5%.

    .venv/bin/python benchmarks/bench_distill.py --quick          # 60 train items, 1 epoch
    .venv/bin/python benchmarks/bench_distill.py --epochs 4 --every-epoch
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 train / 20 test items, 1 epoch")
    parser.add_argument(
        "--auto", action="store_true", help="the trainer's automatic recipe (OpenAI's defaults)"
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr-multiplier", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lora-r", type=int, default=None)
    parser.add_argument("--method", choices=["lora", "full"], default=None)
    parser.add_argument("--student", default=None, help="default: the demo's (gemma-3-270m)")
    parser.add_argument("--no-corrections", action="store_true", help="raw teacher outputs")
    parser.add_argument("--every-epoch", action="store_true", help="evaluate every checkpoint")
    parser.add_argument("--home", type=Path, default=None, help="keep the run here (reusable)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        home = args.home or Path(tmp)
        os.environ["DISTILLERY_HOME"] = str(home)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from distillery.demo.run import Demo, DemoOptions
        from distillery.services import build_services

        auto = "auto" if args.auto else None
        recipe: dict[str, Any] = {
            "n_epochs": 1 if args.quick else args.epochs or auto,
            "learning_rate_multiplier": args.lr_multiplier or auto,
            "batch_size": args.batch_size or auto,
            "lora_r": args.lora_r,
            "method": args.method,
            "student": args.student,
        }
        options = DemoOptions(
            train_limit=60 if args.quick else None,
            test_limit=20 if args.quick else None,
            evaluate_checkpoints=args.every_epoch,
            corrections=not args.no_corrections,
            rollout=False,
            **{k: v for k, v in recipe.items() if v is not None},
        )
        services = build_services()
        started = time.perf_counter()
        try:
            report = Demo(services, options, say=lambda m: print(f"  {m}", flush=True)).run()
        finally:
            services.close_sync()
        total = time.perf_counter() - started

    o, h = report.options, report.hyperparameters
    print(
        f"\nrecipe{' (automatic)' if args.auto else ''}: {o.method}, {h.get('n_epochs')} epochs, "
        f"batch {h.get('batch_size')}, lr multiplier {h.get('learning_rate_multiplier')}, LoRA "
        f"r={o.lora_r}; {report.train_examples} train / {report.test_examples} test examples"
    )
    if report.selection:
        print(report.selection)
    rows = [("base student", report.result("base student"))]
    rows += [(f"checkpoint step {step}", r) for step, r in report.checkpoints]
    rows += [("distilled student", report.result("distilled student"))]
    rows += [(report.teacher_label, report.result(report.teacher_label))]
    print("\n| model | category accuracy | ja | en | valid JSON |\n|---|---|---|---|---|")
    for label, r in rows:
        ja, en = r.per_lang.get("ja", 0.0), r.per_lang.get("en", 0.0)
        print(f"| {label} | {r.accuracy:.0%} | {ja:.0%} | {en:.0%} | {r.valid_json:.0%} |")
    distilled = report.result("distilled student")
    print(
        f"\ntraining {report.training_seconds / 60:.1f} min ({report.trained_tokens:,} example "
        f"tokens), whole run {total / 60:.1f} min; bars: accuracy >= 90% "
        f"({'met' if distilled.accuracy >= 0.9 else 'NOT met'}), each language >= 85% "
        f"({'met' if min(distilled.per_lang.values(), default=0) >= 0.85 else 'NOT met'}), "
        f"valid JSON >= 99.5% ({'met' if distilled.valid_json >= 0.995 else 'NOT met'})"
    )
    if args.json:
        results = {
            "recipe": recipe,
            "training_seconds": report.training_seconds,
            "total_seconds": total,
            "rows": [{"label": label, **r.__dict__} for label, r in rows],
        }
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
