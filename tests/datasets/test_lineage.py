"""Lineage through the API: an ft: model back to its job, training file, dataset version, the
teachers, prompts and prompt versions of its examples, the people's corrections and the terms
acknowledgement; deleting a stored completion names the dataset versions still holding it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.ft import wait_for
from tests.support.live import LiveServer
from tests.support.stored import completion, insert, routing_set

TERMS = '\n[providers.fake.terms]\n"gpt-4o" = "no_competing_training"\n'


@pytest.fixture
def gateway_with_terms(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    config = write_config(home, fake_openai, extra=TERMS)
    services = build_services(Settings(home=home, database_url=db_url, config=config))
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    yield server
    server.stop()
    services.store.close()


def _correct_first(services: Any) -> str:
    queue = services.annotations.create_queue(
        {
            "name": "review",
            "source": {"type": "completions", "metadata": {"prompt": "router"}},
            "priority": "oldest",
        }
    )
    item = services.annotations.claim(queue.id, "alice")
    services.annotations.submit(
        queue.id,
        item.id,
        {
            "version": item.version,
            "corrected_output": '{"category": "情報システム"}',
            "action": "accept",
        },
    )
    return str(item.completion_id)


def test_model_lineage_and_deletion(gateway_with_terms: LiveServer) -> None:
    gw = gateway_with_terms
    services = gw.services  # type: ignore[attr-defined]
    ids = insert(services, *routing_set(12))  # gpt-4o, prompt router, prompt_version v1
    faq = [
        completion(
            f"よくある質問 {i}: 名刺の発注は？",
            '{"category": "総務"}',
            model="echo-1",
            metadata={"prompt": "faq", "prompt_version": "v2"},
        )
        for i in range(3)
    ]
    insert(services, *faq)
    corrected_id = _correct_first(services)
    http = httpx.Client(base_url=gw.url + "/v1/distillery", timeout=60)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)

    made = http.post(
        "/datasets",
        json={"name": "router", "split": {"train": 1.0}, "acknowledge_terms": True},
    )
    assert made.status_code == 200, made.text
    ds = made.json()
    exported = http.post(f"/datasets/{ds['id']}/versions/1/export", json={"split": "train"})
    assert exported.status_code == 200, exported.text
    file_id = exported.json()["id"]
    job = client.fine_tuning.jobs.create(model="gpt-4o", training_file=file_id, suffix="router")
    done = wait_for(client, job.id, timeout=120)
    assert done.status == "succeeded" and done.fine_tuned_model is not None
    model = done.fine_tuned_model

    r = http.get(f"/models/{model}/lineage")
    assert r.status_code == 200, r.text
    lineage = r.json()
    assert lineage["object"] == "distillery.model.lineage" and lineage["model"] == model
    assert lineage["job"]["id"] == job.id and lineage["base_model"] == "gpt-4o"
    assert lineage["files"] == [
        {
            "id": file_id,
            "role": "training",
            "dataset_id": ds["id"],
            "dataset_version_id": ds["version"]["id"],
            "split": "train",
        }
    ]
    assert lineage["examples"] == 15 and lineage["corrected"] == 1
    assert lineage["teachers"] == {"echo-1": 3, "gpt-4o": 12}
    assert lineage["prompts"] == [
        {"prompt": "faq", "prompt_version": "v2", "examples": 3},
        {"prompt": "router", "prompt_version": "v1", "examples": 12},
    ]
    version = lineage["dataset_versions"][0]
    assert version["dataset_name"] == "router" and version["version"] == 1
    assert version["splits"] == ["train"] and version["acknowledge_terms"] is True
    assert {"prompt": "router", "prompt_version": "v1", "examples": 12, "corrected": 1} in version[
        "prompts"
    ]
    [fix] = version["corrections"]
    assert fix["completion_id"] == corrected_id and fix["by"] == "alice"
    assert fix["after"] == '{"category": "情報システム"}' and fix["before"] != fix["after"]
    assert lineage["terms"] == {
        "restricted": {"gpt-4o": {"terms": "no_competing_training", "count": 12}},
        "acknowledged": True,
    }
    # the dashboard's page of the model, linked from /models
    assert f"/models/{quote(model, safe='')}/lineage" in httpx.get(gw.url + "/models").text
    page = httpx.get(gw.url + f"/models/{quote(model, safe='')}/lineage")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert model in html and "router v1" in html and "alice" in html
    assert "情報システム" in html and "&#34;category&#34;" in html  # escaped, Japanese intact
    assert "no_competing_training (acknowledged)" in html
    assert httpx.get(gw.url + "/models/ft:nope:x:y/lineage").status_code == 404
    # the student's terms status, from its lineage
    tuned = client.models.retrieve(model)
    assert (tuned.model_extra or {})["terms"] == "no_competing_training (acknowledged)"

    # deleting a stored completion names the versions that still hold it
    deleted = client.chat.completions.delete(ids[3])
    assert deleted.deleted and deleted.model_extra is not None
    assert [(d["dataset_name"], d["version"]) for d in deleted.model_extra["datasets"]] == [
        ("router", 1)
    ]
    held = http.get(f"/completions/{ids[3]}/datasets").json()
    assert held["object"] == "list" and held["data"][0]["id"] == ds["version"]["id"]
    after = http.get(f"/models/{model}/lineage").json()["dataset_versions"][0]["completions"]
    assert after == {"referenced": 15, "still_stored": 14, "deleted": 1}
    # a completion no dataset holds: an empty list; deleting it says so
    loose = insert(services, completion("untracked", "x", model="echo-1"))[0]
    assert http.get(f"/completions/{loose}/datasets").json()["data"] == []
    assert client.chat.completions.delete(loose).model_extra["datasets"] == []  # type: ignore[index]


def test_unknown_ids_are_404(gateway_with_terms: LiveServer) -> None:
    http = httpx.Client(base_url=gateway_with_terms.url + "/v1/distillery", timeout=60)
    r = http.get("/models/ft:gpt-4o:org:none:abc123/lineage")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert http.get("/models/gpt-4o/lineage").status_code == 404  # a base model has no lineage
    r = http.get("/completions/chatcmpl-nope/datasets")
    assert r.status_code == 404 and r.json()["error"]["param"] == "completion_id"
