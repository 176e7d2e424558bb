"""Deterministic graders: items/s through distillery's graders (templating, parsing, the Grade)
side by side with the plain library call on the same texts (sacrebleu, rouge-score, json).

Usage: python benchmarks/bench_graders.py [--quick]
Bar (issue 4): at least 2,000 items/s on one core for JSON/string checks and BLEU/ROUGE on
200-token texts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

WORDS = [
    "the",
    "request",
    "for",
    "paid",
    "leave",
    "was",
    "approved",
    "by",
    "the",
    "manager",
    "after",
    "the",
    "team",
    "meeting",
    "on",
    "friday",
    "and",
    "the",
    "payroll",
    "office",
    "will",
    "update",
    "the",
    "balance",
    "on",
    "the",
    "next",
    "payslip",
]


def text(rng: random.Random, n: int = 200) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def rate(fn: Callable[[int], Any], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 300 if args.quick else 2000
    import torch

    torch.set_num_threads(1)
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    from distillery.evals.graders.base import GradeInput, sample_from_output
    from distillery.evals.graders.registry import build_grader

    rng = random.Random(0)
    pairs = [(text(rng), text(rng)) for _ in range(64)]
    bleu = BLEU(effective_order=True)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    loop = asyncio.new_event_loop()

    def grader(cfg: dict[str, Any]) -> Callable[[int], Any]:
        g = build_grader(cfg)

        def run(i: int) -> Any:
            out, ref = pairs[i % len(pairs)]
            inp = GradeInput(item={"reference": ref}, sample=sample_from_output(out))
            return loop.run_until_complete(g.grade(inp))

        return run

    sim = {
        "type": "text_similarity",
        "name": "s",
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
        "pass_threshold": 0.5,
    }
    js = json.dumps({"reason": "paid leave", "category": "労務"}, ensure_ascii=False)
    rows = [
        (
            "BLEU, 200-token texts",
            lambda i: bleu.sentence_score(*[pairs[i % 64][0]], [pairs[i % 64][1]]),
            grader({**sim, "evaluation_metric": "bleu"}),
        ),
        (
            "ROUGE-L, 200-token texts",
            lambda i: scorer.score(pairs[i % 64][1], pairs[i % 64][0]),
            grader({**sim, "evaluation_metric": "rouge_l"}),
        ),
        (
            "string_check eq",
            lambda i: pairs[i % 64][0] == pairs[i % 64][1],
            grader(
                {
                    "type": "string_check",
                    "name": "c",
                    "input": "{{sample.output_text}}",
                    "reference": "{{item.reference}}",
                    "operation": "eq",
                }
            ),
        ),
        (
            "valid JSON",
            lambda i: json.loads(js),
            lambda i: loop.run_until_complete(
                build_grader(
                    {"type": "valid_json", "name": "j", "input": "{{sample.output_text}}"}
                ).grade(GradeInput(item={}, sample=sample_from_output(js)))
            ),
        ),
    ]
    print("| grader (1 core) | plain library, items/s | distillery grader, items/s | ratio |")
    print("|---|---|---|---|")
    for name, plain, ours in rows:
        p, o = rate(plain, n), rate(ours, n)
        print(f"| {name} | {p:,.0f} | {o:,.0f} | {o / p:.2f}x |")


if __name__ == "__main__":
    main()
