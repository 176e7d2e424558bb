"""The validation measure's greedy answers: what one epoch's generated measure costs (issue 25).

When the answers open with free text (the demo's ``{"reason": ..., "category": ...}``) the trainer
scores each epoch on answers it generates greedily for the validation split (``greedy.py``). This
times that generation on the demo's questions (its 345-token system prompt, 67 of them by
default) with the embedded student before training, side by side with its anchor, transformers'
batched ``generate`` from the whole prompt:

- **anchor**: left-padded batches of 16, every prompt computed whole, each row to its end-of-turn
  token or the length limit (the longest reference answer plus 16 tokens);
- **shared prompt**: the system prompt computed once, each batch continuing from its KV cache
  (the same answers, checked);
- **+ settled rows**: rows also stop once their JSON object closes or their text cannot open one
  (what the trainer runs).

    .venv/bin/python benchmarks/bench_greedy.py [--student gemma-3-270m] [--n 67] [--quick]
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
    parser.add_argument("--student", default="gemma-3-270m")
    parser.add_argument("--n", type=int, default=67)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="16 questions")
    args = parser.parse_args()
    if args.quick:
        args.n = 16
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from distillery import weights
    from distillery.demo.dataset import load_inquiries, messages_for, teacher_output
    from distillery.training.local import greedy
    from distillery.training.local.config import LocalSFTConfig
    from distillery.training.local.measure import score_answers, settled
    from distillery.training.local.trainer import LocalSFTTrainer

    weights.materialize(weights.resolve_source(args.student))
    inquiries = load_inquiries("test")[: args.n]
    rows = [
        {"messages": [*messages_for(q), {"role": "assistant", "content": teacher_output(q)}]}
        for q in inquiries
    ]
    with tempfile.TemporaryDirectory(prefix="bench-greedy-") as tmp:
        path = Path(tmp) / "valid.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        config = LocalSFTConfig(base_model=args.student, threads=args.threads, max_length=2048)
        trainer = LocalSFTTrainer(config, path, path, Path(tmp) / "out")
        trainer._setup_runtime()
        trainer._load_data()
        trainer._load_model()
        examples = trainer.valid_data.examples if trainer.valid_data else []
        prompts = [greedy.prompt_ids(ex) for ex in examples]
        shared = greedy._shared_prefix(prompts)
        print(
            f"{args.student}: {len(examples)} validation prompts, {shared}-token shared prefix, "
            f"{sum(len(p) for p in prompts) / len(prompts):.0f} tokens a prompt, measure "
            f"generates: {trainer.measure.generate}",
            flush=True,
        )

        def timed(label: str, **kwargs: Any) -> tuple[list[str], float]:
            t0 = time.perf_counter()
            out = greedy.greedy_answers(
                trainer.student,
                trainer.tokenizer,
                examples,
                device=trainer.device,
                autocast=trainer._autocast,
                **kwargs,
            )
            seconds = time.perf_counter() - t0
            score = score_answers(trainer.measure, [ex.answer for ex in examples], out).score
            print(
                f"  {label}: {seconds:.1f} s ({len(examples) / seconds:.2f} answers/s), "
                f"measure {score:.3f}",
                flush=True,
            )
            return out, seconds

        minimum = greedy.MIN_SHARED
        greedy.MIN_SHARED = 1 << 30
        anchor, t_anchor = timed("anchor: whole prompts")
        greedy.MIN_SHARED = minimum
        cached, t_cached = timed("shared prompt cached")
        _, t_settled = timed("shared prompt cached + settled rows", finished=settled)
        same = sum(a == b for a, b in zip(anchor, cached, strict=True))
        print(
            f"\n| generation | seconds | speed-up |\n|---|---|---|\n"
            f"| anchor: whole prompts, batches of 16 | {t_anchor:.1f} | 1.0x |\n"
            f"| shared prompt cached ({same}/{len(anchor)} answers identical) | {t_cached:.1f} "
            f"| {t_anchor / t_cached:.1f}x |\n"
            f"| + settled rows (the trainer) | {t_settled:.1f} | {t_anchor / t_settled:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
