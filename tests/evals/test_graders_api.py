"""``/v1/fine_tuning/alpha/graders`` (run, validate) through the official openai SDK, live.

A grader object is run on one sample (``client.fine_tuning.alpha.graders.run``) and checked
(``.validate``); the answers are the SDK's ``GraderRunResponse`` / ``GraderValidateResponse``.
The grader endpoints store nothing, so the server runs on SQLite only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.fine_tuning.alpha import GraderRunResponse, GraderValidateResponse

from distillery.evals.graders.python_grader import sandbox_available, sandbox_problem
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.live import LiveServer

from .runs_support import add_fake_models

needs_sandbox = pytest.mark.skipif(
    not sandbox_available(), reason=f"no python grader sandbox here: {sandbox_problem()}"
)
NAME = {
    "type": "string_check",
    "name": "name_grader",
    "input": "{{sample.output_json.name}}",
    "reference": "{{item.name}}",
    "operation": "eq",
}
EMAIL = {
    "type": "text_similarity",
    "name": "email_grader",
    "input": "{{sample.output_json.email}}",
    "reference": "{{item.email}}",
    "evaluation_metric": "fuzzy_match",
}
JUDGE = {
    "type": "score_model",
    "name": "judge",
    "model": "judge-pass",
    "input": [{"role": "user", "content": "Is {{sample.output_text}} right for {{item.name}}?"}],
}
PYTHON = {
    "type": "python",
    "name": "length",
    "source": "def grade(sample, item):\n    return min(1.0, len(sample['output_text']) / 100)\n",
}
ITEM = {"name": "Ada", "email": "ada@example.com"}
SAMPLE = '{"name": "Ada", "email": "ada@example.com"}'


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'distillery.db'}"


def test_run_a_string_check(client: openai.OpenAI) -> None:
    result = client.fine_tuning.alpha.graders.run(
        grader=NAME,  # type: ignore[arg-type]
        model_sample=SAMPLE,
        item=ITEM,
    )
    assert isinstance(result, GraderRunResponse)
    assert result.reward == 1.0
    assert result.sub_rewards == {}
    assert result.metadata.name == "name_grader" and result.metadata.type == "string_check"
    errors = result.metadata.errors.model_dump()
    assert not any(v for k, v in errors.items() if isinstance(v, bool)), errors
    assert result.metadata.execution_time >= 0
    assert result.metadata.token_usage is None
    assert result.api_model_grader_token_usage_per_model == {}
    miss = client.fine_tuning.alpha.graders.run(
        grader=NAME,  # type: ignore[arg-type]
        model_sample='{"name": "Bob"}',
        item=ITEM,
    )
    assert miss.reward == 0.0


def test_run_a_multi_grader_with_a_model_judge(
    client: openai.OpenAI, gateway: LiveServer, fake_openai: FakeOpenAI
) -> None:
    add_fake_models(gateway.services, fake_openai, ["judge-pass"])  # type: ignore[attr-defined]
    grader: dict[str, Any] = {
        "type": "multi",
        "name": "contact",
        "graders": {"name": NAME, "email": EMAIL, "judge": JUDGE},
        "calculate_output": "(name + email) / 2 * judge ^ 2",
    }
    result = client.fine_tuning.alpha.graders.run(
        grader=grader,  # type: ignore[arg-type]
        model_sample=SAMPLE,
        item=ITEM,
    )
    assert result.reward == 1.0
    assert result.sub_rewards == {"name": 1.0, "email": 1.0, "judge": 1.0}
    assert result.metadata.scores == result.sub_rewards
    assert result.metadata.type == "multi"
    usage = result.api_model_grader_token_usage_per_model
    assert set(usage) == {"judge-pass"}
    assert result.metadata.sampled_model_name == "judge-pass"
    assert result.metadata.token_usage == usage["judge-pass"]["total_tokens"] > 0  # type: ignore[index]
    # the wire keeps OpenAI's names (the SDK aliases model_grader_* to api_model_grader_*)
    raw = httpx.post(
        f"{gateway.url}/v1/fine_tuning/alpha/graders/run",
        json={"grader": grader, "model_sample": SAMPLE, "item": ITEM},
        timeout=60,
    ).json()
    assert set(raw) == {"reward", "metadata", "sub_rewards", "model_grader_token_usage_per_model"}
    assert "model_grader_parse_error" in raw["metadata"]["errors"]


def test_a_grade_that_fails_is_reward_0_with_the_error_flags(
    client: openai.OpenAI, gateway: LiveServer, fake_openai: FakeOpenAI
) -> None:
    add_fake_models(gateway.services, fake_openai, ["judge-garbage"])  # type: ignore[attr-defined]
    garbage = {**JUDGE, "model": "judge-garbage"}
    result = client.fine_tuning.alpha.graders.run(
        grader=garbage,  # type: ignore[arg-type]
        model_sample="x",
        item=ITEM,
    )
    assert result.reward == 0.0
    assert result.metadata.errors.api_model_grader_parse_error is True
    assert result.metadata.errors.python_grader_runtime_error is False
    zero = {"type": "multi", "name": "m", "graders": NAME, "calculate_output": "1 / name_grader"}
    result = client.fine_tuning.alpha.graders.run(
        grader=zero,  # type: ignore[arg-type]
        model_sample='{"name": "Bob"}',
        item=ITEM,
    )
    assert result.reward == 0.0 and result.metadata.errors.other_error is True
    assert result.sub_rewards == {"name_grader": 0.0}


@needs_sandbox
def test_run_a_python_grader(client: openai.OpenAI) -> None:
    result = client.fine_tuning.alpha.graders.run(
        grader=PYTHON,  # type: ignore[arg-type]
        model_sample="x" * 25,
    )
    assert result.reward == 0.25 and result.metadata.type == "python"
    broken = {**PYTHON, "source": "def grade(sample, item):\n    return item['missing']\n"}
    result = client.fine_tuning.alpha.graders.run(
        grader=broken,  # type: ignore[arg-type]
        model_sample="x",
        item={},
    )
    errors = result.metadata.errors
    assert result.reward == 0.0
    assert errors.python_grader_runtime_error is True
    assert errors.python_grader_runtime_error_details is not None
    assert "KeyError: 'missing'" in errors.python_grader_runtime_error_details
    multi = {
        "type": "multi",
        "name": "m",
        "graders": {"length": PYTHON, "name": NAME},
        "calculate_output": "max(length, name)",
    }
    result = client.fine_tuning.alpha.graders.run(
        grader=multi,  # type: ignore[arg-type]
        model_sample=SAMPLE,
        item=ITEM,
    )
    assert result.reward == 1.0 and result.sub_rewards["length"] == len(SAMPLE) / 100


def test_validate(client: openai.OpenAI) -> None:
    grader = {
        "type": "multi",
        "name": "contact",
        "graders": {"name": NAME, "email": EMAIL},
        "calculate_output": "(name + email) / 2",
    }
    raw = client.fine_tuning.alpha.graders.with_raw_response.validate(
        grader=grader,  # type: ignore[arg-type]
    )
    validated = raw.parse()
    assert isinstance(validated, GraderValidateResponse)
    assert validated.grader is not None and validated.grader.type == "multi"
    assert raw.http_response.json() == {"grader": grader}


@pytest.mark.parametrize(
    ("grader", "param"),
    [
        ({"type": "multi", "name": "m", "graders": {"name": NAME}, "calculate_output": "name +"},
         "grader.calculate_output"),
        ({"type": "multi", "name": "m", "graders": {"name": NAME}, "calculate_output": "phone"},
         "grader.calculate_output"),
        ({"type": "multi", "name": "m", "graders": {"name": {**NAME, "operation": "gt"}},
          "calculate_output": "name"}, "grader.graders.name.operation"),
        ({**PYTHON, "source": "def grade(sample, item)\n    return 1\n"}, "grader.source"),
        ({**PYTHON, "source": "x = 1\n"}, "grader.source"),
        ({"type": "bogus", "name": "b"}, "grader.type"),
    ],
)  # fmt: skip
def test_invalid_graders_are_400_with_param(
    client: openai.OpenAI, grader: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.alpha.graders.validate(grader=grader)  # type: ignore[arg-type]
    assert err.value.param == param, err.value.body
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.alpha.graders.run(
            grader=grader,  # type: ignore[arg-type]
            model_sample="x",
        )
    assert err.value.param == param


def test_bad_run_bodies(client: openai.OpenAI, gateway: LiveServer) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.alpha.graders.run(
            grader=NAME,  # type: ignore[arg-type]
            model_sample="x",
            item=["not", "an", "object"],
        )
    assert err.value.param == "item"
    answer = httpx.post(
        f"{gateway.url}/v1/fine_tuning/alpha/graders/run", json={"grader": NAME}, timeout=30
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "model_sample"
