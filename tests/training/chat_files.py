"""Tiny chat fine-tuning files for the local-trainer tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SYSTEM = 'Classify the question. Answer JSON {"reason": "...", "category": "..."}.'
QUESTIONS = [
    ("How do I reset my VPN password?", "情報システム"),
    ("有給休暇の申請方法を教えてください。", "労務"),
    ("Where can I book a meeting room?", "総務"),
    ("経費精算の締め日はいつですか？", "経理"),
    ("How does the referral bonus work?", "人事"),
    ("残業の上限は何時間ですか？", "労務"),
    ("My laptop screen is broken.", "情報システム"),
    ("名刺の発注はどこでできますか？", "総務"),
    ("When is the performance review?", "人事"),
    ("請求書の送付先を知りたいです。", "経理"),
    ("Can I work remotely on Fridays?", "労務"),
    ("MFAの設定方法は？", "情報システム"),
]


def chat_record(question: str, label: str) -> dict[str, Any]:
    answer = json.dumps({"reason": f"It is about {label}.", "category": label}, ensure_ascii=False)
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path
