"""Routes on Responses API traffic: the openai SDK's ``client.responses`` as the application.

A route matched by model and metadata applies to ``POST /v1/responses`` as it does to chat:
``full``/``canary`` send it to the student, ``shadow`` sends a copy to the student after the
teacher answered, a failing blocking grader (or a student that fails) falls back to the teacher,
the response cache answers a repeat, and the headers say who answered. The fake upstream serves
the teacher (``gpt-4o``, ``json-1``) and fast students (``echo-1``) through its own Responses
API; ``test_embedded_student_answers_responses`` has the embedded student answer, translated.
Legacy completions go through the same stage (``test_legacy_completions_are_routed``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.support.routes import PROMPT, SAME_AS_TEACHER, STUDENT, Routes, until

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


@pytest.fixture
def routes(gateway) -> Routes:  # type: ignore[no-untyped-def]
    return Routes(gateway.url)


def respond(
    client: openai.OpenAI, text: str, *, model: str = "gpt-4o", **extra: Any
) -> tuple[Any, dict[str, str]]:
    """A Responses API request as the application sends it; the Response and its headers."""
    raw = client.responses.with_raw_response.create(
        model=model,
        input=text,
        store=True,
        metadata=extra.pop("metadata", PROMPT),
        temperature=extra.pop("temperature", 0),
        **extra,
    )
    return raw.parse(), dict(raw.headers)


def streamed(
    client: openai.OpenAI, text: str, *, model: str = "gpt-4o", **extra: Any
) -> tuple[list[Any], dict[str, str]]:
    """The same, streamed: the SDK's parsed ``response.*`` events and the headers."""
    raw = client.responses.with_raw_response.create(
        model=model, input=text, store=True, metadata=PROMPT, stream=True, **extra
    )
    return list(raw.parse()), dict(raw.headers)


def test_full_route_answers_responses_with_the_student(
    client: openai.OpenAI, routes: Routes, gateway
) -> None:  # type: ignore[no-untyped-def]
    route = routes.add("responses", "echo-1", mode="full", force=True)
    first, headers = respond(client, "経費はどこで精算しますか？")
    assert headers["x-distillery-route"] == route["id"]
    assert headers["x-distillery-served-by"] == "student"
    assert first.model == "echo-1" and first.output_text == "echo: 経費はどこで精算しますか？"
    assert first.metadata == PROMPT
    record = gateway.services.completions.get(first.id)
    assert record.requested_model == "gpt-4o" and record.route_id == route["id"]
    assert record.model == "echo-1" and record.prompt_tokens is not None
    # the student's stored response continues the conversation, whoever answers next
    second, headers = respond(client, "and receipts?", previous_response_id=first.id)
    assert headers["x-distillery-served-by"] == "student"
    assert second.previous_response_id == first.id
    routes.ok(routes.rollback(route["id"], mode="off"))
    third, headers = respond(client, "thanks", previous_response_id=second.id)
    assert headers["x-distillery-served-by"] == "teacher" and third.model == "gpt-4o"
    assert third.output_text == "echo: thanks"
    sent = gateway.services.completions.get(third.id).request["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "経費はどこで精算しますか？",
        "and receipts?",
        "thanks",
    ]
    assert [i.id for i in client.responses.input_items.list(third.id)]
    stats = until(
        lambda: (s := routes.stats(route["id"]))["by_served"].get("teacher") and s, what="stats"
    )
    assert stats["by_served"] == {"student": 2, "teacher": 1}


