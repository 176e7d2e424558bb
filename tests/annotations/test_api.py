"""``/v1/distillery/annotation_queues`` over HTTP against a live server."""

from __future__ import annotations

import httpx
import pytest

from tests.support.live import LiveServer
from tests.support.stored import insert, routing_set


@pytest.fixture
def http(gateway: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=gateway.url + "/v1/distillery", timeout=60)


def test_review_flow(gateway: LiveServer, http: httpx.Client) -> None:
    ids = insert(gateway.services, *routing_set(3))  # type: ignore[attr-defined]
    r = http.post(
        "/annotation_queues",
        json={
            "name": "router review",
            "source": {"type": "completions", "metadata": {"prompt": "router"}},
            "priority": "oldest",
        },
    )
    assert r.status_code == 200, r.text
    queue = r.json()
    assert queue["object"] == "distillery.annotation_queue" and queue["counts"]["pending"] == 3
    assert http.get("/annotation_queues").json()["data"][0]["id"] == queue["id"]

    item = http.post(f"/annotation_queues/{queue['id']}/claim", json={"reviewer": "alice"}).json()
    assert item["completion_id"] == ids[0] and item["claimed_by"] == "alice"
    assert item["input"]["messages"][-1]["role"] == "user" and item["output"].startswith("{")
    other = http.post(f"/annotation_queues/{queue['id']}/claim", json={"reviewer": "bob"}).json()
    assert other["id"] != item["id"]

    saved = http.post(
        f"/annotation_queues/{queue['id']}/items/{item['id']}",
        json={
            "version": item["version"],
            "corrected_output": "fixed",
            "rating": 4,
            "tags": ["label"],
            "action": "accept",
        },
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["status"] == "accepted" and saved.json()["corrected_output"] == "fixed"
    assert saved.json()["output"] == item["output"]
    stale = http.post(
        f"/annotation_queues/{queue['id']}/items/{item['id']}",
        json={"version": item["version"], "rating": 1},
    )
    assert stale.status_code == 409 and stale.json()["error"]["param"] == "version"
    listed = http.get(
        f"/annotation_queues/{queue['id']}/items", params={"status": "accepted"}
    ).json()
    assert [i["id"] for i in listed["data"]] == [item["id"]]
    assert http.get(f"/annotation_queues/{queue['id']}/items/{item['id']}").json()["rating"] == 4

    http.post(f"/annotation_queues/{queue['id']}/claim", json={"reviewer": "carol"})
    empty = http.post(f"/annotation_queues/{queue['id']}/claim", json={"reviewer": "dave"})
    assert empty.status_code == 404 and empty.json()["error"]["code"] == "queue_empty"


def test_errors(gateway: LiveServer, http: httpx.Client) -> None:
    insert(gateway.services, *routing_set(1))  # type: ignore[attr-defined]
    r = http.post(
        "/annotation_queues", json={"name": "x", "source": {"type": "completions", "model": "none"}}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "source"
    r = http.post("/annotation_queues", json={"name": "x", "source": {"type": "s3"}})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("source")
    assert http.post("/annotation_queues/aq_nope/claim", json={"reviewer": "a"}).status_code == 404
    q = http.post(
        "/annotation_queues", json={"name": "x", "source": {"type": "completions"}}
    ).json()
    r = http.post(f"/annotation_queues/{q['id']}/claim", json={})
    assert r.status_code == 400 and r.json()["error"]["param"] == "reviewer"
    item = http.post(f"/annotation_queues/{q['id']}/claim", json={"reviewer": "a"}).json()
    r = http.post(
        f"/annotation_queues/{q['id']}/items/{item['id']}",
        json={"rating": 9, "version": item["version"]},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "rating"
