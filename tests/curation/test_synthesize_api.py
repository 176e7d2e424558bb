"""``POST /v1/distillery/datasets/{id}/synthesize`` against a live server and the fake teacher,
on SQLite and PostgreSQL: 20 seeds and a description give a balanced, deduplicated, validated
version with its curation report; the estimate, the caps and a teacher that writes no JSON."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.fakes.teacher import RESPONSE_FORMAT
from tests.support.ft import wait_for
from tests.support.live import LiveServer
from tests.support.stored import completion, insert

SEEDS = {
    ("billing", "en"): [
        "My invoice shows a charge I do not recognise.",
        "Why was I billed twice this month?",
        "Can I get a copy of last year's invoice?",
        "The invoice total does not match my plan.",
        "How do I change the card my invoice is charged to?",
    ],
    ("billing", "ja"): [
        "請求書の金額が契約と違います。",
        "今月の請求書が二通届きました。",
        "請求書の宛名を会社名に変えたいです。",
        "先月分の請求書を再発行してください。",
        "請求書の支払い期限を延ばせますか。",
    ],
    ("technical", "en"): [
        "The app shows an error message when I log in.",
        "I get an error message every time I upload a photo.",
        "Sync fails with an error message after the update.",
        "An error message appears when I open settings.",
        "The export button gives me an error message.",
    ],
    ("technical", "ja"): [
        "ログインするとエラーが表示されます。",
        "写真をアップロードするとエラーになります。",
        "更新後に同期でエラーが出ます。",
        "設定を開くとエラーが出て閉じます。",
        "書き出しボタンを押すとエラーになります。",
    ],
}
DESCRIPTION = "Route each customer inquiry to the billing team or to technical support."


def _seed(gateway: LiveServer) -> None:
    records = []
    for (label, _), questions in SEEDS.items():
        for q in questions:
            answer = orjson.dumps({"reason": "seed", "category": label}).decode()
            c = completion(q, answer, metadata={"prompt": "router"}, system="Route the inquiry.")
            records.append(replace(c, request={**c.request, "response_format": RESPONSE_FORMAT}))
    insert(gateway.services, *records)  # type: ignore[attr-defined]


@pytest.fixture
def http(gateway: LiveServer) -> httpx.Client:
    _seed(gateway)
    client = httpx.Client(base_url=gateway.url + "/v1/distillery", timeout=120)
    r = client.post(
        "/datasets",
        json={
            "name": "router",
            "source": {"metadata": {"prompt": "router"}},
            "split": {"train": 0.8, "validation": 0.1, "test": 0.1},
        },
    )
    assert r.status_code == 200, r.text
    return client


def _synthesize(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post(
        "/datasets/router/synthesize",
        json={"teacher": "synth-teacher", "description": DESCRIPTION, **body},
    )


def test_twenty_seeds_give_a_balanced_validated_version_with_its_report(
    http: httpx.Client, client: openai.OpenAI
) -> None:
    estimate = _synthesize(http, n=16, inputs_per_call=8, dry_run=True)
    assert estimate.status_code == 200, estimate.text
    est = estimate.json()
    assert est["object"] == "distillery.synthesis.estimate"
    assert est["cells"] == 4 and est["labels"] == ["billing", "technical"]
    assert est["languages"] == ["en", "ja"] and est["label_field"] == "category"
    assert est["calls"] > 16 and est["prompt_tokens"] > 0 and est["usd"] is None  # no price
    assert http.get("/datasets/router").json()["latest_version"] == 1  # nothing ran

    r = _synthesize(http, n=16, inputs_per_call=8, max_rounds=8)
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    assert version["version"] == 2
    report = version["stats"]["synthesis"]
    summary = {k: v for k, v in report.items() if k != "rejected_items"}
    assert report["complete"] and report["stopped"] is None, orjson.dumps(summary).decode()
    assert report["accepted"] == 16
    # balanced: every label x language cell got its quota
    assert sorted((c["label"], c["language"], c["accepted"]) for c in report["cells"]) == [
        ("billing", "en", 4),
        ("billing", "ja", 4),
        ("technical", "en", 4),
        ("technical", "ja", 4),
    ]
    # every mistake the fake teacher makes was caught, and kept with its reason
    reasons = report["reasons"]
    for reason in ("duplicate_of_seed", "language_mismatch", "label_not_allowed"):
        assert reasons.get(reason, 0) > 0, reasons
    assert reasons.get("duplicate", 0) + reasons.get("duplicate_of_seed", 0) >= 4
    assert sum(reasons.values()) == report["rejected"] == len(report["rejected_items"])
    refund = next(i for i in report["rejected_items"] if i["reason"] == "label_not_allowed")
    assert "refund" in refund["output"] and refund["label"] == "billing"
    near = [i for i in report["rejected_items"] if i.get("detail", "").startswith("near")]
    assert near, "the punctuation variants are near-duplicates"
    assert report["spent"]["calls"] > 16 and report["estimate"]["calls"] > 0

    # the synthetic rows are train rows, beside every seed row in its old split
    stats = version["stats"]
    v1 = http.get("/datasets/router/versions/1").json()["stats"]
    assert stats["origins"]["train"]["synthetic"] == 16
    for split in ("train", "validation", "test"):
        assert (
            stats["origins"].get(split, {}).get("captured", 0) == (v1["splits"][split]["examples"])
        )
    assert stats["splits"]["train"]["examples"] == v1["splits"]["train"]["examples"] + 16

    items = http.get("/datasets/router/versions/2/items", params={"limit": 100}).json()["data"]
    synthetic = [i for i in items if i["origin"] == "synthetic"]
    assert len(synthetic) == 16 and all(i["split"] == "train" for i in synthetic)
    example = synthetic[0]["example"]
    assert [m["role"] for m in example["messages"]] == ["system", "user", "assistant"]
    assert example["messages"][0]["content"] == "Route the inquiry."
    answer = orjson.loads(example["messages"][-1]["content"])
    assert answer["category"] in ("billing", "technical")

    # each synthetic row is a stored completion of the teacher, marked as such
    stored = client.chat.completions.retrieve(synthetic[0]["completion_id"])
    assert stored.model == "synth-teacher"
    assert stored.metadata["origin"] == "synthetic"
    assert stored.metadata["synthesis_id"] == report["id"]
    # asked as production asks: the seeds' response format, the seeds' system prompt
    listed = client.chat.completions.list(metadata={"synthesis_id": report["id"]}, limit=100)
    assert len(listed.data) == 16

    # the export marks them when asked for lineage, and stays OpenAI's format otherwise
    plain = http.get("/datasets/router/versions/2/content", params={"split": "train"})
    assert all("metadata" not in orjson.loads(x) for x in plain.content.splitlines())
    marked = http.get(
        "/datasets/router/versions/2/content", params={"split": "train", "lineage": "true"}
    )
    origins = [orjson.loads(x)["metadata"]["origin"] for x in marked.content.splitlines()]
    assert origins.count("synthetic") == 16 and origins.count("captured") > 0

    # and the version trains through the jobs API like any other (the fake provider's job)
    exported = http.post("/datasets/router/versions/2/export", json={"split": "train"})
    assert exported.status_code == 200, exported.text
    job = client.fine_tuning.jobs.create(model="gpt-4o", training_file=exported.json()["id"])
    assert wait_for(client, job.id, timeout=120).status == "succeeded"


def test_a_cap_stops_the_job_with_what_it_has(http: httpx.Client) -> None:
    r = _synthesize(http, n=40, inputs_per_call=8, max_calls=6, concurrency=1)
    assert r.status_code == 200, r.text
    report = r.json()["version"]["stats"]["synthesis"]
    assert report["stopped"] == "max_calls" and not report["complete"]
    assert report["spent"]["calls"] == 6
    assert 0 < report["accepted"] < 40


def test_a_teacher_that_writes_no_json_is_retried_once_then_kept_as_rejected(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    r = _synthesize(http, teacher="synth-garbage", n=4, max_rounds=1)
    assert r.status_code == 200, r.text
    report = r.json()["version"]["stats"]["synthesis"]
    assert report["accepted"] == 0 and report["stopped"] == "max_rounds"
    rejected = report["rejected_items"]
    assert rejected and {i["reason"] for i in rejected} == {"unparsable_inputs"}
    assert all("prose" in i["raw"] for i in rejected)
    # one batch per cell, each asked twice
    assert len(fake_openai.requests) - before == 2 * len(report["cells"])


def test_bad_requests_are_refused_before_anything_runs(
    http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    unknown = _synthesize(http, teacher="no-such-model")
    assert unknown.status_code == 404
    extra = _synthesize(http, colour="blue")
    assert extra.status_code == 400 and extra.json()["error"]["param"] == "colour"
    cap = _synthesize(http, max_usd=1.0)
    assert cap.status_code == 400 and cap.json()["error"]["param"] == "max_usd"
    grader = _synthesize(http, graders=[{"type": "no_such_grader", "name": "x"}])
    assert grader.status_code == 400 and grader.json()["error"]["param"].startswith("graders[0]")
    too_many = _synthesize(http, n=100_000)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"
    missing = http.post(
        "/datasets/nope/synthesize", json={"teacher": "synth-teacher", "description": "x"}
    )
    assert missing.status_code == 404
    assert len(fake_openai.requests) == before


def test_the_requests_graders_judge_every_answer(http: httpx.Client) -> None:
    english_only = {
        "type": "string_check",
        "name": "english only",
        "input": "{{item.language}}",
        "reference": "en",
        "operation": "eq",
    }
    planned_label = {
        "type": "string_check",
        "name": "the planned label",
        "input": "{{sample.output_json.category}}",
        "reference": "{{item.label}}",
        "operation": "eq",
    }
    r = _synthesize(
        http, n=8, inputs_per_call=8, max_rounds=2, graders=[english_only, planned_label]
    )
    assert r.status_code == 200, r.text
    report = r.json()["version"]["stats"]["synthesis"]
    assert report["reasons"]["grader:english only"] > 0
    rejected = [i for i in report["rejected_items"] if i["reason"] == "grader:english only"]
    assert all(i["language"] == "ja" for i in rejected)
    accepted = {(c["language"], c["accepted"]) for c in report["cells"]}
    assert accepted == {("en", 2), ("ja", 0)} and report["stopped"] == "max_rounds"
