"""Reinforcement fine-tuning (OpenAI's ``method.reinforcement``) of the embedded student, driven
through the openai SDK against a live gateway.

The toy task is checkable: every prompt asks for a colour in a JSON object whose ``color`` is
one of four values (the response format holds while sampling), and the grader, a
``string_check`` on ``{{sample.output_json.color}}``, rewards ``green``, which the untrained
student never answers greedily (it says ``blue``). The job's per-step events must show the reward
rising, the validation reward (greedy answers, as served) must move from 0, and the ``ft:`` model
must be served at once. A second reinforcement job starts from that ``ft:`` model and is
cancelled.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.evals.runs_support import extra_provider_toml
from tests.support.config import write_config
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.ft import upload, wait_for
from tests.support.live import LiveServer

pytestmark = pytest.mark.training

LOCAL = "smollm2-135m-instruct"
SYSTEM = "Answer in JSON with a color."
FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "color",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"color": {"type": "string", "enum": ["red", "green", "blue", "yellow"]}},
            "required": ["color"],
            "additionalProperties": False,
        },
    },
}
GRADER = {
    "type": "string_check",
    "name": "right color",
    "input": "{{sample.output_json.color}}",
    "reference": "{{item.reference_answer}}",
    "operation": "eq",
}


def _rows(n: int, *, answer: bool = False) -> bytes:
    rows = []
    for i in range(n):
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Which color fits item number {i}?"},
        ]
        if answer:
            messages.append({"role": "assistant", "content": '{"color": "green"}'})
        rows.append({"messages": messages, "reference_answer": "green"})
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def _upload(client: openai.OpenAI, data: bytes) -> str:
    return client.files.create(file=("rft.jsonl", io.BytesIO(data)), purpose="fine-tune").id  # type: ignore[arg-type]


def _method(grader: dict[str, Any] = GRADER, **hyper: Any) -> dict[str, Any]:
    return {
        "type": "reinforcement",
        "reinforcement": {"grader": grader, "response_format": FORMAT, "hyperparameters": hyper},
    }


@pytest.mark.parametrize(
    ("method", "extra", "param"),
    [
        ({"type": "reinforcement", "reinforcement": {}}, {}, "method.reinforcement.grader"),
        (_method({**GRADER, "type": "nope"}), {}, "method.reinforcement.grader.type"),
        (_method({**GRADER, "operation": "sort of"}), {}, "method.reinforcement.grader.operation"),
        (
            _method({**GRADER, "reference": "{{item.label}}"}),
            {},
            "method.reinforcement.grader",
        ),  # no row has a 'label' field
        (_method(eval_samples=0), {}, "method.reinforcement.hyperparameters.eval_samples"),
        (
            _method(compute_multiplier="lots"),
            {},
            "method.reinforcement.hyperparameters.compute_multiplier",
        ),
        (_method(beta=0.1), {}, "method.reinforcement.hyperparameters.beta"),
        (
            {**_method(), "reinforcement": {**_method()["reinforcement"], "response_format": 3}},
            {},
            "method.reinforcement.response_format",
        ),
        (_method(), {"method": "full"}, "distillery.method"),
        (_method(), {"kl_coef": -1}, "distillery.kl_coef"),
    ],
)
def test_reinforcement_requests_are_checked_before_training(
    client: openai.OpenAI, method: dict[str, Any], extra: dict[str, Any], param: str
) -> None:
    training = _upload(client, _rows(4))
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=LOCAL, training_file=training, method=method, extra_body={"distillery": extra}
        )
    assert err.value.body["param"] == param, err.value.body  # type: ignore[index]
    assert client.fine_tuning.jobs.list().data == []


def test_rows_must_end_with_the_prompt(client: openai.OpenAI) -> None:
    training = _upload(client, _rows(4, answer=True))
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=LOCAL, training_file=training, method=_method())
    assert err.value.body["param"] == "training_file"  # type: ignore[index]
    assert "ends with the prompt" in err.value.message


def test_a_supervised_job_cannot_start_from_a_model_that_does_not_exist(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model="ft:smollm2-135m-instruct::nope", training_file=upload(client)
        )
    assert err.value.body["param"] == "model"  # type: ignore[index]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the store is not under test here
def test_reinforcement_job_raises_the_reward_and_serves_its_model(client: openai.OpenAI) -> None:
    training = _upload(client, _rows(16))
    validation = _upload(client, _rows(4))
    job = client.fine_tuning.jobs.create(
        model=LOCAL,
        training_file=training,
        validation_file=validation,
        suffix="rft",
        seed=3,
        method=_method(n_epochs=2, batch_size=4, eval_interval=2),
        extra_body={
            "distillery": {
                "learning_rate": 1e-3,
                "group_size": 8,
                "max_completion_tokens": 16,
                "focus": "all",
                "constant_reward_patience": 2,
                "lora_r": 8,
            }
        },
    )
    assert job.method is not None and job.method.type == "reinforcement"
    assert job.method.reinforcement is not None
    assert job.method.reinforcement.grader.type == "string_check"  # type: ignore[union-attr]
    assert job.hyperparameters.batch_size == 4 and job.hyperparameters.n_epochs == 2
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model and done.fine_tuned_model.startswith(f"ft:{LOCAL}:rft:")

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
    steps = [e.data for e in events if e.type == "metrics" and (e.data or {}).get("step")]
    assert steps, [e.message for e in events]
    for data in steps:
        assert set(data) >= {"reward_mean", "reward_std", "pass_rate", "kl", "constant_groups"}
    rewards = [d["reward_mean"] for d in steps]
    assert max(rewards[1:]) > rewards[0], rewards  # the reward rises
    assert steps[-1]["pass_rate"]["right color"] > steps[0]["pass_rate"]["right color"]
    before = next(e.data for e in events if (e.data or {}).get("step") == 0)
    after = [d["valid_reward_mean"] for d in steps if "valid_reward_mean" in d]
    assert before["valid_reward_mean"] == 0.0  # greedy: blue
    assert after and after[-1] > 0.5, after
    # the step kept is the first to reach the best validation reward (events say which, and why)
    selection = next(e.data["selection"] for e in events if "selection" in (e.data or {}))
    curve = {p["step"]: p["valid_reward_mean"] for p in selection["curve"]}
    assert curve[0] == 0.0 and max(curve.values()) == max(after)
    assert selection["chosen_step"] == min(s for s, v in curve.items() if v == max(after))

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and "reward_mean" in checkpoints[0].metrics.model_dump(exclude_none=True)

    # served at once, answering as trained (the response format held)
    reply = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Which color fits item number 99?"},
        ],
        response_format=FORMAT,  # type: ignore[arg-type]
        temperature=0,
    )
    assert json.loads(reply.choices[0].message.content or "{}") == {"color": "green"}

    # a second run starts from the RFT student (its adapter trained on, a frozen copy as the
    # KL reference) and is cancelled
    again = client.fine_tuning.jobs.create(
        model=done.fine_tuned_model,
        training_file=training,
        method=_method(n_epochs=5, batch_size=2),
        extra_body={"distillery": {"focus": "all", "max_completion_tokens": 16}},
    )
    assert again.model == done.fine_tuned_model
    wait_for(client, again.id, statuses=("running",))
    assert client.fine_tuning.jobs.cancel(again.id).status == "cancelled"
    assert wait_for(client, again.id).status == "cancelled"


@pytest.fixture
def judged_client(
    home: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[openai.OpenAI]:
    """A live gateway (SQLite) whose configuration also serves the fake's judge models."""
    from distillery.app import build_services, create_app
    from distillery.settings import Settings

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    monkeypatch.setenv("FAKE_AZURE_KEY", "azure-secret-value-123456")
    config = write_config(home, fake_openai, extra=extra_provider_toml(fake_openai))
    services = build_services(
        Settings(home=home, database_url=f"sqlite:///{home / 'd.db'}", config=config)
    )
    server = LiveServer(create_app(services)).start()
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    server.stop()
    services.store.close()


