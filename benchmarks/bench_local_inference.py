"""Local inference throughput: the ``local`` provider vs plain ``model.generate``.

Measures generated tokens per second of the embedded student (greedy, same prompts, same
max_tokens, same dtype and threads) for:

* ``generate``, one request at a time (the anchor): ``model.generate`` on each prompt in turn;
* the provider, one request at a time (``provider.create`` awaited in turn);
* the provider with 8 and 32 concurrent requests (``asyncio.gather`` of ``provider.create``),
  which the engine batches (continuous batching).

Bar: at 8 concurrent requests, at least 2x the tokens/s of one-at-a-time ``generate``.

    python benchmarks/bench_local_inference.py [--quick] [--max-tokens N]

Prints a markdown table. Set ``DISTILLERY_HOME`` to where the converted model lives (the first run
converts the embedded GGUF, ~20 s). ``run_concurrent(provider, n)`` is the measured unit, so an
HTTP variant can pass a client-backed object with the same ``create`` coroutine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "smollm2-135m-instruct"
SYSTEM = (
    "You route employee questions to a department. Answer in one or two sentences, then name the "
    "department: labour, HR, general affairs, accounting or IT."
)
QUESTIONS = [
    "How do I apply for paid leave next Friday?",
    "My VPN keeps disconnecting when I work from home. What should I do?",
    "Where can I get a new ID card? I lost mine yesterday.",
    "How do I submit a taxi receipt for reimbursement?",
    "When is the deadline for the year-end tax adjustment documents?",
    "Can I refer a friend for the open backend engineer position?",
    "The meeting room projector on the 3rd floor is broken.",
    "I forgot my password and multi-factor authentication does not work.",
    "有給休暇の申請方法を教えてください。",
    "VPNに接続できません。どうすればいいですか？",
    "経費精算の締め日はいつですか？",
    "新しい名刺を注文したいです。",
    "来月から時短勤務に切り替えたいのですが、手続きは？",
    "人事評価の面談はいつ行われますか？",
    "ノートパソコンの画面が割れてしまいました。",
    "請求書の支払い期限を過ぎてしまいました。",
    "How many days of overtime can I work this month?",
    "Who approves my transfer to the Osaka office?",
    "How do I book a parking space for a visitor?",
    "Which cost centre should I use for the conference trip?",
    "Can I install Python on my work laptop?",
    "What is the per diem for a business trip to Fukuoka?",
    "Is there a mentoring programme for new hires?",
    "A package for me arrived at reception; where do I pick it up?",
    "副業の申請は必要ですか？",
    "研修プログラムの申し込み方法を知りたいです。",
    "防災訓練の日程を教えてください。",
    "前払い金の申請はどこからできますか？",
    "メールの転送設定を変更したいです。",
    "給与明細が見られません。",
    "会議室の予約が重複しています。",
    "アクセス権限の追加をお願いしたいです。",
]


class ChatProvider(Protocol):
    async def create(self, body: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class Result:
    mode: str
    requests: int
    tokens: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def body(i: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


async def run_concurrent(
    provider: ChatProvider, n: int, *, max_tokens: int = 64, offset: int = 0
) -> Result:
    """``n`` concurrent chat completions through ``provider.create``; generated tokens and time."""
    start = time.perf_counter()
    responses = await asyncio.gather(
        *(provider.create(body(offset + i, max_tokens)) for i in range(n))
    )
    seconds = time.perf_counter() - start
    tokens = sum(r["usage"]["completion_tokens"] for r in responses)
    return Result(f"provider, {n} concurrent", n, tokens, seconds)


async def run_sequential(provider: ChatProvider, n: int, *, max_tokens: int = 64) -> Result:
    start = time.perf_counter()
    tokens = 0
    for i in range(n):
        response = await provider.create(body(i, max_tokens))
        tokens += response["usage"]["completion_tokens"]
    return Result("provider, one at a time", n, tokens, time.perf_counter() - start)


def run_generate(n: int, *, max_tokens: int, dtype: str) -> Result:
    """The anchor: plain transformers ``generate``, one prompt at a time, greedy."""
    import torch

    from distillery import weights
    from distillery.serving.engine import inference_threads

    torch.set_num_threads(inference_threads())  # the same threads as the provider's engine
    source = weights.resolve_source(MODEL)
    tokenizer = weights.load_tokenizer(source)
    model = weights.load_model(source, dtype=dtype)
    model.eval()
    eos = tokenizer.eos_token_id
    prompts = [
        tokenizer.apply_chat_template(
            body(i, max_tokens)["messages"],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        for i in range(n)
    ]
    with torch.inference_mode():
        warm = torch.tensor([prompts[0]])
        model.generate(
            warm, attention_mask=torch.ones_like(warm), max_new_tokens=4, do_sample=False
        )
        start = time.perf_counter()
        tokens = 0
        for prompt in prompts:
            ids = torch.tensor([prompt])
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=eos,
            )
            new = out[0, ids.shape[1] :].tolist()
            tokens += len(new) - (1 if new and new[-1] == eos else 0)
        seconds = time.perf_counter() - start
    return Result("`model.generate`, one at a time", n, tokens, seconds)


async def bench(quick: bool, max_tokens: int) -> list[Result]:
    from distillery import weights
    from distillery.providers.local_config import LocalProviderConfig
    from distillery.serving import LocalProvider

    dtype = weights.best_dtype("cpu")
    sequential = 4 if quick else 8
    results = [run_generate(sequential, max_tokens=max_tokens, dtype=dtype)]
    config = LocalProviderConfig(models=[MODEL], max_batch_size=32, max_queue=64)
    provider = LocalProvider("local", config)
    try:
        await provider.create(body(0, 4))  # load and warm up
        results.append(await run_sequential(provider, sequential, max_tokens=max_tokens))
        results.append(await run_concurrent(provider, 8, max_tokens=max_tokens))
        results.append(await run_concurrent(provider, 32, max_tokens=max_tokens))
    finally:
        await provider.aclose()
    return results


def table(results: list[Result], *, max_tokens: int, dtype: str) -> str:
    from distillery.serving.engine import inference_threads

    anchor = results[0].rate
    lines = [
        f"Local inference, {MODEL}, {dtype}, {inference_threads()} torch thread(s) of "
        f"{os.cpu_count()} CPUs, greedy, max_tokens={max_tokens}",
        "",
        "| mode | requests | generated tokens | seconds | tokens/s | vs generate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = r.rate / anchor if anchor else 0.0
        lines.append(
            f"| {r.mode} | {r.requests} | {r.tokens} | {r.seconds:.2f} | {r.rate:.1f} | "
            f"{ratio:.2f}x |"
        )
    eight = next(r for r in results if r.mode == "provider, 8 concurrent")
    verdict = "PASS" if eight.rate >= 2 * anchor else "FAIL"
    lines += ["", f"Bar (8 concurrent >= 2x one-at-a-time generate): {verdict}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sequential prompts, 32 tokens")
    parser.add_argument("--max-tokens", type=int, default=None)
    args = parser.parse_args()
    max_tokens = args.max_tokens or (32 if args.quick else 64)
    from distillery import weights

    results = asyncio.run(bench(args.quick, max_tokens))
    print(table(results, max_tokens=max_tokens, dtype=weights.best_dtype("cpu")))


if __name__ == "__main__":
    main()
