"""A tiny tool-calling distillation: the embedded student learns which function to call.

A teacher's answers are OpenAI fine-tuning lines with ``tools`` and assistant ``tool_calls``; the
student (``smollm2-135m-instruct``) is fine-tuned on them through the SDK (LoRA, 2 epochs) and
then, asked with ``tool_choice: "required"`` on held-out requests, calls the right one of three
functions far more often than before (measured: 6/12 before, 10-11/12 after 2 epochs, about 90 s
of training on one core).
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.support.ft import wait_for

pytestmark = [pytest.mark.training, pytest.mark.local_model]

LOCAL = "smollm2-135m-instruct"
QUEUES = ("get_weather", "calculate", "translate")
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": {"lang": {"type": "string", "enum": ["en", "ja"]}},
                "required": ["lang"],
            },
        },
    }
    for name in QUEUES
]
SYSTEM = "Route the request to the right service."
# (request, function) as the teacher called them, in English and Japanese
QUESTIONS = {
    QUEUES[0]: [
        "What is the weather in Paris today?",
        "Will it rain in London tomorrow?",
        "How cold is it in Oslo?",
        "Is it sunny in Rome this weekend?",
        "東京の天気は？",
        "明日の大阪は雨ですか？",
        "札幌の気温を教えて。",
        "What is the weather like in Berlin?",
        "福岡は晴れていますか？",
        "Is it snowing in Denver?",
        "What is the weather in Madrid?",
        "京都の天気を教えて。",
        "Will it be windy in Chicago today?",
        "名古屋は明日晴れますか？",
    ],
    QUEUES[1]: [
        "What is 12 plus 30?",
        "Compute 7 times 8.",
        "What is 100 minus 37?",
        "How much is 45 divided by 9?",
        "3たす5は？",
        "12かける4はいくつ？",
        "100ひく25を計算して。",
        "What is 15 plus 27?",
        "81わる9は？",
        "Compute 6 times 7.",
        "What is 250 minus 99?",
        "8たす13は？",
        "How much is 9 times 9?",
        "60わる12を計算して。",
    ],
    QUEUES[2]: [
        "Translate 'good morning' into Japanese.",
        "Translate 'thank you' into French.",
        "How do you say 'cat' in Japanese?",
        "Translate 'where is the station' into Japanese.",
        "「ありがとう」を英語に翻訳して。",
        "「駅はどこですか」を英語に訳して。",
        "「猫」を英語で何と言いますか？",
        "Translate 'see you tomorrow' into Spanish.",
        "「おはよう」を英語に翻訳して。",
        "How do you say 'water' in Japanese?",
        "Translate 'good night' into German.",
        "「こんにちは」を英語に訳して。",
        "Translate 'I am hungry' into Japanese.",
        "「さようなら」を英語に翻訳して。",
    ],
}
N_TRAIN = 10  # per queue: 30 training examples; the remaining 4 per queue are held out


def record(question: str, queue: str) -> dict[str, Any]:
    lang = "en" if question.isascii() else "ja"
    call = {
        "id": "call_teacher",
        "type": "function",
        "function": {"name": queue, "arguments": json.dumps({"lang": lang})},
    }
    return {
        "tools": TOOLS,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
    }


def routed(client: openai.OpenAI, model: str, questions: list[tuple[str, str]]) -> list[str]:
    def ask(question: str) -> str:
        response = client.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
            ],
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=48,
            temperature=0,
        )
        (call,) = response.choices[0].message.tool_calls or []
        assert response.choices[0].finish_reason == "tool_calls"
        assert json.loads(call.function.arguments)["lang"] in ("en", "ja")  # type: ignore[union-attr]
        return call.function.name  # type: ignore[union-attr]

    with ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(ask, [q for q, _ in questions]))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_student_learns_which_function_to_call(client: openai.OpenAI) -> None:
    train = [(q, queue) for queue, qs in QUESTIONS.items() for q in qs[:N_TRAIN]]
    held_out = [(q, queue) for queue, qs in QUESTIONS.items() for q in qs[N_TRAIN:]]
    lines = "".join(json.dumps(record(q, c), ensure_ascii=False) + "\n" for q, c in train)
    uploaded = client.files.create(
        file=("tools.jsonl", io.BytesIO(lines.encode())), purpose="fine-tune"
    )

    before = routed(client, LOCAL, held_out)
    job = client.fine_tuning.jobs.create(
        model=LOCAL,
        training_file=uploaded.id,
        seed=11,
        suffix="router",
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 2,
                    "batch_size": 4,
                    "learning_rate_multiplier": 5.0,
                }
            },
        },
        # one thread: the suite shares 2 cores (the prompt is ~250 tokens, mostly the tool list)
        extra_body={"distillery": {"max_length": 320, "lora_r": 8, "lora_alpha": 16, "threads": 1}},
    )
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model
    after = routed(client, done.fine_tuned_model, held_out)

    expected = [queue for _, queue in held_out]
    right_before = sum(a == b for a, b in zip(before, expected, strict=True))
    right_after = sum(a == b for a, b in zip(after, expected, strict=True))
    print(f"held-out calls to the right function: {right_before}/12 before, {right_after}/12 after")
    assert right_after >= 9
    assert right_after >= right_before + 3
