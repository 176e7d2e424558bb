"""The OpenAPI document against the live server, with schemathesis.

A live distillery on loopback (SQLite, ``[server] auth`` on, the bootstrap admin key, the fake
OpenAI upstream) serves its ``/openapi.json``; schemathesis generates a few deterministic requests
per operation from it, valid ones and invalid ones, sends them with the admin key and checks each
answer: never a 5xx (``not_a_server_error``), only statuses the document lists for the operation
(``status_code_conformance``), bodies that match the documented schema for that status
(``response_schema_conformance``) and the documented media type (``content_type_conformance``).

Every operation is included, first with generated path ids (which name nothing), then with path
ids of real objects made beforehand (a stored completion, a fine-tuning file, an eval and a run,
a dataset, an annotation queue and its item, a route) so that found objects' answers are checked
too. None can start real work: the bodies' generated ids name no stored file, run or queue, so a
fine-tuning job, an eval run on a model, a model export or a judge calibration is refused before it
starts, and the gateway routes reach only the fake upstream. ``DISTILLERY_SCHEMATHESIS_EXAMPLES``
runs more examples (25: ~4,800 requests in ~100 s). The other tests check the document itself
(request bodies on the POST routes, the bearer scheme, the ``Error`` schema, no 422) and what
schemathesis found.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,  # a keyed operation without a key, or with a wrong one: a 401
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from distillery.api.openapi import OPERATIONS
from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

ADMIN_KEY = "sk-openapi-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
# per operation and mode (about 1,500 cases in all, ~40 s); more for a deeper local run
MAX_EXAMPLES = int(os.environ.get("DISTILLERY_SCHEMATHESIS_EXAMPLES", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    ignored_auth,  # a keyed operation without a key, or with a wrong one: a 401
]
REQUESTS: list[str] = []  # "METHOD /path status", one per generated case
SESSION = requests.Session()  # every request schemathesis makes, the checks' own ones too
SENT: list[int] = []
SESSION.hooks["response"].append(lambda response, *args, **kwargs: SENT.append(1))


@pytest.fixture(scope="module")
def openapi_server(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI
) -> Iterator[LiveServer]:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    mp.setenv("FAKE_AZURE_KEY", "azure-secret-value-123456")
    home: Path = tmp_path_factory.mktemp("openapi-home")
    config = write_config(home, fake_openai, "[server]\nauth = true\n")
    settings_ = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'distillery.db'}",
        config=config,
        api_key=ADMIN_KEY,
    )
    services = build_services(settings_)
    server = LiveServer(create_app(services)).start()
    yield server
    server.stop()
    services.store.close()
    mp.undo()
    statuses = Counter(entry.rsplit(" ", 1)[1] for entry in REQUESTS)
    print(
        f"\nschemathesis: {len(REQUESTS)} generated cases (by status "
        f"{dict(sorted(statuses.items()))}), {len(SENT)} requests with the checks' own"
    )


def _seed(url: str) -> dict[str, str]:
    """Real objects for the path parameters (so that the answers of found objects are checked
    too): a stored completion, a fine-tuning file, an eval with a completed run, a dataset, an
    annotation queue with its item and a route."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = requests.post(f"{url}/v1{path}", json=body, headers=AUTH, timeout=60)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    chat = {"model": "echo-1", "store": True, "metadata": {"prompt": "openapi"}}
    completion = post("/chat/completions", chat | {"messages": [{"role": "user", "content": "hi"}]})
    line = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    upload = requests.post(
        f"{url}/v1/files",
        files={"file": ("train.jsonl", (json.dumps(line) + "\n").encode() * 10)},
        data={"purpose": "fine-tune"},
        headers=AUTH,
        timeout=60,
    )
    assert upload.status_code == 200, upload.text
    criterion = {
        "type": "string_check",
        "name": "exact",
        "input": "{{sample.output_text}}",
        "reference": "{{item.a}}",
        "operation": "eq",
    }
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    config = {"type": "custom", "item_schema": schema, "include_sample_schema": True}
    evaluation = post("/evals", {"data_source_config": config, "testing_criteria": [criterion]})
    rows = [{"item": {"a": "x"}, "sample": {"output_text": "x"}}]
    source = {"type": "jsonl", "source": {"type": "file_content", "content": rows}}
    run = post(f"/evals/{evaluation['id']}/runs", {"data_source": source})
    dataset = post("/distillery/datasets", {"name": "openapi", "split": {"train": 1.0}})
    source = {"type": "completions", "metadata": {"prompt": "openapi"}}
    queue = post("/distillery/annotation_queues", {"name": "openapi", "source": source})
    items = requests.get(
        f"{url}/v1/distillery/annotation_queues/{queue['id']}/items", headers=AUTH, timeout=60
    ).json()
    match = {"model": "echo-1", "metadata": {"prompt": "openapi"}}
    route = post("/distillery/routes", {"name": "openapi", "match": match, "student": "json-1"})
    return {
        "completion_id": completion["id"],
        "file_id": upload.json()["id"],
        "eval_id": evaluation["id"],
        "run_id": run["id"],
        "dataset_id": dataset["id"],
        "version": "1",
        "queue_id": queue["id"],
        "item_id": items["data"][0]["id"],
        "route_id": route["id"],
        "model_id": "echo-1",
    }


