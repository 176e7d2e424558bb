"""The Evals API through the official openai SDK against a live distillery (SQLite + PostgreSQL).

Evals, runs over jsonl rows, over stored completions captured through the gateway, with
generation by a model, errors counted, cancel/delete, and resume after a server restart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import EvalCreateResponse, EvalListResponse, EvalRetrieveResponse
from openai.types.evals import RunCreateResponse, RunRetrieveResponse
from openai.types.evals.runs import OutputItemListResponse, OutputItemRetrieveResponse

from tests.support.fakes.openai_server import FakeOpenAI

from .runs_support import (
    add_fake_models,
    all_output_items,
    extra_provider_toml,
    raw,
    wait_run,
)

QA_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}
EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
FUZZY = {
    "type": "text_similarity",
    "name": "fuzzy",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "evaluation_metric": "fuzzy_match",
    "pass_threshold": 0.8,
}
QA = [
    ("What is 2+2?", "4"),
    ("Capital of France?", "Paris"),
    ("有給休暇の申請方法は？", "勤怠システムから申請します"),
    ("Color of the sky?", "blue"),
]


def _qa_eval(client: openai.OpenAI, criteria: list[dict[str, Any]] | None = None) -> Any:
    return client.evals.create(
        name="qa",
        data_source_config={
            "type": "custom",
            "item_schema": QA_SCHEMA,
            "include_sample_schema": True,
        },
        testing_criteria=criteria or [EXACT, FUZZY],  # type: ignore[list-item]
        metadata={"team": "support"},
    )


def test_eval_crud_and_shapes(client: openai.OpenAI, gateway: Any) -> None:
    ev = _qa_eval(client)
    body = raw(gateway.url, f"/v1/evals/{ev.id}")
    EvalRetrieveResponse.model_validate(body)
    assert EvalCreateResponse.model_validate(body).data_source_config.type == "custom"
    schema = body["data_source_config"]["schema"]
    assert schema["properties"]["item"] == QA_SCHEMA and "sample" in schema["properties"]
    assert [c["name"] for c in body["testing_criteria"]] == ["exact", "fuzzy"]
    assert ev.metadata == {"team": "support"} and ev.object == "eval"

    logs = client.evals.create(
        name="router logs",
        data_source_config={"type": "logs", "metadata": {"prompt": "router"}},
        testing_criteria=[{"type": "valid_json", "name": "json"}],  # type: ignore[list-item]
    )
    assert logs.data_source_config.type == "logs"
    assert logs.data_source_config.metadata == {"prompt": "router"}  # type: ignore[union-attr]
    legacy = client.evals.create(
        data_source_config={"type": "stored_completions"},  # type: ignore[typeddict-item]
        testing_criteria=[EXACT],  # type: ignore[list-item]
    )
    assert legacy.data_source_config.type == "stored_completions" and legacy.name

    listed = client.evals.list(limit=2)
    assert [e.id for e in listed.data] == [ev.id, logs.id] and listed.has_more
    for item in raw(gateway.url, "/v1/evals")["data"]:
        if item["id"] != logs.id:  # valid_json is distillery's own grader type
            EvalListResponse.model_validate(item)
    assert [e.id for e in client.evals.list(after=logs.id)] == [legacy.id]
    assert [e.id for e in client.evals.list(order="desc")] == [legacy.id, logs.id, ev.id]

    time.sleep(1.1)  # updated_at has one-second resolution
    updated = client.evals.update(ev.id, name="qa v2", metadata={"team": "ops"})
    assert updated.name == "qa v2" and updated.metadata == {"team": "ops"}
    newest = client.evals.list(order="desc", order_by="updated_at").data[0]
    assert newest.id == ev.id

    deleted = client.evals.delete(legacy.id)
    assert deleted.deleted and deleted.eval_id == legacy.id
    with pytest.raises(openai.NotFoundError):
        client.evals.retrieve(legacy.id)


@pytest.mark.parametrize(
    ("criteria", "param"),
    [
        ([EXACT, {**FUZZY, "evaluation_metric": "nope"}], "testing_criteria[1].evaluation_metric"),
        ([{**EXACT, "operation": "contains"}], "testing_criteria[0].operation"),
        ([{"type": "python", "name": "p", "source": "x"}], "testing_criteria[0].source"),
        (
            [EXACT, {k: v for k, v in FUZZY.items() if k != "pass_threshold"}],
            "testing_criteria[1].pass_threshold",
        ),
        ([EXACT, EXACT], "testing_criteria[1].name"),
        ([], "testing_criteria"),
    ],
)
def test_invalid_criteria_are_400_with_param(
    client: openai.OpenAI, criteria: list[dict[str, Any]], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.evals.create(
            data_source_config={"type": "custom", "item_schema": QA_SCHEMA},
            testing_criteria=criteria,  # type: ignore[arg-type]
        )
    assert err.value.body["param"] == param  # type: ignore[index]


def test_jsonl_file_content_run(client: openai.OpenAI, gateway: Any) -> None:
    ev = _qa_eval(client)
    answers = ["4", "Paris", "勤怠システムから申請します", "green"]
    content = [
        {"item": {"question": q, "answer": a}, "sample": {"output_text": out}}
        for (q, a), out in zip(QA, answers, strict=True)
    ]
    run = client.evals.runs.create(
        ev.id,
        name="given answers",
        data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}},
    )
    assert run.status in ("queued", "in_progress") and run.object == "eval.run"
    assert run.report_url.endswith(f"/evals/{ev.id}/runs/{run.id}")
    done = wait_run(client, ev.id, run.id)
    body = raw(gateway.url, f"/v1/evals/{ev.id}/runs/{run.id}")
    RunRetrieveResponse.model_validate(body)
    RunCreateResponse.model_validate(body)
    assert done.status == "completed" and done.name == "given answers"
    counts = done.result_counts
    assert (counts.total, counts.passed, counts.failed, counts.errored) == (4, 3, 1, 0)
    per = {r.testing_criteria: (r.passed, r.failed) for r in done.per_testing_criteria_results}
    assert per == {"exact": (3, 1), "fuzzy": (3, 1)}

    items = all_output_items(client, ev.id, run.id)
    assert [i.datasource_item_id for i in items] == [0, 1, 2, 3]
    for item in raw(gateway.url, f"/v1/evals/{ev.id}/runs/{run.id}/output_items")["data"]:
        OutputItemListResponse.model_validate(item)
    failed = all_output_items(client, ev.id, run.id, status="fail")
    assert [i.datasource_item_id for i in failed] == [3]
    assert failed[0].datasource_item == {"question": "Color of the sky?", "answer": "blue"}
    result = failed[0].results[0]
    assert (result.name, result.type, result.passed, result.score) == (
        "exact",
        "string-check-grader",
        False,
        0.0,
    )
    assert "green" in str(result.reason)  # distillery extra: why it failed
    assert failed[0].sample.output[0].content == "green"
    assert len(all_output_items(client, ev.id, run.id, status="pass")) == 3
    one = client.evals.runs.output_items.retrieve(items[2].id, eval_id=ev.id, run_id=run.id)
    assert one.status == "pass" and one.results[1].score == pytest.approx(1.0)
    OutputItemRetrieveResponse.model_validate(
        raw(gateway.url, f"/v1/evals/{ev.id}/runs/{run.id}/output_items/{items[2].id}")
    )
    desc = client.evals.runs.output_items.list(run.id, eval_id=ev.id, order="desc", limit=2)
    assert [i.datasource_item_id for i in desc.data] == [3, 2] and desc.has_more
    after = client.evals.runs.output_items.list(run.id, eval_id=ev.id, after=items[1].id)
    assert [i.datasource_item_id for i in after.data] == [2, 3]

    runs = client.evals.runs.list(ev.id)
    assert [r.id for r in runs.data] == [run.id]
    assert client.evals.runs.list(ev.id, status="failed").data == []


def test_run_rejects_rows_that_break_the_schema(client: openai.OpenAI) -> None:
    ev = _qa_eval(client)
    with pytest.raises(openai.BadRequestError) as err:
        client.evals.runs.create(
            ev.id,
            data_source={
                "type": "jsonl",
                "source": {"type": "file_content", "content": [{"item": {"question": "q"}}]},
            },
        )
    assert err.value.body["param"] == "data_source.source.content[0].item"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.create(
            ev.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": "file-x"}}
        )
    with pytest.raises(openai.NotFoundError) as err:
        client.evals.runs.create(
            ev.id,
            data_source={
                "type": "completions",
                "model": "no-such-model",
                "source": {"type": "file_content", "content": []},
            },
        )
    assert err.value.body["param"] == "data_source.model"  # type: ignore[index]


def test_generation_with_a_model_and_templates(client: openai.OpenAI, gateway: Any) -> None:
    ev = client.evals.create(
        name="echo",
        data_source_config={"type": "custom", "item_schema": QA_SCHEMA},
        testing_criteria=[  # type: ignore[list-item]
            {
                "type": "string_check",
                "name": "echoes",
                "input": "{{sample.output_text}}",
                "reference": "echo: Q: {{item.question}}",
                "operation": "eq",
            },
            {
                "type": "text_similarity",
                "name": "bleu",
                "input": "{{sample.output_text}}",
                "reference": "echo: Q: {{item.question}}",
                "evaluation_metric": "bleu",
                "pass_threshold": 0.99,
            },
        ],
    )
    content = [{"item": {"question": q, "answer": a}} for q, a in QA]
    run = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": "echo-1",
            "source": {"type": "file_content", "content": content},
            "input_messages": {
                "type": "template",
                "template": [
                    {"role": "developer", "content": "Answer briefly."},
                    {"role": "user", "content": "Q: {{item.question}}"},
                ],
            },
            "sampling_params": {"temperature": 0.0, "seed": 7, "max_completion_tokens": 64},
        },
    )
    assert run.model == "echo-1"
    done = wait_run(client, ev.id, run.id)
    assert (done.result_counts.total, done.result_counts.passed) == (4, 4)
    usage = {u.run_model_name: u for u in done.per_model_usage}
    assert usage["echo-1"].invocation_count == 4 and usage["echo-1"].total_tokens > 0
    item = all_output_items(client, ev.id, run.id)[2]
    assert item.sample.output[0].content == f"echo: Q: {QA[2][0]}"
    assert item.sample.model == "echo-1" and item.sample.finish_reason == "stop"
    assert (item.sample.seed, item.sample.temperature, item.sample.max_completion_tokens) == (
        7,
        0.0,
        64,
    )
    assert [m.role for m in item.sample.input] == ["system", "user"]
    sent = [r for r in gateway.fake.requests if r.get("seed") == 7]
    assert len(sent) == 4 and all(r["max_completion_tokens"] == 64 for r in sent)
    # requests go out concurrently, so in any order: one per item, each templated
    assert sorted(r["messages"][1]["content"] for r in sent) == sorted(f"Q: {q}" for q, _ in QA)


@pytest.fixture(autouse=True)
def _fake_on_gateway(request: pytest.FixtureRequest, fake_openai: FakeOpenAI) -> None:
    if "gateway" in request.fixturenames:
        gw = request.getfixturevalue("gateway")
        add_fake_models(gw.services, fake_openai)
        gw.fake = fake_openai
        fake_openai.requests.clear()


def _capture(client: openai.OpenAI, questions: list[str], prompt: str) -> list[str]:
    ids = []
    for q in questions:
        r = client.chat.completions.create(
            model="echo-1",
            messages=[{"role": "user", "content": q}],
            store=True,
            metadata={"prompt": prompt},
        )
        ids.append(r.id)
    return ids


def test_stored_completions_logs_and_generation(client: openai.OpenAI) -> None:
    router = _capture(client, ["VPN is down", "経費精算の締め日は？", "Need a badge"], "router")
    _capture(client, ["unrelated"], "other")
    ev = client.evals.create(
        name="router",
        data_source_config={"type": "logs", "metadata": {"prompt": "router"}},
        testing_criteria=[  # type: ignore[list-item]
            {
                "type": "string_check",
                "name": "echoes input",
                "input": "{{sample.output_text}}",
                "reference": "echo: {{item.input.0.content}}",
                "operation": "eq",
            },
            {"type": "valid_json", "name": "json"},
        ],
    )
    # the stored answers are the samples (no model): the eval's metadata filter is inherited
    stored = client.evals.runs.create(
        ev.id, data_source={"type": "completions", "source": {"type": "stored_completions"}}
    )
    done = wait_run(client, ev.id, stored.id)
    assert done.result_counts.total == 3 and done.model == ""
    per = {r.testing_criteria: (r.passed, r.failed) for r in done.per_testing_criteria_results}
    assert per == {"echoes input": (3, 0), "json": (0, 3)}
    assert done.per_model_usage == []  # nothing was generated
    items = all_output_items(client, ev.id, stored.id)
    assert [i.datasource_item["completion_id"] for i in items] == router
    assert items[1].datasource_item["reference"] == "echo: 経費精算の締め日は？"
    assert items[1].sample.output[0].content == "echo: 経費精算の締め日は？"

    # the same stored inputs, answered again by another model
    regen = client.evals.runs.create(
        ev.id,
        name="json student",
        data_source={
            "type": "completions",
            "model": "json-1",
            "source": {"type": "stored_completions", "metadata": {"prompt": "router"}, "limit": 2},
        },
    )
    done = wait_run(client, ev.id, regen.id)
    per = {r.testing_criteria: (r.passed, r.failed) for r in done.per_testing_criteria_results}
    assert done.result_counts.total == 2 and per == {"echoes input": (0, 2), "json": (2, 0)}
    assert done.per_model_usage[0].run_model_name == "json-1"

    before_all = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "source": {"type": "stored_completions", "created_before": 1_000_000},
        },
    )
    assert wait_run(client, ev.id, before_all.id).result_counts.total == 0
    by_model = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "source": {"type": "stored_completions", "model": "gpt-4o"},
        },
    )
    assert wait_run(client, ev.id, by_model.id).result_counts.total == 0


def test_errors_are_counted_never_fatal(client: openai.OpenAI) -> None:
    ev = client.evals.create(
        name="judged",
        data_source_config={"type": "custom", "item_schema": QA_SCHEMA},
        testing_criteria=[  # type: ignore[list-item]
            {
                "type": "label_model",
                "name": "judge",
                "model": "judge-pass",
                "input": [{"role": "user", "content": "Is '{{sample.output_text}}' right?"}],
                "labels": ["pass", "fail"],
                "passing_labels": ["pass"],
            },
        ],
    )
    content = [{"item": {"question": q, "answer": a}} for q, a in QA]
    failing = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": "fail-500",
            "source": {"type": "file_content", "content": content},
            "input_messages": {"type": "item_reference", "item_reference": "item.question"},
        },
    )
    done = wait_run(client, ev.id, failing.id)
    assert done.status == "completed"
    assert (done.result_counts.errored, done.result_counts.passed) == (4, 0)
    item = all_output_items(client, ev.id, failing.id)[0]
    assert item.status == "error" and item.results == []
    assert item.sample.error.code and "500" in item.sample.error.message

    ok = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": "echo-1",
            "source": {"type": "file_content", "content": content},
            "input_messages": {"type": "item_reference", "item_reference": "item.question"},
        },
    )
    done = wait_run(client, ev.id, ok.id)
    assert (done.result_counts.passed, done.result_counts.errored) == (4, 0)
    usage = {u.run_model_name: u.invocation_count for u in done.per_model_usage}
    assert usage == {"echo-1": 4, "judge-pass": 4}
    result = all_output_items(client, ev.id, ok.id)[0].results[0]
    assert result.type == "label-model-grader" and result.reason == "scripted verdict pass"
    assert '"label"' in result.details["raw"]  # type: ignore[attr-defined,index]

    garbled = client.evals.create(
        data_source_config={"type": "custom", "item_schema": QA_SCHEMA},
        testing_criteria=[  # type: ignore[list-item]
            {
                "type": "label_model",
                "name": "judge",
                "model": "judge-garbage",
                "input": [{"role": "user", "content": "{{sample.output_text}}"}],
                "labels": ["pass", "fail"],
                "passing_labels": ["pass"],
            },
            EXACT,
        ],
    )
    run = client.evals.runs.create(
        garbled.id,
        data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}},
    )
    done = wait_run(client, garbled.id, run.id)
    assert done.status == "completed" and done.result_counts.errored == 4
    item = all_output_items(client, garbled.id, run.id)[0]
    judge, exact = item.results
    assert judge.error["code"] == "grader_error"  # type: ignore[attr-defined,index]
    assert judge.details["raw"] == "I cannot decide."  # type: ignore[attr-defined,index]
    assert getattr(exact, "error", None) is None and exact.passed is False


def test_cancel_and_delete_runs(client: openai.OpenAI) -> None:
    ev = _qa_eval(client)
    content = [{"item": {"question": f"q{i}", "answer": "a"}} for i in range(40)]
    run = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": "slow-300",
            "source": {"type": "file_content", "content": content},
        },
    )
    canceled = client.evals.runs.cancel(run.id, eval_id=ev.id)
    assert canceled.status == "canceled"
    time.sleep(0.5)
    after = client.evals.runs.retrieve(run.id, eval_id=ev.id)
    assert after.status == "canceled" and after.result_counts.total < 40
    deleted = client.evals.runs.delete(run.id, eval_id=ev.id)
    assert deleted.deleted and deleted.run_id == run.id
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.retrieve(run.id, eval_id=ev.id)
    other = client.evals.create(
        data_source_config={"type": "custom", "item_schema": QA_SCHEMA},
        testing_criteria=[EXACT],  # type: ignore[list-item]
    )
    kept = client.evals.runs.create(
        ev.id,
        data_source={"type": "jsonl", "source": {"type": "file_content", "content": content[:1]}},
    )
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.retrieve(kept.id, eval_id=other.id)  # runs live under their eval
    wait_run(client, ev.id, kept.id)
    client.evals.delete(ev.id)
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.retrieve(kept.id, eval_id=ev.id)


def test_run_over_an_uploaded_file(client: openai.OpenAI, gateway: Any) -> None:
    import orjson

    from distillery.store.tables import FileRow

    lines = [{"item": {"question": q, "answer": a}, "sample": {"output_text": a}} for q, a in QA]
    lines.append({"question": "bare", "answer": "x"})  # a bare item, no sample
    data = b"\n".join(orjson.dumps(line) for line in lines) + b"\n"
    services = gateway.services
    folder = Path(services.home) / "files"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "file-evalsrows").write_bytes(data)
    with services.store.write() as session:
        session.add(
            FileRow(
                id="file-evalsrows",
                created_at=int(time.time()),
                filename="rows.jsonl",
                purpose="evals",
                bytes=len(data),
                sha256="0" * 64,
                status="processed",
            )
        )
    ev = _qa_eval(client, [EXACT])
    run = client.evals.runs.create(
        ev.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": "file-evalsrows"}}
    )
    done = wait_run(client, ev.id, run.id)
    assert (done.result_counts.total, done.result_counts.passed, done.result_counts.failed) == (
        5,
        4,
        1,
    )


def test_resume_after_restart(
    home: Path, db_url: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings
    from tests.support.config import write_config
    from tests.support.live import LiveServer

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    monkeypatch.setenv("FAKE_AZURE_KEY", "azure-secret-value-123456")
    config = write_config(
        home, fake_openai, extra_provider_toml(fake_openai) + "\n[evals]\nconcurrency = 2\n"
    )

    def start() -> tuple[Any, LiveServer, openai.OpenAI]:
        services = build_services(Settings(home=home, database_url=db_url, config=config))
        server = LiveServer(create_app(services)).start()
        sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        return services, server, sdk

    services, server, client = start()
    ev = _qa_eval(client, [{**EXACT, "reference": "echo: {{item.question}}"}])
    content = [{"item": {"question": f"q{i}", "answer": "a"}} for i in range(16)]
    run = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": "slow-300",
            "source": {"type": "file_content", "content": content},
            "input_messages": {"type": "item_reference", "item_reference": "item.question"},
        },
    )
    deadline = time.time() + 60
    while len(all_output_items(client, ev.id, run.id)) < 2:
        assert time.time() < deadline, "the run never started"
        time.sleep(0.05)
    server.stop()
    services.store.close()

    services, server, client = start()
    try:
        paused = services.evals.repo.get_run(run.id)
        graded_before = len(services.evals.repo.graded_item_ids(run.id))
        assert paused.status in ("in_progress", "completed")
        done = wait_run(client, ev.id, run.id)
        assert done.status == "completed"
        assert (done.result_counts.total, done.result_counts.passed) == (16, 16)
        items = all_output_items(client, ev.id, run.id)
        assert sorted(i.datasource_item_id for i in items) == list(range(16))
        assert len({i.id for i in items}) == 16
        if paused.status == "in_progress":
            assert graded_before < 16
    finally:
        server.stop()
        services.store.close()


def test_distillery_dataset_source(client: openai.OpenAI, gateway: Any) -> None:
    from distillery.store.tables import DatasetItemRow, DatasetRow, DatasetVersionRow

    services = gateway.services
    rows = [
        ("train", "chatcmpl-t0", "VPNがつながらない", '{"category": "情報システム"}'),
        ("test", "chatcmpl-t1", "Expense deadline?", '{"category": "経理"}'),
        ("test", None, "Meeting room booking", "not json"),
    ]
    with services.store.write() as session:
        session.add(DatasetRow(id="ds_router", name="router", created_at=1))
        session.flush()
        session.add(
            DatasetVersionRow(
                id="dsv_router1", dataset_id="ds_router", version=1, created_at=1, spec={}, stats={}
            )
        )
        session.flush()
        for split, cid, question, answer in rows:
            example = {
                "messages": [
                    {"role": "system", "content": "Route the question."},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
            session.add(
                DatasetItemRow(
                    version_id="dsv_router1", split=split, completion_id=cid, example=example
                )
            )
    ev = client.evals.create(
        data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[  # type: ignore[list-item]
            {"type": "valid_json", "name": "json"},
            {
                "type": "string_check",
                "name": "echoes",
                "input": "{{sample.output_text}}",
                "reference": "echo: {{item.messages.1.content}}",
                "operation": "eq",
            },
        ],
    )
    # no model: the dataset's reference outputs are graded
    reference = client.evals.runs.create(
        ev.id,
        data_source={"type": "distillery_dataset", "dataset_id": "router", "split": "test"},  # type: ignore[arg-type,misc]
    )
    done = wait_run(client, ev.id, reference.id)
    per = {r.testing_criteria: r.passed for r in done.per_testing_criteria_results}
    assert done.result_counts.total == 2 and per == {"json": 1, "echoes": 0}
    items = all_output_items(client, ev.id, reference.id)
    assert items[0].datasource_item["completion_id"] == "chatcmpl-t1"
    assert items[0].datasource_item["reference"] == '{"category": "経理"}'
    assert "completion_id" not in items[1].datasource_item
    assert items[0].datasource_item["messages"][-1]["role"] == "user"

    generated = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "distillery_dataset",
            "dataset_id": "ds_router",
            "version": 1,  # type: ignore[arg-type,misc]
            "model": "echo-1",
        },
    )
    done = wait_run(client, ev.id, generated.id)
    per = {r.testing_criteria: r.passed for r in done.per_testing_criteria_results}
    assert done.result_counts.total == 3 and per == {"json": 0, "echoes": 3}
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.create(
            ev.id,
            data_source={"type": "distillery_dataset", "dataset_id": "router", "version": 9},  # type: ignore[arg-type,misc]
        )
