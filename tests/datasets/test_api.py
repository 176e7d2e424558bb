"""``/v1/distillery/datasets`` over HTTP against a live server; exports read with the openai SDK."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest
from openai.types import FileObject

from tests.support.live import LiveServer
from tests.support.stored import insert, routing_set


@pytest.fixture
def http(gateway: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=gateway.url + "/v1/distillery", timeout=60)


def test_create_show_items_export(
    gateway: LiveServer, http: httpx.Client, client: openai.OpenAI
) -> None:
    insert(gateway.services, *routing_set(30))  # type: ignore[attr-defined]
    r = http.post(
        "/datasets",
        json={
            "name": "router",
            "description": "inquiry routing",
            "source": {"metadata": {"prompt": "router"}},
            "split": {"train": 0.8, "validation": 0.2},
            "training_model": "gpt-4o-mini",
        },
    )
    assert r.status_code == 200, r.text
    ds = r.json()
    assert ds["object"] == "distillery.dataset" and ds["latest_version"] == 1
    version = ds["version"]
    assert version["stats"]["examples"] == 30
    assert version["stats"]["training_cost"]["usd"] > 0
    assert version["spec"]["split"] == {"train": 0.8, "validation": 0.2, "test": 0.0}

    listed = http.get("/datasets").json()
    assert listed["object"] == "list" and listed["first_id"] == ds["id"] and not listed["has_more"]
    assert http.get(f"/datasets/{ds['id']}").json()["version"]["id"] == version["id"]
    assert http.get("/datasets/router/versions/latest").json()["version"] == 1

    items = http.get(
        f"/datasets/{ds['id']}/versions/1/items", params={"split": "validation", "limit": 100}
    ).json()
    n_val = version["stats"]["splits"]["validation"]["examples"]
    assert len(items["data"]) == n_val and all(i["split"] == "validation" for i in items["data"])
    page = http.get(f"/datasets/{ds['id']}/versions/1/items", params={"limit": 5}).json()
    nxt = http.get(
        f"/datasets/{ds['id']}/versions/1/items", params={"limit": 5, "after": page["last_id"]}
    ).json()
    assert page["has_more"] and nxt["data"][0]["id"] != page["data"][-1]["id"]

    content = http.get(f"/datasets/{ds['id']}/versions/1/content", params={"split": "train"})
    lines = content.content.splitlines()
    assert len(lines) == version["stats"]["splits"]["train"]["examples"]
    assert orjson.loads(lines[0])["messages"][-1]["role"] == "assistant"

    exported = http.post(f"/datasets/{ds['id']}/versions/1/export", json={"split": "train"})
    assert exported.status_code == 200, exported.text
    file = FileObject.model_validate(exported.json())
    assert file.purpose == "fine-tune"
    assert client.files.retrieve(file.id).id == file.id
    assert client.files.content(file.id).content.splitlines() == lines

    v2 = http.post(
        f"/datasets/{ds['id']}/versions", json={"source": {"metadata": {"prompt": "router"}}}
    )
    assert v2.status_code == 200 and v2.json()["version"] == 2
    assert [v["version"] for v in http.get("/datasets/router/versions").json()["data"]] == [1, 2]


def test_import_from_file_id(
    gateway: LiveServer, http: httpx.Client, client: openai.OpenAI
) -> None:
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(12)
    ]
    f = client.files.create(
        file=("d.jsonl", b"".join(orjson.dumps(x) + b"\n" for x in lines)), purpose="fine-tune"
    )
    r = http.post(
        "/datasets/import", json={"name": "imported", "file_id": f.id, "split": {"train": 1}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"]["stats"]["splits"]["train"]["examples"] == 12
    # export -> import -> export round-trips byte for byte
    uploaded = client.files.content(f.id).read()
    exported = http.get("/datasets/imported/versions/latest/content", params={"split": "train"})
    assert exported.status_code == 200, exported.text
    assert exported.content == uploaded
    again = client.files.create(file=("again.jsonl", exported.content), purpose="fine-tune")
    r2 = http.post(
        "/datasets/import",
        json={"name": "imported-again", "file_id": again.id, "split": {"train": 1}},
    )
    assert r2.status_code == 200, r2.text
    assert (
        http.get(
            "/datasets/imported-again/versions/latest/content", params={"split": "train"}
        ).content
        == uploaded
    )
    r = http.post("/datasets/import", json={"name": "imported", "file_id": "file-nope"})
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"name": "x", "source": {"metadata": {"prompt": "nothing"}}}, 400, "source"),
        (
            {
                "name": "x",
                "source": {"metadata": {"prompt": "router"}},
                "split": {"train": 0.5, "test": 0.4},
            },
            400,
            "split",
        ),
        (
            {"name": "x", "source": {"metadata": {"prompt": "router"}}, "dedupe": "maybe"},
            400,
            "dedupe",
        ),
        ({"name": "x", "source": {"modle": "gpt-4o"}}, 400, "source.modle"),
        ({"source": {}}, 400, "name"),
        (
            {"name": "x", "source": {"metadata": {"prompt": "router"}}, "strict": True},
            409,
            "prompt_version",
        ),
    ],
)
def test_errors_are_openai_shaped_and_store_nothing(
    gateway: LiveServer, http: httpx.Client, body: dict[str, object], status: int, param: str
) -> None:
    insert(gateway.services, *routing_set(4), *routing_set(4, prompt_version="v2", prefix="b"))  # type: ignore[attr-defined]
    r = http.post("/datasets", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert http.get("/datasets").json()["data"] == []


def test_not_found_and_bad_version(http: httpx.Client) -> None:
    assert http.get("/datasets/ds_nope").status_code == 404
    assert http.get("/datasets/ds_nope/versions/abc").status_code in (400, 404)
    r = http.post("/datasets", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
