"""Judge calibration over HTTP: a label_model judge (the fake's keyword judge) against people's
ratings from an annotation queue: agreement, Cohen's kappa, precision/recall, bootstrap
intervals; too few labels, a non-judge grader and an unknown queue are clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.evals.runs_support import add_fake_models
from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer
from tests.support.stored import completion, insert

JUDGE = {
    "type": "label_model",
    "name": "keyword judge",
    "model": "judge-keyword",
    "input": [{"role": "user", "content": "この回答は正しいですか？ {{sample.output_text}}"}],
    "labels": ["pass", "fail"],
    "passing_labels": ["pass"],
}


def _rated_queue(gw: LiveServer, fake: FakeOpenAI) -> str:
    """24 outputs: 12 the judge passes ("OK"), 12 it fails; people disagree with it on 4."""
    services: Any = gw.services  # type: ignore[attr-defined]
    add_fake_models(services, fake, ["judge-keyword", "judge-pass", "judge-fail"])
    ratings: dict[str, int] = {}
    records = []
    for i in range(24):
        judged_ok = i < 12
        answer = f'{{"category": "労務", "note": "{"OK" if judged_ok else "NG"} {i}"}}'
        rec = completion(f"残業申請 {i} はどこで？", answer, metadata={"prompt": "calib"})
        records.append(rec)
        human_ok = judged_ok if i % 6 else not judged_ok  # items 0, 6, 12, 18 disagree
        ratings[rec.id] = 5 if human_ok else 1
    insert(services, *records)
    http = httpx.Client(base_url=gw.url + "/v1/distillery", timeout=60)
    queue = http.post(
        "/annotation_queues",
        json={"name": "calib", "source": {"type": "completions", "metadata": {"prompt": "calib"}}},
    ).json()
    for _ in range(24):
        item = http.post(
            f"/annotation_queues/{queue['id']}/claim", json={"reviewer": "hana"}
        ).json()
        saved = http.post(
            f"/annotation_queues/{queue['id']}/items/{item['id']}",
            json={
                "version": item["version"],
                "rating": ratings[item["completion_id"]],
                "action": "accept",
            },
        )
        assert saved.status_code == 200, saved.text
    return str(queue["id"])


def test_calibration_against_people(gateway: LiveServer, fake_openai: FakeOpenAI) -> None:
    queue_id = _rated_queue(gateway, fake_openai)
    http = httpx.Client(base_url=gateway.url + "/v1/distillery", timeout=120)
    r = http.post("/judge_calibrations", json={"grader": JUDGE, "queue_id": queue_id})
    assert r.status_code == 200, r.text
    cal = r.json()
    assert cal["object"] == "distillery.judge_calibration"
    assert cal["labels"] == 24 and cal["graded"] == 24 and cal["errors"] == 0
    assert cal["confusion"] == {
        "judge_pass_human_pass": 10,
        "judge_pass_human_fail": 2,
        "judge_fail_human_pass": 2,
        "judge_fail_human_fail": 10,
    }
    assert cal["agreement"] == pytest.approx(20 / 24, abs=1e-6)
    assert cal["kappa"] == pytest.approx(2 / 3, abs=1e-6)  # p_o 0.833, p_e 0.5
    assert cal["pass"] == {
        "precision": pytest.approx(10 / 12, abs=1e-6),
        "recall": pytest.approx(10 / 12, abs=1e-6),
    }
    low, high = cal["agreement_interval"]
    assert low < cal["agreement"] < high <= 1.0
    k_low, k_high = cal["kappa_interval"]
    assert k_low < cal["kappa"] < k_high
    assert {i["completion_id"] for i in cal["items"]} and len(cal["items"]) == 24
    assert cal["floor"] is None
    # the dashboard shows the judge's confusion matrix against the people
    page = httpx.get(gateway.url + "/judges", timeout=30)
    assert page.status_code == 200 and cal["id"] in page.text
    cells = page.text.split('<td class="num">')[1:5]
    assert [c.split("<")[0] for c in cells] == ["10", "2", "2", "10"]
    # a floor on the lower end of the intervals: met for agreement 0.5, not for kappa 0.9
    gated = http.post(
        "/judge_calibrations",
        json={"grader": JUDGE, "queue_id": queue_id, "min_kappa": 0.9, "min_agreement": 0.5},
    ).json()["floor"]
    assert gated["passed"] is False and len(gated["reasons"]) == 1
    assert gated["reasons"][0].startswith("kappa: lower end")
    ok = http.post(
        "/judge_calibrations", json={"grader": JUDGE, "queue_id": queue_id, "min_agreement": 0.5}
    ).json()["floor"]
    assert ok == {"min_kappa": None, "min_agreement": 0.5, "passed": True, "reasons": []}


def test_calibration_errors(gateway: LiveServer, fake_openai: FakeOpenAI) -> None:
    queue_id = _rated_queue(gateway, fake_openai)
    http = httpx.Client(base_url=gateway.url + "/v1/distillery", timeout=120)
    few = http.post(
        "/judge_calibrations", json={"grader": JUDGE, "queue_id": queue_id, "min_labels": 30}
    )
    assert few.status_code == 400
    error = few.json()["error"]
    assert error["code"] == "too_few_labels" and error["param"] == "queue_id"
    assert "at least 30" in error["message"] and "rate 6 more" in error["message"]
    check = {"type": "string_check", "name": "s", "input": "x", "reference": "x", "operation": "eq"}
    wrong = http.post("/judge_calibrations", json={"grader": check, "queue_id": queue_id})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "grader.type"
    unknown = http.post("/judge_calibrations", json={"grader": JUDGE, "queue_id": "aq_nope"})
    assert unknown.status_code == 404


@pytest.fixture
def floored(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    """A gateway with ``[evals] judge_min_kappa = 0.3``."""
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    config = write_config(home, fake_openai, extra="\n[evals]\njudge_min_kappa = 0.3\n")
    services = build_services(Settings(home=home, database_url=db_url, config=config))
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    yield server
    server.stop()
    services.store.close()


def _route(http: httpx.Client, prompt: str, judge: dict[str, Any]) -> httpx.Response:
    return http.post(
        "/routes",
        json={
            "name": prompt,
            "match": {"model": "gpt-4o", "metadata": {"prompt": prompt}},
            "student": "echo-1",
            "mode": "off",
            "graders": [{**judge, "blocking": True}],
        },
    )


def test_a_judge_below_the_floor_cannot_gate(floored: LiveServer, fake_openai: FakeOpenAI) -> None:
    queue_id = _rated_queue(floored, fake_openai)
    http = httpx.Client(base_url=floored.url + "/v1/distillery", timeout=120)
    refused = _route(http, "keyword", JUDGE)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "judge_not_calibrated" and error["param"] == "graders[0]"
    assert "no calibration" in error["message"]

    cal = http.post("/judge_calibrations", json={"grader": JUDGE, "queue_id": queue_id}).json()
    assert cal["id"].startswith("jcal_") and cal["kappa_interval"][0] >= 0.3
    assert _route(http, "keyword", {**JUDGE, "name": "renamed"}).status_code == 200

    constant = {**JUDGE, "model": "judge-pass"}  # passes everything: kappa 0
    http.post("/judge_calibrations", json={"grader": constant, "queue_id": queue_id})
    below = _route(http, "constant", constant)
    assert below.status_code == 409
    message = below.json()["error"]["message"]
    assert "below the calibration floor" in message and "kappa 0.0" in message
    assert "24 labels" in message
    # a non-blocking judge only observes: no calibration needed
    observing = http.post(
        "/routes",
        json={
            "name": "observing",
            "match": {"model": "gpt-4o", "metadata": {"prompt": "observing"}},
            "student": "echo-1",
            "mode": "off",
            "graders": [{**JUDGE, "model": "judge-fail"}],
        },
    )
    assert observing.status_code == 200, observing.text
