"""The teacher's terms: a flag per provider model in config, shown by /v1/models and
`distillery models list`; a dataset built from outputs whose terms restrict training is refused
(409 naming the models and the count) unless the request acknowledges it, which the version records."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer
from tests.support.stored import completion, insert

EXE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "distillery")
TERMS = '\n[providers.fake.terms]\n"gpt-4o" = "no_competing_training"\n"json-1" = "allowed"\n'


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


def test_models_show_terms(gateway_with_terms: LiveServer) -> None:
    client = openai.OpenAI(base_url=gateway_with_terms.url + "/v1", api_key="x", max_retries=0)
    gpt = client.models.retrieve("gpt-4o")
    assert gpt.model_extra is not None and gpt.model_extra["terms"] == "no_competing_training"
    assert (client.models.retrieve("json-1").model_extra or {})["terms"] == "allowed"
    assert "terms" not in (client.models.retrieve("echo-1").model_extra or {})
    listed = {m.id: (m.model_extra or {}).get("terms") for m in client.models.list()}
    assert listed["gpt-4o"] == "no_competing_training" and listed["echo-1"] is None


def _seed(gateway: LiveServer) -> None:
    records = [
        completion(
            f"質問 {i}: 経費精算の締め日は？",
            '{"category": "経理"}',
            model="gpt-4o",
            metadata={"prompt": "router"},
        )
        for i in range(5)
    ] + [
        completion(
            f"question {i}: VPN?",
            '{"category": "情報システム"}',
            model="echo-1",
            metadata={"prompt": "router"},
        )
        for i in range(3)
    ]
    insert(gateway.services, *records)  # type: ignore[attr-defined]


def test_dataset_refused_without_acknowledgement(gateway_with_terms: LiveServer) -> None:
    _seed(gateway_with_terms)
    http = httpx.Client(base_url=gateway_with_terms.url + "/v1/distillery", timeout=60)
    spec = {"name": "router", "source": {"metadata": {"prompt": "router"}}}
    refused = http.post("/datasets", json=spec)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "teacher_terms" and error["param"] == "acknowledge_terms"
    assert (
        "5 of the 8" in error["message"] and "gpt-4o (no_competing_training, 5)" in error["message"]
    )
    assert http.get("/datasets").json()["data"] == []  # nothing stored

    made = http.post("/datasets", json={**spec, "acknowledge_terms": True})
    assert made.status_code == 200, made.text
    version = made.json()["version"]
    assert version["spec"]["acknowledge_terms"] is True
    assert version["stats"]["terms"] == {
        "models": {
            "echo-1": {"terms": None, "count": 3},
            "gpt-4o": {"terms": "no_competing_training", "count": 5},
        },
        "restricted": {"gpt-4o": {"terms": "no_competing_training", "count": 5}},
        "acknowledged": True,
    }
    # outputs of unrestricted models only: no acknowledgement needed, none recorded
    free = http.post("/datasets", json={"name": "echo", "source": {"model": "echo-1"}}).json()[
        "version"
    ]
    assert free["stats"]["terms"]["restricted"] == {}
    assert free["stats"]["terms"]["acknowledged"] is False


def test_cli_models_list_and_dataset_terms(home: Path, fake_openai: FakeOpenAI) -> None:
    write_config(home, fake_openai, extra=TERMS)
    from tests.support.stored import open_services

    with open_services(home, f"sqlite:///{home / 'distillery.db'}") as svc:
        insert(svc, completion("経費精算は？", '{"category": "経理"}', model="gpt-4o"))
    env = {**os.environ, "DISTILLERY_HOME": str(home), "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)

    listed = run("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    terms = {m["id"]: m["terms"] for m in json.loads(listed.stdout)}
    assert terms["gpt-4o"] == "no_competing_training" and terms["echo-1"] is None
    refused = run("datasets", "create", "router", "--model", "gpt-4o", "--json")
    assert refused.returncode != 0 and "acknowledge_terms" in " ".join(refused.stderr.split())
    made = run("datasets", "create", "router", "--model", "gpt-4o", "--acknowledge-terms", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["stats"]["terms"]["acknowledged"] is True