def _run(
    operation: Any, mode: GenerationMode, base_url: str, path: dict[str, str] | None = None
) -> None:
    """``MAX_EXAMPLES`` deterministic requests for one operation, each answer checked (with
    ``path``: the path parameters fixed to these values)."""

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base_url, session=SESSION, headers=AUTH, checks=CHECKS
        )
        REQUESTS.append(f"{case.method} {case.path} {response.status_code}")

    run()


def test_every_operation_conforms(openapi_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{openapi_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 70
    seeded = _seed(openapi_server.url)
    failures: list[str] = []
    # generated path ids first (they name nothing), then the seeded objects (read, changed and
    # deleted as the operations come: a later one may find its object gone, a documented 404)
    runs: list[tuple[Any, GenerationMode, dict[str, str] | None]] = [
        (operation, mode, None)
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        if names and names <= set(seeded):
            runs.append((operation, GenerationMode.POSITIVE, {n: seeded[n] for n in names}))
    for operation, mode, path in runs:
        try:
            _run(operation, mode, openapi_server.url, path)
        except (Exception, BaseExceptionGroup) as exc:  # all operations tried, all reported
            label = f"{operation.label} [{mode.value}{', seeded' if path else ''}]"
            failures.append(f"{label}: {exc}")
    assert not failures, f"{len(failures)} failing operations:\n" + "\n\n".join(failures)


def test_document_describes_bodies_errors_and_security(openapi_server: LiveServer) -> None:
    spec = requests.get(f"{openapi_server.url}/openapi.json", timeout=30).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert set(spec["components"]["schemas"]["Error"]["required"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert "422" not in str(spec["paths"]) and "HTTPValidationError" not in str(spec)
    # every operation described in api/openapi.py exists (none left behind by a renamed route)
    operations = {
        f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item
    }
    assert set(OPERATIONS) <= operations, sorted(set(OPERATIONS) - operations)
    posts = {path: item["post"] for path, item in spec["paths"].items() if "post" in item}
    assert len(posts) >= 25
    bodiless = {path for path, op in posts.items() if "requestBody" not in op}
    assert bodiless == {  # the cancels read no body
        "/v1/fine_tuning/jobs/{job_id}/cancel",
        "/v1/evals/{eval_id}/runs/{run_id}",
        "/v1/evals/{eval_id}/runs/{run_id}/cancel",
        "/v1/distillery/distillations/{distillation_id}/cancel",
    }
    for path, op in posts.items():
        if path not in bodiless:
            assert {"200", "400", "401", "413"} <= set(op["responses"]), path
        assert op["security"] == [{"bearerAuth": []}], path
    upload = posts["/v1/files"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload == {"$ref": "#/components/schemas/FileCreateParams"}
    chat = posts["/v1/chat/completions"]["requestBody"]
    assert chat["required"] is True
    created = spec["components"]["schemas"]["ChatCompletionCreateParams"]
    assert {"model", "messages"} <= set(created["required"])
    listed = spec["paths"]["/v1/files"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"]["properties"]["data"]["items"] == {
        "$ref": "#/components/schemas/FileObject"
    }
    assert "404" in spec["paths"]["/v1/files/{file_id}"]["get"]["responses"]
    assert "409" in spec["paths"]["/v1/distillery/routes/{route_id}/promote"]["post"]["responses"]
    # a documented error is what the server answers
    answer = requests.get(f"{openapi_server.url}/v1/files/file-nope", headers=AUTH, timeout=30)
    assert answer.status_code == 404
    assert set(answer.json()["error"]) >= {"message", "type", "param", "code"}
    unauthenticated = requests.get(f"{openapi_server.url}/v1/files", timeout=30)
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/distillery/costs?since=115068156323740516352", None),
        ("GET", "/v1/distillery/eval_comparisons?run_ids=a&seed=-1", None),
        (
            "POST",
            "/v1/distillery/annotation_queues",
            {"name": "q", "source": {"type": "completions", "created_after": 2**64}},
        ),
        ("POST", "/v1/distillery/datasets", {"name": "d", "source": {"created_before": 2**64}}),
    ],
)
def test_integers_beyond_the_store_are_400s(
    openapi_server: LiveServer, method: str, path: str, body: Any
) -> None:
    """Found by schemathesis: a timestamp past 64 bits reached SQLite (OverflowError, a 500)."""
    answer = requests.request(
        method, f"{openapi_server.url}{path}", json=body, headers=AUTH, timeout=30
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
