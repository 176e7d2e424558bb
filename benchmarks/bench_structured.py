"""Structured answers through the local engine: logits for the allowed tokens only vs the whole
output head, same prompts, same run.

The demo's test questions (half Japanese) to the embedded ``gemma-3-270m`` with the demo's system
prompt, greedy, all requests at once (the way an eval run sends them), in two response formats:

* the demo's: ``{"reason": "...", "category": "..."}`` (free text first, then the label);
* a label only: ``{"category": "..."}`` with the five categories as an enum (CLINC150's shape).

Each is answered twice in one process: with the engine as it is (a row whose grammar allows at
most a sixteenth of the vocabulary gets the logits of those tokens only, ``serving/head.py``) and,
the anchor, with every row given the whole head (what the engine did before). The answers must be
identical; the table gives items/s and the speed-up.

    python benchmarks/bench_structured.py [--quick] [--student smollm2-135m-instruct] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def formats() -> dict[str, dict[str, Any]]:
    from distillery.demo import dataset

    label = dataset.response_schema()["properties"]["category"]
    enum_only = {
        "type": "object",
        "properties": {"category": label},
        "required": ["category"],
        "additionalProperties": False,
    }
    return {
        "reason, then category (the demo's)": dataset.response_format(),
        "category only (an enum)": {
            "type": "json_schema",
            "json_schema": {"name": "category", "strict": True, "schema": enum_only},
        },
    }


async def answer(
    provider: Any, model: str, questions: list[Any], fmt: dict[str, Any]
) -> tuple[float, int, list[str]]:
    from distillery.demo import dataset

    async def one(question: Any) -> dict[str, Any]:
        body = {
            "model": model,
            "messages": dataset.messages_for(question),
            "response_format": fmt,
            "temperature": 0,
            "max_tokens": 120,
        }
        return await provider.create(body)  # type: ignore[no-any-return]

    start = time.perf_counter()
    responses = await asyncio.gather(*(one(q) for q in questions))
    seconds = time.perf_counter() - start
    tokens = sum(r["usage"]["completion_tokens"] for r in responses)
    return seconds, tokens, [r["choices"][0]["message"]["content"] for r in responses]


async def bench(student: str, n: int, threads: int | None = None) -> list[str]:
    from distillery.demo import dataset
    from distillery.providers.local_config import LocalProviderConfig
    from distillery.serving import LocalProvider, decode
    from distillery.serving.engine import inference_threads

    questions = dataset.load_inquiries("test")[:n]
    config = LocalProviderConfig(
        models=[student], max_batch_size=32, max_queue=max(64, n), threads=threads
    )
    provider = LocalProvider("local", config)
    sparse_share = decode.SPARSE_SHARE
    lines = [
        f"Structured answers, {student}, {threads or inference_threads()} torch thread(s) of "
        f"{os.cpu_count()} CPUs, {n} demo test questions at once, greedy",
        "",
        "| response format | logits made for | items/s | tokens/s | seconds | speed-up | "
        "identical answers |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    try:
        for name, fmt in formats().items():
            await answer(provider, student, questions[:2], fmt)  # load, compile the grammar
            decode.SPARSE_SHARE = 10**12  # the anchor: no row allows so few tokens
            whole = await answer(provider, student, questions, fmt)
            decode.SPARSE_SHARE = sparse_share
            few = await answer(provider, student, questions, fmt)
            same = sum(a == b for a, b in zip(whole[2], few[2], strict=True))
            for label, (seconds, tokens, _), speed in (
                ("every token (anchor)", whole, 1.0),
                ("the allowed tokens", few, whole[0] / few[0]),
            ):
                lines.append(
                    f"| {name} | {label} | {n / seconds:.2f} | {tokens / seconds:.1f} | "
                    f"{seconds:.1f} | {speed:.2f}x | {same}/{n} |"
                )
    finally:
        decode.SPARSE_SHARE = sparse_share
        await provider.aclose()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 questions instead of 100")
    parser.add_argument("--student", default="gemma-3-270m")
    parser.add_argument("--threads", type=int, default=None, help="default: the engine's")
    args = parser.parse_args()
    lines = asyncio.run(bench(args.student, 16 if args.quick else 100, args.threads))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
