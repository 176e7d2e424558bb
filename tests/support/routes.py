"""Helpers of the route tests: the routes API over HTTP, eval runs for the gate, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai

STUDENT = "smollm2-135m-instruct"  # the embedded student
PROMPT = {"prompt": "router"}
# a route grader: the student said exactly what the teacher said (graded in shadow mode)
SAME_AS_TEACHER = {
    "type": "string_check",
    "name": "same_as_teacher",
    "input": "{{sample.output_text}}",
    "reference": "{{item.teacher}}",
    "operation": "eq",
}


class Routes:
    """``/v1/distillery/routes`` through plain HTTP (the SDK has no such resource)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url + "/v1/distillery", timeout=120)

    def create(self, **body: Any) -> httpx.Response:
        return self.http.post("/routes", json=body)

    def ok(self, response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def add(
        self, name: str, student: str, *, model: str = "gpt-4o", **fields: Any
    ) -> dict[str, Any]:
        """A route created (it must be) for the prompt's traffic to ``model``."""
        match = {"model": model, "metadata": PROMPT}
        return self.ok(self.create(name=name, match=match, student=student, **fields))

    def get(self, route_id: str) -> dict[str, Any]:
        return self.ok(self.http.get(f"/routes/{route_id}"))

    def update(self, route_id: str, **body: Any) -> httpx.Response:
        return self.http.post(f"/routes/{route_id}", json=body)

    def promote(self, route_id: str, **body: Any) -> httpx.Response:
        return self.http.post(f"/routes/{route_id}/promote", json=body)

    def rollback(self, route_id: str, **body: Any) -> httpx.Response:
        return self.http.post(f"/routes/{route_id}/rollback", json=body)

    def stats(self, route_id: str) -> dict[str, Any]:
        return self.ok(self.http.get(f"/routes/{route_id}/stats"))

    def events(self, route_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.ok(self.http.get(f"/routes/{route_id}/events?limit=100"))[
            "data"
        ]
        return data


def ask(
    client: openai.OpenAI, text: str, *, model: str = "gpt-4o", **extra: Any
) -> tuple[Any, dict[str, str]]:
    """A chat completion as the application sends it; the answer and its headers."""
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        store=True,
        metadata=extra.pop("metadata", PROMPT),
        max_tokens=extra.pop("max_tokens", 4),
        temperature=extra.pop("temperature", 0),
        **extra,
    )
    return raw.parse(), dict(raw.headers)


def until(check: Callable[[], Any], timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def eval_runs(client: openai.OpenAI, teacher: str, student: str, n: int = 30) -> tuple[str, str]:
    """A frozen held-out set of ``n`` items (answers as the echo teacher gives them) evaluated
    with the teacher and with the student; the two completed run ids."""
    ev = client.evals.create(
        name="router parity",
        data_source_config={
            "type": "custom",
            "item_schema": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
                "required": ["question", "answer"],
            },
            "include_sample_schema": True,
        },
        testing_criteria=[
            {
                "type": "string_check",
                "name": "exact",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
                "operation": "eq",
            }
        ],
    )
    items = [{"item": {"question": f"q{i}", "answer": f"echo: q{i}"}} for i in range(n)]
    run_ids = []
    for model in (teacher, student):
        run = client.evals.runs.create(
            ev.id,
            name=model,
            data_source={
                "type": "completions",
                "model": model,
                "input_messages": {
                    "type": "template",
                    "template": [{"role": "user", "content": "{{item.question}}"}],
                },
                "source": {"type": "file_content", "content": items},
            },
        )
        run_ids.append(run.id)
    for run_id in run_ids:
        until(
            lambda rid=run_id: (
                client.evals.runs.retrieve(rid, eval_id=ev.id).status
                not in ("queued", "in_progress")
            ),
            what=f"eval run {run_id}",
        )
    return run_ids[0], run_ids[1]


class Labeller:
    """An in-process provider of inquiry labels as JSON: the teacher (``gpt-4o``, served before
    the fake upstream's) and a student (``label-student``) answer the same ``category`` in their
    own words, except that the student files everything under ``billing``."""

    kind = "scripted"
    TEACHER, STUDENT = "gpt-4o", "label-student"

    def __init__(self, name: str = "labeller") -> None:
        self.name = name

    def models(self) -> list[Any]:
        from distillery.providers.base import ModelInfo

        return [ModelInfo(id=m, owned_by=self.name) for m in (self.TEACHER, self.STUDENT)]

    def serves(self, model: str) -> bool:
        return model in (self.TEACHER, self.STUDENT)

    def answer(self, model: str, question: str) -> dict[str, Any]:
        if model == self.STUDENT:
            return {"category": "billing", "confidence": 0.9}
        category = "billing" if "invoice" in question else "technical"
        return {"reason": f"the teacher read {question!r}", "category": category}

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        import json

        question = next(
            (str(m.get("content")) for m in reversed(body["messages"]) if m["role"] == "user"), ""
        )
        text = json.dumps(self.answer(body["model"], question), ensure_ascii=False)
        return {
            "id": f"chatcmpl-label{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }

    async def stream(self, body: dict[str, Any]) -> Any:
        from distillery.wire.sse import completion_events

        for event in completion_events(await self.create(body), include_usage=False):
            yield event

    async def aclose(self) -> None:
        return None
