"""Routes through a live gateway: the openai SDK as the application, a fake teacher upstream.

The application always asks for its teacher (``gpt-4o`` / ``json-1`` on the fake upstream) with
its prompt's metadata; the route decides who answers. Fake-served students keep most tests fast;
the embedded student answers in ``test_embedded_student_canary_and_shadow``.
"""

from __future__ import annotations

import json

import openai
import pytest

from tests.support.routes import (
    PROMPT,
    SAME_AS_TEACHER,
    STUDENT,
    Labeller,
    Routes,
    ask,
    eval_runs,
    until,
)

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


@pytest.fixture
def routes(gateway) -> Routes:  # type: ignore[no-untyped-def]
    return Routes(gateway.url)


def test_route_validation(routes: Routes) -> None:
    base = {"name": "r", "match": {"model": "gpt-4o", "metadata": PROMPT}, "student": "echo-1"}
    bad = [
        ({**base, "match": {"model": "no-such-model"}}, 400, "match.model"),
        ({**base, "student": "no-such-student"}, 400, "student"),
        ({**base, "percent": 101}, 400, "percent"),
        ({**base, "mode": "sideways"}, 400, "mode"),
        ({**base, "student": "gpt-4o"}, 400, None),
        ({**base, "graders": [{"type": "python", "name": "x"}]}, 400, "graders[0].source"),
        ({**base, "match": {"model": "gpt-4o", "metadata": {"k" * 65: "v"}}}, 400, None),
    ]
    for body, status, param in bad:
        response = routes.create(**body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["message"]
        if param is not None:
            assert error["param"] == param, (body, error)
    created = routes.ok(routes.create(**base))
    assert created["object"] == "distillery.route" and created["mode"] == "shadow"
    # two routes on the same traffic, or overlapping traffic: 409
    for match in ({"model": "gpt-4o", "metadata": PROMPT}, {"model": "gpt-4o"}):
        clash = routes.create(**{**base, "name": "other", "match": match})
        assert clash.status_code == 409 and clash.json()["error"]["param"] == "match"
    assert routes.create(**base).status_code == 409  # the same name
    # other prompts of the same model are other traffic
    other = {**base, "name": "other", "match": {"model": "gpt-4o", "metadata": {"prompt": "x"}}}
    assert routes.create(**other).status_code == 200
    # a promote without a comparison is refused with the reason
    refused = routes.promote(created["id"], mode="canary", percent=10)
    assert refused.status_code == 409
    assert "no comparison" in refused.json()["error"]["message"]
    assert routes.get(created["id"])["mode"] == "shadow"
    assert routes.http.get("/routes/route_nope").status_code == 404
    assert routes.rollback(created["id"], mode="full").status_code == 400
    assert routes.http.delete(f"/routes/{created['id']}").json()["deleted"] is True
    assert routes.http.get(f"/routes/{created['id']}").status_code == 404


def test_gate_refuses_below_threshold_and_allows_above(
    client: openai.OpenAI, routes: Routes
) -> None:
    # json-1 answers {"answer": ...}, not the echo the items expect: far below the teacher
    weak_teacher, weak = eval_runs(client, "gpt-4o", "json-1")
    strong_teacher, strong = eval_runs(client, "gpt-4o", "echo-1")
    body = {
        "name": "router",
        "match": {"model": "gpt-4o", "metadata": PROMPT},
        "student": "json-1",
        "mode": "canary",
        "percent": 30,
        "gate": {"teacher_run": weak_teacher, "student_run": weak, "min_percent_of_teacher": 95},
    }
    refused = routes.create(**body)
    assert refused.status_code == 409, refused.text
    gate = refused.json()["error"]["gate"]
    assert gate["allowed"] is False and gate["offline"]["percent_of_teacher"] == 0
    route = routes.ok(routes.create(**{**body, "mode": "shadow"}))
    # the comparison must evaluate the route's student
    mismatch = routes.update(
        route["id"], gate={"teacher_run": strong_teacher, "student_run": strong}, mode="canary"
    )
    assert mismatch.status_code == 409 and "not json-1" in mismatch.json()["error"]["message"]
    # a better student and its comparison: the gate opens
    moved = routes.ok(
        routes.update(
            route["id"],
            student="echo-1",
            gate={"teacher_run": strong_teacher, "student_run": strong},
        )
    )
    assert moved["mode"] == "shadow"
    promoted = routes.ok(routes.promote(route["id"], mode="canary", percent=30))
    assert promoted["mode"] == "canary" and promoted["percent"] == 30
    events = routes.events(route["id"])
    types = [e["type"] for e in events]
    assert "gate_refused" in types and "gate_passed" in types and "mode_changed" in types
    passed = next(e for e in events if e["type"] == "gate_passed")
    assert passed["decision"]["offline"]["percent_of_teacher_ci"][0] >= 95
    # force bypasses the gate, recorded as such
    forced = routes.ok(
        routes.create(
            name="forced",
            match={"model": "gpt-4o", "metadata": {"prompt": "forced"}},
            student="json-1",
            mode="full",
            force=True,
        )
    )
    assert "gate_bypassed" in [e["type"] for e in routes.events(forced["id"])]


def test_blocking_grader_falls_back_to_the_teacher(
    client: openai.OpenAI, routes: Routes, gateway
) -> None:  # type: ignore[no-untyped-def]
    route = routes.ok(
        routes.create(
            name="json",
            match={"model": "json-1", "metadata": PROMPT},
            student="echo-1",  # answers prose: fails the schema
            mode="full",
            force=True,
            graders=[{"type": "json_schema", "name": "schema", "schema": SCHEMA, "blocking": True}],
        )
    )
    answer, headers = ask(client, "where do I file expenses?", model="json-1")
    assert headers["x-distillery-served-by"] == "fallback"
    assert headers["x-distillery-route"] == route["id"]
    assert answer.model == "json-1"
    assert json.loads(answer.choices[0].message.content or "") == {
        "answer": "where do I file expenses?"
    }
    # streamed: buffered, graded, and the teacher's answer streamed in OpenAI's chunks
    chunks = list(
        client.chat.completions.create(
            model="json-1",
            messages=[{"role": "user", "content": "streamed"}],
            store=True,
            metadata=PROMPT,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"answer": "streamed"}
    assert chunks[-1].usage is not None
    stored = client.chat.completions.retrieve(answer.id)
    assert stored.model == "json-1"
    # the student's failed attempt is stored too, under its own model, linked to the route
    attempts = list(client.chat.completions.list(model="echo-1", metadata=PROMPT))
    assert len(attempts) == 2
    record = gateway.services.completions.get(attempts[0].id)
    assert record.requested_model == "json-1" and record.route_id == route["id"]
    stats = routes.stats(route["id"])
    assert stats["by_served"] == {"fallback": 2}
    assert stats["fallback_rate"] == 1.0
    assert stats["fallback_reasons"] == {"grader:schema": 2}
    # the student's provider down: the teacher answers, counted
    routes.ok(routes.update(route["id"], student="fail-500", force=True))
    answer, headers = ask(client, "still answered", model="json-1")
    assert headers["x-distillery-served-by"] == "fallback" and answer.model == "json-1"
    reasons = routes.stats(route["id"])["fallback_reasons"]
    assert any(r.startswith("student_error:") for r in reasons)


def test_online_pass_rate_below_the_floor_rolls_back(client: openai.OpenAI, routes: Routes) -> None:
    route = routes.ok(
        routes.create(
            name="rollback",
            match={"model": "gpt-4o", "metadata": PROMPT},
            student="echo-1",
            mode="full",
            force=True,
            # not blocking: the student's prose is returned, and graded after
            graders=[{"type": "valid_json", "name": "json"}],
            rollback={"floor": 0.9, "window": 10, "min_samples": 5},
        )
    )
    for i in range(5):
        answer, headers = ask(client, f"question {i}")
        assert headers["x-distillery-served-by"] == "student" and answer.model == "echo-1"
    rolled = until(lambda: routes.get(route["id"])["mode"] == "shadow", what="rollback")
    assert rolled
    event = next(e for e in routes.events(route["id"]) if e["type"] == "rolled_back")
    assert event["actor"] == "system:rollback" and event["to"] == "shadow"
    assert event["pass_rate"] == 0.0 and event["floor"] == 0.9
    _, headers = ask(client, "after the rollback")
    assert headers["x-distillery-served-by"] == "teacher"
    # the teacher's answer is recorded once its shadow pair is graded, in the background
    stats = until(
        lambda: (s := routes.stats(route["id"]))["by_served"].get("teacher") and s,
        what="the teacher's outcome",
    )
    assert stats["online"]["graded"] == 5 and stats["online"]["pass_rate"] == 0.0
    # the student's answers priced at the teacher's rate: realised savings in the costs report
    assert stats["costs"]["saved_usd"] > 0 and stats["costs"]["teacher_cost_per_1k"] > 0
    report = routes.http.get("/costs").json()
    (entry,) = [r for r in report["routes"] if r["route_id"] == route["id"]]
    assert entry["by_served"]["student"] == 5
    assert entry["saved_usd"] == pytest.approx(stats["costs"]["saved_usd"])


def test_a_student_that_stops_answering_rolls_back(client: openai.OpenAI, routes: Routes) -> None:
    """Its provider errors: each fallback is a failed answer in the live window (as in the
    stored outcomes), streamed or not, so the route drops to shadow by itself."""
    rollback = {"floor": 0.5, "window": 10, "min_samples": 3}
    route = routes.add("failing", "fail-500", mode="full", force=True, rollback=rollback)
    for i in range(3):
        answer, headers = ask(client, f"question {i}")
        assert headers["x-distillery-served-by"] == "fallback" and answer.model == "gpt-4o"
    until(lambda: routes.get(route["id"])["mode"] == "shadow", what="the rollback")
    event = next(e for e in routes.events(route["id"]) if e["type"] == "rolled_back")
    assert event["actor"] == "system:rollback" and event["from"] == "full"
    assert event["pass_rate"] == 0.0 and event["window"] == 3
    _, headers = ask(client, "after the rollback")
    assert headers["x-distillery-served-by"] == "teacher"
    stats = routes.stats(route["id"])
    assert stats["by_served"]["fallback"] == 3
    assert stats["fallback_reasons"] == {"student_error:bad_gateway": 3}  # its 500, upstream
    assert stats["online"]["graded"] == 3 and stats["online"]["pass_rate"] == 0.0
    # streamed (no blocking grader: streamed through), the teacher's stream instead
    metadata = {"prompt": "streamed"}
    streamed = routes.ok(
        routes.create(
            name="streamed",
            match={"model": "gpt-4o", "metadata": metadata},
            student="fail-500",
            mode="canary",
            percent=100,
            force=True,
            rollback={"floor": 0.5, "window": 10, "min_samples": 2},
        )
    )
    for i in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": f"streamed {i}"}],
            store=True,
            metadata=metadata,
            stream=True,
        )
        assert raw.headers["x-distillery-served-by"] == "fallback"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text == f"echo: streamed {i}"
    until(lambda: routes.get(streamed["id"])["mode"] == "shadow", what="the streamed rollback")
    event = next(e for e in routes.events(streamed["id"]) if e["type"] == "rolled_back")
    assert event["from"] == "canary" and event["pass_rate"] == 0.0 and event["window"] == 2


def test_graders_compare_a_field_of_the_teachers_json(
    client: openai.OpenAI, routes: Routes, gateway
) -> None:  # type: ignore[no-untyped-def]
    """``{{item.teacher_json.category}}``: the student agrees when it files the inquiry under the
    teacher's category, whatever else either says; on the student's answers to users (no teacher
    answer to compare with) that grader is skipped, and the others give the verdict."""
    from distillery.store.tables import RouteOutcomeRow

    _, headers = ask(client, "an invoice question")
    assert "x-distillery-route" not in headers  # the fake upstream's echo teacher, unrouted
    # a teacher served in process, before the configured provider of the same model
    gateway.services.providers.add(Labeller(), first=True)
    answer, _ = ask(client, "an invoice question", max_tokens=64)
    assert json.loads(answer.choices[0].message.content or "")["category"] == "billing"
    same_category = {
        "type": "string_check",
        "name": "same_category",
        "input": "{{sample.output_json.category}}",
        "reference": "{{item.teacher_json.category}}",
        "operation": "eq",
    }
    route = routes.add(
        "labels",
        Labeller.STUDENT,
        graders=[same_category, {"type": "valid_json", "name": "json"}],
    )
    questions = ["invoice 1", "invoice 2", "login fails"]
    for text in questions:
        _, headers = ask(client, text, max_tokens=64)
        assert headers["x-distillery-served-by"] == "teacher"
    stats = until(
        lambda: (s := routes.stats(route["id"]))["shadow"]["graded"] == 3 and s,
        what="3 graded shadow pairs",
    )
    assert stats["shadow"]["passed"] == 2  # billing = billing twice; billing != technical
    # the whole answers differ every time: only the field is compared
    students = client.chat.completions.list(model=Labeller.STUDENT, metadata=PROMPT, limit=10)
    teachers = client.chat.completions.list(model="gpt-4o", metadata=PROMPT, limit=10)
    said = {c.choices[0].message.content for c in teachers.data}
    assert len(students.data) == 3 and not said & {
        c.choices[0].message.content for c in students.data
    }
    # full: the student answers users; nothing of the teacher's to compare with
    routes.ok(routes.promote(route["id"], mode="full", force=True))
    for text in ("invoice 3", "vpn is down"):
        _, headers = ask(client, text, max_tokens=64)
        assert headers["x-distillery-served-by"] == "student"
    stats = until(
        lambda: (s := routes.stats(route["id"]))["online"]["graded"] == 2 and s,
        what="2 online verdicts",
    )
    assert stats["online"]["pass_rate"] == 1.0  # valid JSON both times
    with gateway.services.store.read() as session:
        rows = session.query(RouteOutcomeRow).filter_by(route_id=route["id"])
        grades = {
            (row.mode, row.shadow): [(g["name"], g["passed"], g["error"]) for g in row.grades or []]
            for row in rows.order_by(RouteOutcomeRow.seq)
        }
        shadow = [
            [(g["name"], g["passed"], g["error"]) for g in row.grades]
            for row in rows.filter_by(shadow=True).order_by(RouteOutcomeRow.seq)
        ]
    assert [pair[0] for pair in shadow] == [
        ("same_category", True, None),
        ("same_category", True, None),
        ("same_category", False, None),
    ]
    assert grades[("full", False)] == [("json", True, None)]  # same_category skipped, not failed


def test_a_judge_that_fails_counts_but_does_not_block(
    client: openai.OpenAI, routes: Routes
) -> None:
    judge = {
        "type": "label_model",
        "name": "judge",
        "model": "fail-500",
        "input": [{"role": "user", "content": "Is {{sample.output_text}} right?"}],
        "labels": ["yes", "no"],
        "passing_labels": ["yes"],
        "blocking": True,
    }
    route = routes.ok(
        routes.create(
            name="judged",
            match={"model": "gpt-4o", "metadata": PROMPT},
            student="echo-1",
            mode="full",
            force=True,
            graders=[judge],
        )
    )
    answer, headers = ask(client, "judge me")
    assert headers["x-distillery-served-by"] == "student" and answer.model == "echo-1"
    stats = until(
        lambda: (s := routes.stats(route["id"]))["by_served"].get("student") and s, what="stats"
    )
    assert stats["online"]["graded"] == 0  # an errored grade is no verdict


def test_response_cache(client: openai.OpenAI, routes: Routes, fake_openai) -> None:  # type: ignore[no-untyped-def]
    route = routes.ok(
        routes.create(
            name="cached",
            match={"model": "gpt-4o", "metadata": PROMPT},
            student="echo-1",
            mode="off",
            cache={"enabled": True, "ttl_s": 60},
        )
    )
    first, headers = ask(client, "cache me")
    assert headers["x-distillery-served-by"] == "teacher"

    def hit() -> bool:
        _, h = ask(client, "cache me")
        return h["x-distillery-served-by"] == "cache"

    until(hit, what="a cache hit")  # the entry is written off the request path
    seen = len(fake_openai.requests)
    again, headers = ask(client, "cache me")
    assert headers["x-distillery-served-by"] == "cache"
    assert len(fake_openai.requests) == seen  # no model was called
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.id != first.id
    assert client.chat.completions.retrieve(again.id).model == "gpt-4o"
    # not deterministic: never cached
    _, headers = ask(client, "cache me", temperature=0.7)
    assert headers["x-distillery-served-by"] == "teacher"
    stats = routes.stats(route["id"])
    assert stats["by_served"]["cache"] >= 1
    # a new student invalidates what the route cached
    routes.ok(routes.update(route["id"], student="json-1"))
    _, headers = ask(client, "cache me")
    assert headers["x-distillery-served-by"] == "teacher"


@pytest.mark.local_model
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_embedded_student_canary_and_shadow(client: openai.OpenAI, routes: Routes) -> None:
    route = routes.ok(
        routes.create(
            name="router",
            match={"model": "gpt-4o", "metadata": PROMPT},
            student=STUDENT,
            mode="shadow",
            sticky_key="user",
            graders=[SAME_AS_TEACHER],
        )
    )
    # shadow: the teacher answers every user; the student answers the same requests after
    for i in range(8):
        answer, headers = ask(client, f"shadow question {i}")
        assert headers["x-distillery-served-by"] == "teacher" and answer.model == "gpt-4o"
    shadow = until(
        lambda: (s := routes.stats(route["id"]))["shadow"]["graded"] == 8 and s,
        what="8 graded shadow pairs",
    )
    assert shadow["shadow"]["pass_rate"] == 0.0  # the small student does not echo
    pairs = list(client.chat.completions.list(model=STUDENT, metadata=PROMPT, limit=100))
    assert len(pairs) == 8
    # canary at 30 %, sticky per user: about 300 of 1,000 users, each always on one side
    routes.ok(routes.promote(route["id"], mode="canary", percent=30, force=True))
    sides = {}
    for i in range(1000):
        answer, headers = ask(client, "hello", metadata={**PROMPT, "user": f"u{i}"}, max_tokens=1)
        sides[i] = headers["x-distillery-served-by"]
        assert answer.model == (STUDENT if sides[i] == "student" else "gpt-4o")
    share = sum(1 for s in sides.values() if s == "student") / len(sides)
    assert 0.25 <= share <= 0.35, share
    # sticky by user (the sticky key): the same users land on the same side, whatever they ask
    first = {}
    for i in range(40):
        _, headers = ask(client, f"other question {i}", metadata={**PROMPT, "user": f"s{i}"})
        first[i] = headers["x-distillery-served-by"]
    for i in range(40):
        _, headers = ask(client, f"yet another {i}", metadata={**PROMPT, "user": f"s{i}"})
        assert headers["x-distillery-served-by"] == first[i]
    stats = routes.stats(route["id"])
    assert stats["by_model"][STUDENT] >= 250
