"""The OpenAPI document against the live server, with schemathesis.

A live distillery on loopback (SQLite, ``[server] auth`` on, the bootstrap admin key, the fake
OpenAI upstream) serves its ``/openapi.json``; schemathesis generates a few deterministic requests
per operation from it, valid ones and invalid ones, sends them with the admin key and checks each
answer: never a 5xx (``not_a_server_error``), only statuses the document lists for the operation
(``status_code_conformance``), bodies that match the documented schema for that status
(``response_schema_conformance``) and the documented media type (``content_type_conformance``).

Every operation is included. None can start real work: generated ids name nothing stored, so a
fine-tuning job, an eval run, a model export or a judge calibration is refused (404) before it
starts, and the gateway routes reach only the fake upstream. A second test checks the document
itself: request bodies on the POST routes, the bearer scheme, the ``Error`` schema, no 422.
"""

from __future__ import annotations

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
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import write_config
from fakes.openai_server import FakeOpenAI
from live import LiveServer

ADMIN_KEY = "sk-openapi-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
# per operation and generation mode (about 600 requests in all); more for a deeper local run
MAX_EXAMPLES = int(os.environ.get("DISTILLERY_SCHEMATHESIS_EXAMPLES", "4"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
REQUESTS: list[str] = []  # "METHOD /path status", one per request schemathesis made


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
    print(f"\nschemathesis: {len(REQUESTS)} requests, by status {dict(sorted(statuses.items()))}")


def _run(operation: Any, mode: GenerationMode, base_url: str) -> None:
    """``MAX_EXAMPLES`` deterministic requests for one operation, each answer checked."""

    @given(case=operation.as_strategy(generation_mode=mode))
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
        response = case.call_and_validate(base_url=base_url, headers=AUTH, checks=CHECKS)
        REQUESTS.append(f"{case.method} {case.path} {response.status_code}")

    run()


def test_every_operation_conforms(openapi_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{openapi_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 70
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _run(operation, mode, openapi_server.url)
            except (Exception, BaseExceptionGroup) as exc:  # all operations tried, all reported
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
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
    posts = {path: item["post"] for path, item in spec["paths"].items() if "post" in item}
    assert len(posts) >= 25
    bodiless = {path for path, op in posts.items() if "requestBody" not in op}
    assert bodiless == {  # the cancels read no body
        "/v1/fine_tuning/jobs/{job_id}/cancel",
        "/v1/evals/{eval_id}/runs/{run_id}",
        "/v1/evals/{eval_id}/runs/{run_id}/cancel",
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
