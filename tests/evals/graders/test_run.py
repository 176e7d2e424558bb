"""graders.run: rewards for a batch (what RFT calls), and the grader API's answers in core."""

from __future__ import annotations

import asyncio

import pytest
from openai.types.fine_tuning.alpha import GraderRunResponse

from distillery.errors import InvalidRequestError
from distillery.evals.graders.base import GraderError
from distillery.evals.graders.run import (
    ERROR_FLAGS,
    build,
    error_flags,
    grade_samples,
    grade_samples_sync,
    run_grader,
    validate_grader,
)

from .support import ScriptedJudge

EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_json.answer}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
MULTI = {
    "type": "multi",
    "name": "m",
    "graders": {"exact": EXACT},
    "calculate_output": "2 / (exact + exact)",
}


def test_grade_samples_sync_and_async() -> None:
    grader = build(MULTI, param="method.reinforcement.grader")
    rows = [
        ({"answer": "4"}, '{"answer": "4"}'),
        ({"answer": "4"}, '{"answer": "5"}'),  # 2 / 0: a failed grade, reward 0
        ({"answer": "4"}, {"output_text": "", "output_json": {"answer": "4"}}),
    ]
    rewards = grade_samples_sync(grader, rows)
    assert [r.score for r in rewards] == [1.0, 0.0, 1.0]
    assert [r.ok for r in rewards] == [True, False, True]
    assert isinstance(rewards[1].error, GraderError) and rewards[1].error.kind == "other_error"
    assert rewards[0].grade is not None and rewards[0].grade.details["sub_rewards"] == {
        "exact": 1.0
    }
    assert [r.score for r in asyncio.run(grade_samples(grader, rows))] == [1.0, 0.0, 1.0]

    async def inside_a_loop() -> None:
        with pytest.raises(RuntimeError, match="await grade_samples"):
            grade_samples_sync(grader, rows)

    asyncio.run(inside_a_loop())


def test_build_refuses_with_the_param() -> None:
    with pytest.raises(InvalidRequestError) as err:
        build({**MULTI, "calculate_output": "exact +"}, param="method.reinforcement.grader")
    assert err.value.param == "method.reinforcement.grader.calculate_output"


def test_error_flags() -> None:
    clean = error_flags(None)
    assert set(ERROR_FLAGS) <= set(clean) and not any(clean[f] for f in ERROR_FLAGS)
    runtime = error_flags(
        GraderError("boom", kind="python_grader_runtime_error", details={"details": "Traceback"})
    )
    assert runtime["python_grader_runtime_error"] is True
    assert runtime["python_grader_runtime_error_details"] == "boom\nTraceback"
    slow = error_flags(GraderError("slow", kind="unresponsive_reward_error"))
    assert slow["unresponsive_reward_error"] and slow["python_grader_runtime_error"]
    server = error_flags(
        GraderError("no", kind="python_grader_server_error", details={"details": "start_failed"})
    )
    assert server["python_grader_server_error_type"] == "start_failed"
    assert error_flags(GraderError("?"))["other_error"] is True


def test_run_grader_answers_openais_shape() -> None:
    judge = ScriptedJudge('{"reasoning": "ok", "score": 0.5}')
    judged = {
        "type": "score_model",
        "name": "judge",
        "model": "judge-model",
        "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}],
    }
    config = {
        **MULTI,
        "graders": {"exact": EXACT, "judge": judged},
        "calculate_output": "exact * judge",
    }
    answer = asyncio.run(run_grader(config, '{"answer": "4"}', {"answer": "4"}, judge=judge))
    parsed = GraderRunResponse.model_validate(answer)
    assert parsed.reward == 0.5
    assert parsed.sub_rewards == {"exact": 1.0, "judge": 0.5}
    assert parsed.metadata.token_usage == 49
    assert parsed.metadata.sampled_model_name == "judge-model"
    assert answer["model_grader_token_usage_per_model"] == {
        "judge-model": {
            "prompt_tokens": 42,
            "completion_tokens": 7,
            "total_tokens": 49,
            "cached_tokens": 0,
        }
    }
    assert validate_grader(config) == {"grader": config}
