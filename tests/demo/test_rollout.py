"""The demo's rollout stage on a real stack: a recorded teacher, the embedded SmolLM2 student
behind a route, the gate, canary, full, and a burst past the student server's capacity that
falls back and rolls the route back by itself; then the route's page in Chromium.

The teacher's captured answers are the student's own (generated first through the gateway). A
tiny base student does not reliably repeat itself in a batch, so the operator overrides the gate
(``force``, recorded as ``gate_bypassed``); everything after it is the product's real path."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from distillery.app import build_services
from distillery.demo.dataset import load_inquiries, messages_for, response_format
from distillery.demo.rollout import Rollout, RolloutOptions
from distillery.demo.stack import LocalStack
from distillery.services import Services
from distillery.settings import Settings

pytestmark = [pytest.mark.local_model, pytest.mark.browser]

STUDENT = "smollm2-135m-instruct"
TEACHER = "gpt-4o"
FP = "test0rollout"
PROMPT = "inquiry-router"
VERSION = "v1"
CAPTURED = {"prompt": PROMPT, "prompt_version": VERSION, "demo": FP, "split": "test"}
MAX_TOKENS = 64  # the application caps its answers (the rollout sends its requests again)
CHROMIUM = os.environ.get("DISTILLERY_TEST_CHROMIUM", "/usr/bin/chromium")
# a small server: 2 sequences running and 2 queued, so a burst of 26 overflows it
CONFIG = f"""
[providers.local]
kind = "local"
models = ["{STUDENT}"]
max_batch_size = 2
max_queue = 2
"""


@pytest.fixture
def services(home: Path) -> Iterator[Services]:
    (home / "distillery.toml").write_text(CONFIG, encoding="utf-8")
    svc = build_services(Settings(home=home, config=home / "distillery.toml"))
    yield svc
    svc.store.close()


def _capture_teacher(client: openai.OpenAI, services: Services, questions: list[Any]) -> None:
    """The application's captured traffic: each question answered (here, by the student itself)
    and stored as the teacher's answer, with the demo's metadata."""
    lines = []
    for q in questions:
        request = {
            "messages": messages_for(q),
            "response_format": response_format(),
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
        }
        answer = client.chat.completions.create(model=STUDENT, **request)
        response = answer.model_dump() | {"model": TEACHER}
        meta = CAPTURED | {"item": q.id, "label": q.category}
        line = {"model": TEACHER, **request, "response": response}
        lines.append(json.dumps(line | {"metadata": meta}, ensure_ascii=False))
    result = services.stored_completions.import_jsonl(lines, prices=services.prices)
    assert result.imported == len(questions), result.errors


def _runs(client: Any, n: int) -> tuple[str, str]:
    """The held-out comparison the gate reads: the stored answers and the student's, graded for
    valid JSON in the schema."""
    ev = client.evals.create(
        name="rollout gate",
        data_source_config={"type": "logs", "metadata": {"prompt": PROMPT}},
        testing_criteria=[
            {"type": "valid_json", "name": "valid_json", "input": "{{sample.output_text}}"}
        ],
    )
    source = {"type": "stored_completions", "metadata": CAPTURED, "limit": n}
    sampled = {
        "model": STUDENT,
        "input_messages": {"type": "item_reference", "item_reference": "item.input"},
        "sampling_params": {
            "temperature": 0,
            "response_format": response_format(),
            "max_completion_tokens": MAX_TOKENS,
        },
    }
    ids = []
    for data_source in ({}, sampled):
        run = client.evals.runs.create(
            ev.id, name="run", data_source={"type": "completions", "source": source, **data_source}
        )
        while run.status in ("queued", "in_progress"):
            run = client.evals.runs.retrieve(run.id, eval_id=ev.id)
        assert run.status == "completed", run
        ids.append(run.id)
    return ids[0], ids[1]


def test_the_rollout_moves_traffic_to_the_student_and_rolls_back_on_overload(
    services: Services,
) -> None:
    from distillery import client as distillery_client

    questions = load_inquiries("test")[:6]
    said: list[str] = []
    with LocalStack(services) as stack:
        client = distillery_client.wrap(
            openai.OpenAI(base_url=stack.url + "/v1", api_key="test", max_retries=0)
        )
        _capture_teacher(client, services, questions)
        teacher_run, student_run = _runs(client, len(questions))
        rollout = Rollout(
            services,
            fingerprint=FP,
            prompt=PROMPT,
            prompt_version=VERSION,
            teacher=TEACHER,
            recorded_teacher=True,
            questions=questions,
            # a tiny base student is no match for its teacher: the operator overrides the gate
            # (recorded as gate_bypassed), the rest is the demo's path
            options=RolloutOptions(force=True),
            say=said.append,
        )
        result = rollout.run(
            stack.url,
            student=STUDENT,
            teacher_run=teacher_run,
            student_run=student_run,
            captured=CAPTURED,
        )

        assert result.promoted
        assert result.gate["offline"]["items"] == 6 and result.gate["shadow"]["pairs"] == 2
        assert result.capacity == 4
        stages = [(s.stage, s.requests, s.errors) for s in result.sent]
        assert stages == [("shadow", 2, 0), ("canary 50%", 2, 0), ("full", 2, 0), ("burst", 28, 0)]
        # the application saw every answer, whoever served it
        assert sum(result.sent[1].served.values()) == 2
        # in full the student answers, or the teacher instead when its answer fails the schema
        full_served = result.sent[2].served
        assert set(full_served) <= {"student", "fallback"} and sum(full_served.values()) == 2
        burst = result.sent[3].served
        assert burst.get("fallback", 0) >= 20 and sum(burst.values()) == 28

        # the store's phases: shadow, canary, full, and shadow again by the automatic rollback
        phases = result.timeline["phases"]
        assert [p["mode"] for p in phases] == ["shadow", "canary", "full", "shadow"]
        assert phases[1]["percent"] == 50.0
        assert phases[3]["cause"] == "rolled_back" and phases[3]["actor"] == "system:rollback"
        assert phases[0]["requests"] == 2 and phases[0]["shadow_graded"] == 2
        assert sum(p["requests"] for p in phases) == sum(s.requests for s in result.sent)
        full = phases[2]
        assert full["served"].get("fallback", 0) >= 16 and full["online_pass_rate"] < 0.9
        assert result.stats["fallback_reasons"].get("student_error:rate_limit_exceeded", 0) >= 16
        assert result.final_mode == "shadow"
        kinds = [e["type"] for e in result.events]
        assert kinds[-1] == "rolled_back"
        assert ("gate_passed" in kinds) == result.gate["allowed"] != ("gate_bypassed" in kinds)
        assert [m["type"] for m in result.timeline["marks"]][-1] == "rolled_back"
        assert any("recorded teacher" in line for line in said)

        # one route for the prompt (a rerun of the demo replaces it)
        assert len([r for r in _routes(stack.url) if r["name"] == rollout.name]) == 1
        _route_page_in_chromium(stack.url, result.route_id)


def _routes(url: str) -> list[dict[str, Any]]:
    import httpx

    return list(httpx.get(url + "/v1/distillery/routes", params={"limit": 100}).json()["data"])


def _route_page_in_chromium(url: str, route_id: str) -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1366, "height": 1000})
        page.goto(f"{url}/routes/{route_id}")
        rows = page.locator("#phases tbody tr")
        assert rows.count() == 4
        assert rows.nth(1).inner_text().startswith("canary 50%")
        assert "rolled back" in rows.nth(3).inner_text()
        chart = page.locator("#timeline svg[role=img]")
        assert chart.count() == 1
        desc = chart.locator("desc").text_content() or ""
        assert "rolled back" in desc and "fallback" in desc
        browser.close()