def test_a_score_model_grader_calls_its_judge_from_the_training_process(
    judged_client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    client = judged_client
    judge = {
        "type": "score_model",
        "name": "judge",
        "model": "judge-pass",
        "input": [
            {
                "role": "user",
                "content": "Is {{sample.output_text}} right for {{item.reference_answer}}?",
            }
        ],
    }
    training = _upload(client, _rows(4))
    with pytest.raises(openai.BadRequestError) as err:  # a judge no provider serves
        client.fine_tuning.jobs.create(
            model=LOCAL, training_file=training, method=_method({**judge, "model": "judge-nope"})
        )
    assert err.value.body["param"] == "method.reinforcement.grader"  # type: ignore[index]
    seen = len(fake_openai.requests)
    job = client.fine_tuning.jobs.create(
        model=LOCAL,
        training_file=training,
        method=_method(judge, n_epochs=1, batch_size=2, eval_interval=1),
        extra_body={
            "distillery": {
                "group_size": 2,
                "max_completion_tokens": 8,
                "focus": "all",
                "constant_reward_patience": 1,
            }
        },
    )
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))[::-1]
    steps = [e.data for e in events if e.type == "metrics" and (e.data or {}).get("step")]
    # the scripted judge scores every answer 1.0: the reward is the judge's, and constant
    assert steps and steps[0]["reward_mean"] == 1.0 and steps[0]["grading_errors"] == 0
    assert any("Ending the run early" in e.message for e in events)
    judged = [r for r in fake_openai.requests[seen:] if r.get("model") == "judge-pass"]
    assert len(judged) >= 4  # 2 prompts x 2 samples, through the provider registry
    assert "green" in json.dumps(judged[0]["messages"])  # the item reached the judge's prompt
