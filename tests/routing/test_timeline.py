"""A route's timeline: its phases (one per stretch in one mode) with who answered in each, and
its requests in order, through ``GET /v1/distillery/routes/{id}/timeline`` on a live gateway
(the fake teacher upstream, the echo student) and through ``routing.timeline`` on hand-written
events and outcomes."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import openai
import pytest

from distillery.routing import timeline
from tests.support.routes import PROMPT, SAME_AS_TEACHER, Routes, ask, eval_runs, until

NS = "{http://www.w3.org/2000/svg}"
# an online grader the test steers: the echo student's answer passes when the question says "good"
SAYS_GOOD = {
    "type": "string_check",
    "name": "says_good",
    "input": "{{sample.output_text}}",
    "reference": "good",
    "operation": "like",
}


@pytest.fixture
def routes(gateway) -> Routes:  # type: ignore[no-untyped-def]
    return Routes(gateway.url)


def test_timeline_of_shadow_canary_full_and_a_rollback(
    client: openai.OpenAI, routes: Routes, gateway
) -> None:  # type: ignore[no-untyped-def]
    teacher_run, student_run = eval_runs(client, "gpt-4o", "echo-1")
    route = routes.add(
        "rollout",
        "echo-1",
        mode="shadow",
        sticky_key="user",
        graders=[SAME_AS_TEACHER, SAYS_GOOD],
        gate={"teacher_run": teacher_run, "student_run": student_run},
        # any failed answer to a user rolls back (the canary's answers all pass)
        rollback={"floor": 1.0, "window": 50, "min_samples": 1},
    )
    rid = route["id"]

    # shadow: the teacher answers; the echo student says the same, and "good" when asked it
    for text in ("good 1", "good 2", "bad 3"):
        _, headers = ask(client, text)
        assert headers["x-distillery-served-by"] == "teacher"
    until(lambda: routes.stats(rid)["shadow"]["graded"] == 3, what="3 graded shadow pairs")

    # canary at 50 %, through the gate (the held-out comparison), sticky by user
    promoted = routes.ok(routes.promote(rid, mode="canary", percent=50))
    assert promoted["mode"] == "canary"
    canary: dict[str, int] = {"teacher": 0, "student": 0}
    for i in range(24):
        _, headers = ask(client, f"good canary {i}", metadata={**PROMPT, "user": f"u{i}"})
        canary[headers["x-distillery-served-by"]] += 1
    assert canary["teacher"] and canary["student"], canary
    until(
        lambda: routes.stats(rid)["online"]["graded"] == canary["student"],
        what="the canary's verdicts",
    )

    # full: two good answers, then a bad one: below the floor, the route rolls back to shadow
    routes.ok(routes.promote(rid, mode="full"))
    for text in ("good full 1", "good full 2", "bad full 3"):
        _, headers = ask(client, text)
        assert headers["x-distillery-served-by"] == "student"
    until(lambda: routes.get(rid)["mode"] == "shadow", what="the rollback")
    for text in ("good after 1", "good after 2"):
        _, headers = ask(client, text)
        assert headers["x-distillery-served-by"] == "teacher"
    until(lambda: routes.stats(rid)["shadow"]["graded"] == 5, what="the new shadow pairs")

    response = routes.http.get(f"/routes/{rid}/timeline")
    data = routes.ok(response)
    assert data["object"] == "distillery.route_timeline" and data["route_id"] == rid
    assert data["truncated"] is False
    phases = data["phases"]
    assert [(p["mode"], p["cause"]) for p in phases] == [
        ("shadow", "created"),
        ("canary", "mode_changed"),
        ("full", "mode_changed"),
        ("shadow", "rolled_back"),
    ]
    first, canary_phase, full, after = phases
    assert [p["percent"] for p in phases] == [None, 50, None, None]
    assert after["actor"] == "system:rollback"
    for earlier, later in itertools.pairwise(phases):
        assert earlier["ended_at"] == later["started_at"]
    assert after["ended_at"] is None
    # who answered, per phase
    assert first["requests"] == 3 and first["served"] == {"teacher": 3}
    assert first["shadow_graded"] == 3 and first["shadow_passed"] == 2
    assert first["shadow_agreement"] == pytest.approx(2 / 3)
    assert first["online_graded"] == 0 and first["online_pass_rate"] is None
    assert canary_phase["requests"] == 24
    assert canary_phase["served"] == {k: v for k, v in canary.items() if v}
    assert canary_phase["online_graded"] == canary["student"]
    assert canary_phase["online_passed"] == canary["student"]
    assert canary_phase["online_pass_rate"] == 1.0
    assert canary_phase["online_pass_rate_ci"] == [1.0, 1.0]  # a bootstrap of all passes
    assert canary_phase["fallback_rate"] == 0.0 and canary_phase["shadow_graded"] == 0
    assert full["served"] == {"student": 3}
    assert full["online_graded"] == 3 and full["online_passed"] == 2
    assert full["online_pass_rate"] == pytest.approx(2 / 3)
    low, high = full["online_pass_rate_ci"]
    assert 0 <= low < 2 / 3 < high <= 1
    assert after["requests"] == 2 and after["served"] == {"teacher": 2}
    assert after["shadow_graded"] == 2 and after["shadow_passed"] == 2
    # the echo student is priced like nothing here: no model has a price on the fake upstream
    assert sum(p["requests"] for p in phases) == 32
    # the requests, in order, each with its phase
    requests = data["requests"]
    assert len(requests) == 32
    assert [r["phase"] for r in requests] == [0] * 3 + [1] * 24 + [2] * 3 + [3] * 2
    assert [r["mode"] for r in requests] == ["shadow"] * 3 + ["canary"] * 24 + ["full"] * 3 + [
        "shadow"
    ] * 2
    assert [r["passed"] for r in requests[27:30]] == [True, True, False]
    assert all(r["shadow"] for r in requests[:3]) and not any(r["shadow"] for r in requests[3:30])
    assert [r["at"] for r in requests] == sorted(r["at"] for r in requests)
    # the gate's decision and the rollback are marked
    marks = data["marks"]
    assert [m["type"] for m in marks] == ["gate_passed", "rolled_back"]
    gate_mark, rollback_mark = marks
    assert gate_mark["to"] == "canary" and rollback_mark["to"] == "shadow"
    assert 0 <= gate_mark["index"] <= rollback_mark["index"] <= len(requests)
    # ?limit: the newest requests only, the phases counted over those
    newest = routes.ok(routes.http.get(f"/routes/{rid}/timeline", params={"limit": 5}))
    assert newest["truncated"] is True and len(newest["requests"]) == 5
    assert [r["phase"] for r in newest["requests"]] == [2, 2, 2, 3, 3]
    assert [p["requests"] for p in newest["phases"]] == [0, 0, 3, 2]
    assert routes.http.get(f"/routes/{rid}/timeline", params={"limit": 0}).status_code == 400
    assert routes.http.get("/routes/route_nope/timeline").status_code == 404
    # the dashboard's route page shows the same phases
    page = httpx.get(f"{gateway.url}/routes/{rid}", timeout=30)
    assert page.status_code == 200
    assert 'id="phases"' in page.text and "canary 50%" in page.text
    assert page.text.count('<tr class="phase-') == 4


# --- routing.timeline on hand-written histories ---------------------------------------------------


def _event(kind: str, at: int, **body: Any) -> dict[str, Any]:
    return {"type": kind, "created_at": at, **body}


def _outcome(at: int, mode: str, served_by: str, **fields: Any) -> dict[str, Any]:
    return {
        "created_at": at,
        "mode": mode,
        "served_by": served_by,
        "shadow": fields.pop("shadow", False),
        "passed": fields.pop("passed", None),
        "reason": fields.pop("reason", None),
        "cost_usd": fields.pop("cost_usd", None),
        "saved_usd": fields.pop("saved_usd", None),
    }


EVENTS = [
    _event("created", 100, mode="shadow", actor="user:a"),
    _event("gate_passed", 200, to="canary"),
    _event("mode_changed", 200, to="canary", percent=25, actor="user:a"),
    _event("updated", 250, changed=["graders"]),
    _event("mode_changed", 300, to="full"),
    _event("rolled_back", 400, to="shadow", actor="system:rollback"),
]


def test_history_cuts_outcomes_into_phases() -> None:
    outcomes = [
        _outcome(150, "shadow", "teacher", shadow=True, passed=True, cost_usd=0.002),
        _outcome(210, "canary", "student", passed=True, cost_usd=0.001, saved_usd=0.001),
        _outcome(215, "canary", "teacher", cost_usd=0.002),
        # a shadow pair served at 190 and graded after the route moved on: the first phase's
        _outcome(190, "shadow", "teacher", shadow=True, passed=False),
        _outcome(220, "canary", "fallback", passed=False, reason="grader:schema", cost_usd=0.003),
        _outcome(305, "full", "student", passed=False, cost_usd=0.001, saved_usd=0.001),
        _outcome(306, "full", "cache", cost_usd=0.0, saved_usd=0.002),
        _outcome(410, "shadow", "teacher", shadow=True, passed=True),
    ]
    phases, requests = timeline.history(EVENTS, outcomes)
    assert [(p.mode, p.cause, p.started_at, p.ended_at) for p in phases] == [
        ("shadow", "created", 100, 200),
        ("canary", "mode_changed", 200, 300),
        ("full", "mode_changed", 300, 400),
        ("shadow", "rolled_back", 400, None),
    ]
    shadow, canary, full, after = (p.to_dict() for p in phases)
    assert shadow["requests"] == 2 and shadow["served"] == {"teacher": 2}
    assert (shadow["shadow_graded"], shadow["shadow_passed"]) == (2, 1)
    assert shadow["shadow_agreement"] == 0.5 and shadow["online_pass_rate"] is None
    assert shadow["cost_per_1k"] == pytest.approx(1.0)  # $0.002 over 2 requests
    assert canary["percent"] == 25 and canary["actor"] == "user:a"
    assert canary["served"] == {"student": 1, "teacher": 1, "fallback": 1}
    assert canary["fallback_reasons"] == {"grader:schema": 1}
    assert canary["fallback_rate"] == 0.5  # of the 2 requests the student took
    assert (canary["online_graded"], canary["online_passed"]) == (2, 1)
    assert canary["cost_usd"] == pytest.approx(0.006)
    assert canary["saved_usd"] == pytest.approx(0.001)
    assert full["served"] == {"student": 1, "cache": 1} and full["online_pass_rate"] == 0.0
    assert full["online_pass_rate_ci"][0] == 0.0 and full["saved_usd"] == pytest.approx(0.003)
    assert after["actor"] == "system:rollback" and after["requests"] == 1
    assert [r["phase"] for r in requests] == [0, 1, 1, 0, 1, 2, 2, 3]
    assert requests[3] == {
        "at": 190,
        "mode": "shadow",
        "served_by": "teacher",
        "shadow": True,
        "passed": False,
        "phase": 0,
    }
    marks = timeline.marks(EVENTS, requests)
    # each at the first request written at or after it (the late shadow pair comes after)
    assert [(m["type"], m["index"], m["to"]) for m in marks] == [
        ("gate_passed", 1, "canary"),
        ("rolled_back", 7, "shadow"),
    ]


def test_history_within_one_second() -> None:
    """A route moved through its modes faster than the clock's second: the requests keep the
    phase they were served in, in the order they were written."""
    events = [
        _event("created", 500, mode="shadow"),
        _event("mode_changed", 500, to="canary", percent=50),
        _event("mode_changed", 500, to="full"),
        _event("rolled_back", 500, to="shadow"),
    ]
    modes = ["shadow", "shadow", "canary", "full", "full", "shadow"]
    outcomes = [_outcome(500, m, "teacher" if m == "shadow" else "student") for m in modes]
    phases, requests = timeline.history(events, outcomes)
    assert [r["phase"] for r in requests] == [0, 0, 1, 2, 2, 3]
    assert [p.requests for p in phases] == [2, 1, 2, 1]


def test_history_edge_cases() -> None:
    # an outcome in a mode no phase had: the first phase of its mode, else the first phase
    events = [_event("created", 100, mode="full"), _event("rolled_back", 200, to="off")]
    outcomes = [
        _outcome(150, "canary", "student"),
        _outcome(250, "off", "teacher"),
        _outcome(90, "full", "student"),  # before the route's first event (clocks differ)
    ]
    phases, requests = timeline.history(events, outcomes)
    assert [r["phase"] for r in requests] == [0, 1, 0]
    assert [p.requests for p in phases] == [2, 1]
    # a repeated move to the mode it is in begins no phase; other events begin none either
    events = [
        _event("created", 100, mode="shadow"),
        _event("rolled_back", 150, to="shadow"),
        _event("updated", 160, changed=["graders"]),
        _event("gate_refused", 170, to="canary"),
    ]
    phases, _ = timeline.history(events, [])
    assert [(p.mode, p.ended_at) for p in phases] == [("shadow", None)]
    phase = phases[0].to_dict()
    assert phase["requests"] == 0 and phase["cost_per_1k"] is None
    assert phase["fallback_rate"] is None and phase["shadow_agreement_ci"] is None
    # no events at all: no phase, and every request without one
    phases, requests = timeline.history([], [_outcome(1, "shadow", "teacher", shadow=True)])
    assert phases == [] and requests[0]["phase"] is None
    # a mark after the last request is placed at the end
    marks = timeline.marks([_event("gate_refused", 900)], requests)
    assert marks == [{"type": "gate_refused", "at": 900, "index": 1, "to": None}]


def test_phase_label_and_chart() -> None:
    assert timeline.phase_label({"mode": "canary", "percent": 12.5}) == "canary 12.5%"
    assert timeline.phase_label({"mode": "canary", "percent": None}) == "canary"
    assert timeline.phase_label({"mode": "full", "percent": None}) == "full"
    phases, requests = timeline.history(
        EVENTS,
        [
            _outcome(150, "shadow", "teacher", shadow=True),
            _outcome(210, "canary", "student"),
            _outcome(220, "canary", "fallback"),
            _outcome(410, "shadow", "teacher", shadow=True),
        ],
    )
    data = {
        "phases": [p.to_dict() for p in phases],
        "requests": requests,
        "marks": timeline.marks(EVENTS, requests),
    }
    root = ET.fromstring(timeline.chart(data, title="経費ルート"))
    assert root.find(f"{NS}title").text == "経費ルート"  # type: ignore[union-attr]
    bands = [t.text for t in root.findall(f".//{NS}g[@class='bands']/{NS}text")]
    assert bands == ["shadow", "canary 25%", "shadow"]  # the full phase had no request
    marks = [t.text for t in root.findall(f".//{NS}g[@class='marks']/{NS}text")]
    assert marks == ["gate passed", "rolled back"]
    lanes = [t.text for t in root.findall(f".//{NS}g[@class='lanes']/{NS}text")]
    assert lanes == ["teacher (2)", "student (1)", "fallback (1)"]  # no cache lane: no hit