def test_blocking_grader_falls_back_on_responses(
    client: openai.OpenAI, routes: Routes, gateway
) -> None:  # type: ignore[no-untyped-def]
    route = routes.add(
        "json",
        "echo-1",
        model="json-1",
        mode="full",
        force=True,
        graders=[{"type": "json_schema", "name": "schema", "schema": SCHEMA, "blocking": True}],
    )
    answer, headers = respond(client, "where do I file expenses?", model="json-1")
    assert headers["x-distillery-served-by"] == "fallback"
    assert answer.model == "json-1"
    assert json.loads(answer.output_text) == {"answer": "where do I file expenses?"}
    # streamed: buffered, graded, and the teacher's Response sent as OpenAI's events
    events, headers = streamed(client, "streamed", model="json-1")
    assert headers["x-distillery-served-by"] == "fallback"
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert json.loads(text) == {"answer": "streamed"}
    final = events[-1].response
    assert client.responses.retrieve(final.id).output_text == text
    # the student's failed attempts are stored too, linked to the route
    attempts = list(client.chat.completions.list(model="echo-1", metadata=PROMPT))
    assert len(attempts) == 2
    record = gateway.services.completions.get(attempts[0].id)
    assert record.requested_model == "json-1" and record.route_id == route["id"]
    stats = routes.stats(route["id"])
    assert stats["fallback_reasons"] == {"grader:schema": 2}
    # the student's provider down: the teacher answers, streamed or not
    routes.ok(routes.update(route["id"], student="fail-500", force=True, graders=[]))
    answer, headers = respond(client, "still answered", model="json-1")
    assert headers["x-distillery-served-by"] == "fallback" and answer.model == "json-1"
    events, headers = streamed(client, "still streamed", model="json-1")
    assert headers["x-distillery-served-by"] == "fallback"
    assert events[-1].type == "response.completed" and events[-1].response.model == "json-1"
    reasons = until(
        lambda: (r := routes.stats(route["id"])["fallback_reasons"]) and len(r) == 2 and r,
        what="both fallbacks counted",
    )
    assert any(r.startswith("student_error:") for r in reasons)


def test_what_the_student_cannot_take_falls_back_to_the_teacher(
    client: openai.OpenAI, routes: Routes
) -> None:
    """A hosted tool the teacher's Responses API has and a local student does not: the student's
    request is refused before it runs, and the teacher answers (counted), not the client's 400."""
    route = routes.add("hosted", STUDENT, mode="full", force=True)
    answer, headers = respond(client, "今日のニュースは？", tools=[{"type": "web_search_preview"}])
    assert headers["x-distillery-served-by"] == "fallback"
    assert answer.model == "gpt-4o" and answer.output_text == "echo: 今日のニュースは？"
    reasons = until(lambda: routes.stats(route["id"])["fallback_reasons"], what="the fallback")
    assert reasons == {"student_error:unsupported_value": 1}  # the 400 a local model gives


def test_shadow_grades_the_student_on_responses_traffic(
    client: openai.OpenAI, routes: Routes
) -> None:
    route = routes.add(
        "shadowed",
        "echo-1",
        mode="shadow",
        graders=[SAME_AS_TEACHER],
    )
    for i in range(3):
        answer, headers = respond(client, f"shadow question {i}")
        assert headers["x-distillery-served-by"] == "teacher" and answer.model == "gpt-4o"
    events, headers = streamed(client, "shadow question 3")
    assert headers["x-distillery-served-by"] == "teacher"
    assert events[-1].type == "response.completed"
    stats = until(
        lambda: (s := routes.stats(route["id"]))["shadow"]["graded"] == 4 and s,
        what="4 graded shadow pairs",
    )
    assert stats["shadow"]["pass_rate"] == 1.0  # the echo student says what the echo teacher says
    pairs = list(client.chat.completions.list(model="echo-1", metadata=PROMPT, limit=100))
    assert len(pairs) == 4


