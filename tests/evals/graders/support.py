"""Helpers for grader tests: running a grader, and a scripted judge (test code only)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from distillery.evals.graders.base import Grade, GradeInput, Grader, sample_from_output


def run_grade(grader: Grader, output: str, item: Mapping[str, Any] | None = None) -> Grade:
    return asyncio.run(grader.grade(GradeInput(item=item or {}, sample=sample_from_output(output))))


def chat_completion(content: str | None, *, refusal: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "judge-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
    }


class ScriptedJudge:
    """A JudgeClient that answers from a script and records every call it receives."""

    def __init__(self, *answers: str | dict[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        temperature: float | None = None,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        self.calls.append(
            {
                "model": model,
                "messages": messages,
                "temperature": temperature,
                "max_tokens": max_tokens,
                "response_format": response_format,
                "seed": seed,
            }
        )
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return chat_completion(answer) if isinstance(answer, str) else answer

    @property
    def last_prompt(self) -> str:
        content = self.calls[-1]["messages"][-1]["content"]
        assert isinstance(content, str)
        return content
