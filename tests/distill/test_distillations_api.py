"""``POST /v1/distillery/distillations`` through a live server (SQLite and PostgreSQL): the server's
runner distils a prompt's captured traffic to a gated shadow route, with the fake provider's
``json-1`` as the student (its fine-tuning API trains it); bad input is refused at once."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.support.live import LiveServer
from tests.support.stored import completion, insert

LABELS = ["IT", "人事", "経理"]
FORMAT = {"type": "json_object"}


def traffic(n: int, *, prompt: str = "router", broken: int = 0) -> list[Any]:
    out = []
    for i in range(n):
        question = (
            f"case {i}: my VPN does not connect" if i % 2 else f"{i}件目: 経費精算の締め日は？"
        )
        answer = json.dumps(
            {"category": LABELS[i % 3], "reason": f"reason {i}"}, ensure_ascii=False
        )
        record = completion(question, answer, metadata={"prompt": prompt, "prompt_version": "v1"})
        record.request["response_format"] = FORMAT
        out.append(record)
    for i in range(broken):
        record = completion(
            f"broken {i}", "IT, I think", metadata={"prompt": prompt, "prompt_version": "v1"}
        )
        record.request["response_format"] = FORMAT
        out.append(record)
    return out


def until_ended(http: httpx.Client, distillation_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = http.get(f"/v1/distillery/distillations/{distillation_id}").json()
        if found["status"] in ("succeeded", "failed", "cancelled"):
            return dict(found)
        assert time.monotonic() < deadline, found
        time.sleep(0.3)


@pytest.fixture
def http(gateway: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, timeout=60)


def test_one_call_distils_a_prompt_to_a_gated_shadow_route(
    gateway: LiveServer, http: httpx.Client
) -> None:
    insert(gateway.services, *traffic(40, broken=2))
    created = http.post(
        "/v1/distillery/distillations", json={"prompt": "router", "student": "json-1"}
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["object"] == "distillery.distillation" and body["status"] in ("queued", "running")
    inventory = body["inventory"]
    assert inventory["teacher"] == "gpt-4o" and inventory["usable"] == 40
    assert inventory["unusable"] == 2  # not JSON where the format asks for it: left out, listed
    assert inventory["unusable_items"][0]["problem"].startswith("not JSON")
    assert inventory["graders"] == ["valid_json", "field_category"]

    done = until_ended(http, body["id"])
    assert done["status"] == "succeeded", done.get("error")
    report = done["report"]
    teacher, base, student = report["runs"]
    assert base["criteria"] == {"valid_json": 1.0, "field_category": 0.0}  # {"answer": ...}
    assert [r["label"] for r in report["runs"]] == ["teacher", "base student", "distilled student"]
    assert teacher["pass_rate"] == 1.0 and teacher["items"] == report["splits"]["test"] > 0
    assert (
        student["model"].startswith("ft:json-1:") and student["model"] == report["fine_tuned_model"]
    )
    # the fake's fine-tuned models echo the question: neither JSON nor the category
    assert student["criteria"] == {"valid_json": 0.0, "field_category": 0.0}
    assert report["misses"][0]["criteria"] == ["valid_json", "field_category"]
    assert report["misses"][0]["student"].startswith("echo: ")
    assert "valid_json 0.0% vs 100.0%; field_category 0.0% vs 100.0%" in report["verdict"]

    # the route: the prompt's traffic, in shadow, gated by the teacher and student runs
    route = http.get(f"/v1/distillery/routes/{report['route_id']}").json()
    assert route["mode"] == "shadow" and route["student"] == student["model"]
    assert route["match"] == {
        "model": "gpt-4o",
        "metadata": {"prompt": "router"},
        "prompt_version": "v1",
    }
    assert route["gate"]["teacher_run"] == teacher["run_id"]
    assert route["gate"]["student_run"] == student["run_id"]
    graders = {g["name"]: g for g in route["graders"]}
    assert graders["valid_json"]["blocking"] is True  # a non-JSON answer goes to the teacher
    assert graders["field_category"]["reference"] == "{{item.teacher_json.category}}"
    assert not graders["field_category"].get("blocking")
    assert report["gate_open"] is False and report["gate"]["reasons"]
    promoted = http.post(f"/v1/distillery/routes/{route['id']}/promote", json={"mode": "canary"})
    assert promoted.status_code == 409  # the comparison gates it

    listed = http.get("/v1/distillery/distillations").json()
    assert [d["id"] for d in listed["data"]] == [body["id"]]

    # the same again: every artifact reused (same dataset, job and route)
    again = http.post(
        "/v1/distillery/distillations", json={"prompt": "router", "student": "json-1"}
    )
    redone = until_ended(http, again.json()["id"])
    assert redone["status"] == "succeeded"
    assert redone["report"]["job_id"] == report["job_id"]
    assert redone["report"]["route_id"] == report["route_id"]
    assert redone["report"]["dataset"] == report["dataset"]

    # a run deleted since (DELETE /v1/evals/{id}/runs/{run}) is done again, and the route's gate
    # moves to the new run
    (evaluation,) = [
        e
        for e in http.get("/v1/evals", params={"limit": 100}).json()["data"]
        if e["name"] == f"distill router {report['fingerprint']}"
    ]
    deleted = http.delete(f"/v1/evals/{evaluation['id']}/runs/{student['run_id']}")
    assert deleted.status_code == 200
    third = http.post(
        "/v1/distillery/distillations", json={"prompt": "router", "student": "json-1"}
    )
    rerun = until_ended(http, third.json()["id"])
    assert rerun["status"] == "succeeded", rerun.get("error")
    new_run = rerun["report"]["runs"][2]["run_id"]
    assert new_run != student["run_id"] and rerun["report"]["route_id"] == report["route_id"]
    route = http.get(f"/v1/distillery/routes/{report['route_id']}").json()
    assert route["gate"]["student_run"] == new_run and route["mode"] == "shadow"


def test_bad_requests_are_refused_at_once(gateway: LiveServer, http: httpx.Client) -> None:
    insert(gateway.services, *traffic(12))
    unknown = http.post("/v1/distillery/distillations", json={"prompt": "ruoter"})
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["code"] == "prompt_not_found" and error["message"].endswith(
        "Prompts with traffic: router."
    )
    few = http.post("/v1/distillery/distillations", json={"prompt": "router", "student": "json-1"})
    assert few.status_code == 400
    error = few.json()["error"]
    assert error["code"] == "too_little_data" and error["param"] == "prompt"
    assert "has 12 usable example(s)" in error["message"] and "about 8 more" in error["message"]
    no_student = http.post(
        "/v1/distillery/distillations", json={"prompt": "router", "student": "nobody-1b"}
    )
    assert no_student.status_code == 404 and no_student.json()["error"]["param"] == "student"
    bad = http.post("/v1/distillery/distillations", json={"prompt": "router", "test_fraction": 0.9})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "test_fraction"
    assert http.get("/v1/distillery/distillations").json()["data"] == []
    missing = http.post("/v1/distillery/distillations/distill_nope/cancel")
    assert missing.status_code == 404


def test_a_cancelled_distillation_stops_and_stays_cancelled(
    gateway: LiveServer, http: httpx.Client
) -> None:
    insert(gateway.services, *traffic(30))
    created = http.post(
        "/v1/distillery/distillations", json={"prompt": "router", "student": "json-1"}
    ).json()
    cancelled = http.post(f"/v1/distillery/distillations/{created['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    time.sleep(3)  # the runner sees it at its next check
    found = http.get(f"/v1/distillery/distillations/{created['id']}").json()
    assert found["status"] == "cancelled" and found["report"] is None
    again = http.post(f"/v1/distillery/distillations/{created['id']}/cancel")
    assert again.status_code == 409