def test_response_cache_answers_a_repeated_response(
    client: openai.OpenAI, routes: Routes, fake_openai
) -> None:  # type: ignore[no-untyped-def]
    route = routes.add("cached", "echo-1", mode="off", cache={"enabled": True, "ttl_s": 60})
    first, headers = respond(client, "cache me")
    assert headers["x-distillery-served-by"] == "teacher"

    def hit() -> bool:
        _, h = respond(client, "cache me")
        return h["x-distillery-served-by"] == "cache"

    until(hit, what="a cache hit")  # the entry is written off the request path
    seen = len(fake_openai.requests)
    again, headers = respond(client, "cache me")
    assert headers["x-distillery-served-by"] == "cache"
    assert len(fake_openai.requests) == seen  # no model was called
    assert again.output_text == first.output_text and again.id != first.id
    assert again.metadata == PROMPT
    # a cached answer is a stored response: it can be read and continued
    assert client.responses.retrieve(again.id).output_text == first.output_text
    follow, headers = respond(client, "more", previous_response_id=again.id)
    assert headers["x-distillery-served-by"] == "teacher"
    assert follow.previous_response_id == again.id
    # a chat request with the same words is not answered from a Response, nor the reverse
    chat = client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "cache me"}],
        store=True,
        metadata=PROMPT,
        temperature=0,
    )
    assert chat.headers["x-distillery-served-by"] == "teacher"
    # not deterministic: never cached
    _, headers = respond(client, "cache me", temperature=0.7)
    assert headers["x-distillery-served-by"] == "teacher"
    assert routes.stats(route["id"])["by_served"]["cache"] >= 1


def test_legacy_completions_are_routed(client: openai.OpenAI, routes: Routes, gateway) -> None:  # type: ignore[no-untyped-def]
    route = routes.add("legacy", "echo-1", mode="full", force=True)
    raw = client.completions.with_raw_response.create(
        model="gpt-4o",
        prompt="say hi",
        max_tokens=8,
        extra_body={"store": True, "metadata": PROMPT},  # the SDK has neither on completions
    )
    assert raw.headers["x-distillery-route"] == route["id"]
    assert raw.headers["x-distillery-served-by"] == "student"
    answer = raw.parse()
    assert answer.model == "echo-1"
    record = gateway.services.completions.get(answer.id)
    assert record.requested_model == "gpt-4o" and record.route_id == route["id"]
    # a local student answers chat, not raw prompts: the teacher answers instead, counted
    routes.ok(routes.update(route["id"], student=STUDENT, force=True))
    raw = client.completions.with_raw_response.create(
        model="gpt-4o",
        prompt="say hi",
        max_tokens=8,
        extra_body={"store": True, "metadata": PROMPT},  # the SDK has neither on completions
    )
    assert raw.headers["x-distillery-served-by"] == "fallback"
    assert raw.parse().model == "gpt-4o"
    reasons = routes.stats(route["id"])["fallback_reasons"]
    assert reasons == {"student_error:model_not_supported": 1}


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_embedded_student_answers_responses(client: openai.OpenAI, routes: Routes, gateway) -> None:  # type: ignore[no-untyped-def]
    route = routes.add("embedded", STUDENT, mode="canary", percent=100, force=True)
    teacher_turn = client.responses.create(model="gpt-4o", input="Hello!", store=True)
    events, headers = streamed(
        client,
        "What is 2 + 2?",
        previous_response_id=teacher_turn.id,
        max_output_tokens=16,
        temperature=0,
    )
    assert headers["x-distillery-route"] == route["id"]
    assert headers["x-distillery-served-by"] == "student"
    # completed, or incomplete when the 16 tokens run out: an answer either way
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = events[-1].response
    assert final.model == STUDENT and final.previous_response_id == teacher_turn.id
    assert final.output_text
    stored = client.responses.retrieve(final.id)
    assert stored.output_text == final.output_text
    record = gateway.services.completions.get(final.id)
    assert record.route_id == route["id"] and record.requested_model == "gpt-4o"
    roles = [m["role"] for m in record.request["messages"]]
    assert roles == ["user", "assistant", "user"]  # the teacher's turn came with it
    stats = until(
        lambda: (s := routes.stats(route["id"]))["by_served"].get("student") and s, what="stats"
    )
    assert stats["by_served"]["student"] == 1  # the streamed answer's outcome is recorded
    # the same route, non-streamed, through plain HTTP: the headers are the gateway's own
    http = httpx.post(
        gateway.url + "/v1/responses",
        json={"model": "gpt-4o", "input": "Hi", "metadata": PROMPT, "max_output_tokens": 16},
        timeout=120,
    )
    assert http.status_code == 200 and http.headers["x-distillery-served-by"] == "student"
    assert http.json()["model"] == STUDENT
