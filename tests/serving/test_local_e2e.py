"""The embedded student through the official openai SDK against a live gateway (issue 3)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

pytestmark = pytest.mark.local_model

MODEL = "smollm2-135m-instruct"
TOPICS = [
    "paid leave",
    "a VPN error",
    "a lost ID card",
    "an invoice",
    "a job interview",
    "overtime pay",
    "a new monitor",
    "a business trip",
    "a meeting room",
    "a password reset",
    "有給休暇",
    "経費精算",
    "会議室の予約",
    "パスワード",
    "名刺の発注",
    "年末調整",
    "新人研修",
    "社員証の紛失",
    "請求書の締め日",
    "Wi-Fiが遅い",
]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_embedded_student_through_the_sdk(client: openai.OpenAI, gateway) -> None:  # type: ignore[no-untyped-def]
    ids = {m.id for m in client.models.list()}
    assert MODEL in ids

    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
        store=True,
        metadata={"case": "local"},
    )
    assert resp.choices[0].message.content
    assert resp.usage is not None and resp.usage.completion_tokens <= 12
    assert client.chat.completions.retrieve(resp.id).metadata == {"case": "local"}

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == resp.choices[0].message.content

    # JSON mode always yields valid JSON (constrained decoding), 20 varied prompts
    def ask_json(topic: str) -> str:
        r = client.chat.completions.create(
            model=MODEL,
            max_tokens=48,
            temperature=0,
            response_format={"type": "json_object"},
            messages=[
                {
                    "role": "user",
                    "content": f"Describe {topic} as a JSON object with a 'topic' key.",
                }
            ],
        )
        return r.choices[0].message.content or "", r.choices[0].finish_reason

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask_json, TOPICS))
    finished = [text for text, reason in answers if reason == "stop"]
    assert len(finished) >= len(TOPICS) // 2
    for text in finished:
        assert isinstance(json.loads(text), dict)  # a finished JSON-mode answer is never broken

    # 16 concurrent requests are all answered, and they were batched together
    local = gateway.services.providers.get("local")
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            for status in local.status():
                peak = max(peak, status.running_sequences)
            done.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()

    def ask(i: int) -> str:
        r = client.chat.completions.create(
            model=MODEL,
            max_tokens=16,
            temperature=0,
            messages=[{"role": "user", "content": f"Count from {i} to {i + 3}."}],
        )
        return r.choices[0].message.content or ""

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            outputs = list(pool.map(ask, range(16)))
    finally:
        done.set()
        watcher.join()
    assert len(outputs) == 16 and all(outputs)
    assert peak > 1, "concurrent requests were served one at a time"
