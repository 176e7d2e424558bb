"""``POST /v1/distillery/relabels`` against a live server and the fake teachers, on SQLite and
PostgreSQL: ten stored inquiries answered again by ``synth-strong``, the new answers stored
beside the old with their lineage, the disagreements in a review queue showing both answers;
the estimate, the call cap, a failing teacher and the requests refused before anything runs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from distillery.store.records import NewCompletion
from tests.support.config import write_config
from tests.support.fakes import teacher
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.fakes.teacher import RESPONSE_FORMAT
from tests.support.live import LiveServer
from tests.support.stored import completion, insert

PRICE = """
[prices."synth-strong"]
input = 1000000.0
output = 1000000.0
"""
# synth-teacher files the first three under billing (they mention an invoice), synth-strong
# under technical (they also mention a crash); both agree on the other seven
BOTH = [
    "The app crashes every time I open my invoice.",
    "Downloading the invoice makes the whole program crash.",
    "My invoice page shows a crash report instead of the total.",
]
AGREED = [
    "Why was I charged twice on this invoice?",
    "Can I get a copy of last year's invoice?",
    "The invoice total does not match my plan.",
    "The app shows an error message when I log in.",
    "I get an error message every time I upload a photo.",
    "請求書の宛名を会社名に変えたいです。",
    "ログインするとエラーが表示されます。",
]


def inquiries() -> list[NewCompletion]:
    """The ten inquiries as synth-teacher answered them in production (oldest first)."""
    records = []
    for q in BOTH + AGREED:
        c = completion(
            q,
            teacher.label_answer("synth-teacher", q),
            model="synth-teacher",
            metadata={"prompt": "router", "prompt_version": "v3"},
            system="Route the inquiry.",
        )
        request = {**c.request, "response_format": RESPONSE_FORMAT, "store": True}
        records.append(replace(c, request={**request, "metadata": {"prompt": "router"}}))
    return records


@pytest.fixture
def seeded(gateway: LiveServer) -> dict[str, str]:
    """The inquiries stored: id -> question."""
    records = inquiries()
    insert(gateway.services, *records)  # type: ignore[attr-defined]
    return {r.id: r.request["messages"][-1]["content"] for r in records}


@pytest.fixture
def http(gateway: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=gateway.url + "/v1/distillery", timeout=120)


def _relabel(http: httpx.Client, **body: Any) -> httpx.Response:
    payload = {"teacher": "synth-strong", "source": {"metadata": {"prompt": "router"}}, **body}
    return http.post("/relabels", json=payload)


def _category(text: str) -> str:
    return str(orjson.loads(text)["category"])


def test_a_stronger_teacher_relabels_and_the_disagreements_are_queued_for_review(
    seeded: dict[str, str], http: httpx.Client, client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    r = _relabel(http)
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["object"] == "distillery.relabel" and run["id"].startswith("relabel_")
    assert run["teacher"] == "synth-strong" and not run["dry_run"]
    assert (run["selected"], run["relabelled"], run["agreed"], run["disagreed"]) == (10, 10, 7, 3)
    assert run["failed"] == 0 and run["stopped"] is None
    assert run["compare"] == "label" and run["label_field"] == "category"
    assert run["spent"]["calls"] == 10 and run["estimate"]["calls"] == 10

    # the same request, asked of the new teacher: model replaced, store and metadata dropped
    asked = fake_openai.requests[before:]
    assert len(asked) == 10 and {b["model"] for b in asked} == {"synth-strong"}
    assert all(b["response_format"] == RESPONSE_FORMAT for b in asked)
    assert all("store" not in b and "metadata" not in b and "stream" not in b for b in asked)
    assert sorted(b["messages"][-1]["content"] for b in asked) == sorted(seeded.values())

    items = run["items"]
    assert len(items) == 10 and {i["completion_id"] for i in items} == set(seeded)
    disagreeing = {i["completion_id"]: i for i in items if i["agreed"] is False}
    assert {seeded[cid] for cid in disagreeing} == set(BOTH)
    for item in disagreeing.values():
        assert _category(item["original"]) == "billing"
        assert _category(item["relabelled"]) == "technical"
        assert item["compared"] == "label"
    for item in items:
        if item["agreed"]:
            assert _category(item["original"]) == _category(item["relabelled"])

    # the new answers are stored completions of the new teacher, with their lineage
    for item in items:
        stored = client.chat.completions.retrieve(item["relabel_id"])
        assert stored.model == "synth-strong"
        assert stored.metadata == {
            "origin": "relabel",
            "relabel_of": item["completion_id"],
            "relabel_id": run["id"],
            "relabel_of_prompt": "router",  # not "prompt": not one more captured exchange
            "prompt_version": "v3",
        }
        assert stored.choices[0].message.content == item["relabelled"]
    listed = client.chat.completions.list(metadata={"relabel_id": run["id"]}, limit=100)
    assert len(listed.data) == 10
    # the originals are unchanged
    original = client.chat.completions.retrieve(next(iter(disagreeing)))
    assert original.model == "synth-teacher" and original.metadata == {
        "prompt": "router",
        "prompt_version": "v3",
    }
    assert _category(original.choices[0].message.content or "") == "billing"

    # the queue holds the three originals that disagree, each showing both answers
    assert run["queue_name"] == "relabel synth-strong"
    queue = http.get(f"/annotation_queues/{run['queue_id']}").json()
    assert queue["priority"] == "oldest" and queue["counts"]["pending"] == 3
    assert queue["metadata"]["relabel_id"] == run["id"]
    pairs = queue["source"]["relabel"]["pairs"]
    assert pairs == {cid: i["relabel_id"] for cid, i in disagreeing.items()}
    page = http.get(f"/annotation_queues/{run['queue_id']}/items", params={"limit": 10}).json()
    queued = page["data"]
    assert [i["completion_id"] for i in queued] == [
        cid for cid in seeded if cid in disagreeing
    ]  # oldest first
    for q in queued:
        assert q["status"] == "pending"  # proposed, not accepted: nothing is used before review
        assert q["output"] == disagreeing[q["completion_id"]]["original"]
        assert q["corrected_output"] == disagreeing[q["completion_id"]]["relabelled"]
        assert q["model"] == "synth-teacher"

    # a second look at the same selection leaves the relabelled answers out, and now knows the
    # teacher's latency
    again = _relabel(http, dry_run=True).json()
    assert again["selected"] == 10
    assert again["estimate"]["seconds_per_call"] is not None


def test_the_dry_run_estimates_and_asks_nothing(
    seeded: dict[str, str], http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    r = _relabel(http, dry_run=True, max_calls=5)
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["dry_run"] and run["id"] is None and run["queue_id"] is None
    assert run["selected"] == 10 and run["relabelled"] == 0 and run["items"] == []
    est = run["estimate"]
    assert est["object"] == "distillery.relabel.estimate" and est["calls"] == 10
    # the originals' stored usage: 10 prompt and 5 completion tokens each
    assert (est["prompt_tokens"], est["completion_tokens"]) == (100, 50)
    assert est["usd"] is None  # synth-strong has no price
    assert est["seconds"] is None  # and was never seen answering
    assert est["caps"] == {"max_usd": None, "max_calls": 5} and est["within_caps"] is False
    assert len(fake_openai.requests) == before


def test_a_call_cap_stops_the_job_with_what_it_has(
    seeded: dict[str, str], http: httpx.Client, client: openai.OpenAI
) -> None:
    r = _relabel(http, max_calls=4)
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["stopped"] == "max_calls"
    assert run["selected"] == 10 and run["relabelled"] == 4 and run["spent"]["calls"] == 4
    assert run["agreed"] + run["disagreed"] == 4 and len(run["items"]) == 4
    listed = client.chat.completions.list(metadata={"relabel_id": run["id"]}, limit=100)
    assert len(listed.data) == 4


@pytest.fixture
def priced(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[httpx.Client]:
    """A live server where synth-strong costs a dollar a token, the ten inquiries stored."""
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    config = write_config(home, fake_openai, extra=PRICE)
    services = build_services(Settings(home=home, database_url=db_url, config=config))
    server = LiveServer(create_app(services)).start()
    insert(services, *inquiries())
    try:
        yield httpx.Client(base_url=server.url + "/v1/distillery", timeout=120)
    finally:
        server.stop()
        services.store.close()


def test_a_dollar_cap_stops_the_job_at_the_teachers_price(priced: httpx.Client) -> None:
    estimate = _relabel(priced, dry_run=True, max_usd=40).json()["estimate"]
    # 100 prompt and 50 completion tokens stored, at a dollar a token
    assert estimate["usd"] == 150.0 and estimate["within_caps"] is False
    r = _relabel(priced, max_usd=40, concurrency=1)
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["stopped"] == "max_usd"
    assert 0 < run["relabelled"] < 10 and run["spent"]["calls"] == run["relabelled"]
    assert run["spent"]["usd"] >= 40
    # every call but the last was allowed by the cap
    assert run["spent"]["usd"] - 40 < run["spent"]["usd"] / run["spent"]["calls"]


def test_a_failing_teacher_is_counted_not_a_crash(
    seeded: dict[str, str], http: httpx.Client, client: openai.OpenAI
) -> None:
    r = _relabel(http, teacher="fail-500", concurrency=2)
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["failed"] == 10 and run["relabelled"] == 0 and run["disagreed"] == 0
    assert run["stopped"] is None and run["queue_id"] is None
    assert all(i["relabel_id"] is None and i["agreed"] is None for i in run["items"])
    assert all("scripted failure" in i["error"] for i in run["items"])
    assert client.chat.completions.list(metadata={"relabel_id": run["id"]}).data == []


def test_comparing_as_text_or_json_and_by_ids(seeded: dict[str, str], http: httpx.Client) -> None:
    ids = list(seeded)[:4]  # three that disagree, one that agrees
    by_json = _relabel(http, source={"completion_ids": ids}, compare="json", queue_name="j")
    assert by_json.status_code == 200, by_json.text
    run = by_json.json()
    assert run["compare"] == "json" and run["label_field"] is None
    assert (run["selected"], run["agreed"], run["disagreed"]) == (4, 1, 3)
    assert {i["compared"] for i in run["items"]} == {"json"}
    assert run["queue_name"] == "j"
    by_text = _relabel(http, source={"completion_ids": ids[3:]}, compare="text").json()
    assert by_text["agreed"] == 1 and by_text["items"][0]["compared"] == "text"
    assert by_text["queue_id"] is None  # nothing to review


def test_bad_requests_are_refused_before_anything_runs(
    gateway: LiveServer, seeded: dict[str, str], http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    unknown = _relabel(http, teacher="no-such-model")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    extra = _relabel(http, colour="blue")
    assert extra.status_code == 400 and extra.json()["error"]["param"] == "colour"
    nested = _relabel(http, source={"metadata": {"prompt": "router"}, "colour": "blue"})
    assert nested.status_code == 400 and nested.json()["error"]["param"] == "source.colour"
    missing = http.post("/relabels", json={"teacher": "synth-strong"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "source"
    cap = _relabel(http, max_usd=1.0)
    assert cap.status_code == 400 and cap.json()["error"]["param"] == "max_usd"
    nothing = _relabel(http, source={"metadata": {"prompt": "nobody"}})
    assert nothing.status_code == 400 and nothing.json()["error"]["param"] == "source"
    gone = _relabel(http, source={"completion_ids": ["chatcmpl-nope"]})
    assert gone.status_code == 400
    assert gone.json()["error"]["param"] == "source.completion_ids"
    # no label field given, and no response format to take one from
    insert(gateway.services, completion("Hello?", "Hi!", metadata={"prompt": "chat"}))  # type: ignore[attr-defined]
    no_field = _relabel(http, compare="label", source={"metadata": {"prompt": "chat"}})
    assert no_field.status_code == 400 and no_field.json()["error"]["param"] == "label_field"
    assert len(fake_openai.requests) == before
