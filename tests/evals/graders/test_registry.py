"""build_grader: every type builds; bad configs are 400s that name the param."""

from __future__ import annotations

from typing import Any

import pytest

from distillery.errors import InvalidRequestError
from distillery.evals.graders.base import Grader
from distillery.evals.graders.python_grader import sandbox_available
from distillery.evals.graders.registry import GRADER_TYPES, build_grader

MINIMAL: dict[str, dict[str, Any]] = {
    "string_check": {"name": "s", "input": "{{sample.output_text}}", "reference": "a",
                     "operation": "eq"},
    "text_similarity": {"name": "t", "input": "{{sample.output_text}}", "reference": "a",
                        "evaluation_metric": "rouge_l", "pass_threshold": 0.5},
    "label_model": {"name": "l", "model": "m", "input": [{"role": "user", "content": "x"}],
                    "labels": ["a", "b"], "passing_labels": ["a"]},
    "score_model": {"name": "s", "model": "m", "input": [{"role": "user", "content": "x"}]},
    "semantic_similarity": {"reference": "{{item.answer}}", "pass_threshold": 0.8},
    "valid_json": {},
    "valid_xml": {},
    "json_schema": {"schema": {"type": "object"}},
    "sentiment": {},
    "factuality": {"model": "m", "reference": "{{item.answer}}"},
    "criteria_match": {"model": "m", "criteria": "Is concise."},
    "custom_prompt": {"model": "m", "prompt": "Classify {{sample.output_text}}",
                      "labels": ["good", "bad"], "passing_labels": ["good"]},
    "python": {"name": "p", "source": "def grade(sample, item):\n    return 1.0\n"},
    "multi": {"name": "m", "calculate_output": "s", "graders": {"s": {
        "type": "string_check", "input": "{{sample.output_text}}", "reference": "a",
        "operation": "eq"}}},
}  # fmt: skip


def test_every_type_is_covered_and_builds() -> None:
    assert set(MINIMAL) == set(GRADER_TYPES)
    for grader_type, fields in MINIMAL.items():
        if grader_type == "python" and not sandbox_available():
            continue  # refused without a sandbox: tests/evals/graders/test_python_grader.py
        grader = build_grader({"type": grader_type, **fields})
        assert isinstance(grader, Grader)
        assert grader.type == grader_type
        assert grader.name


def test_unknown_types_name_param() -> None:
    with pytest.raises(InvalidRequestError) as err:
        build_grader({"type": "bogus"}, param="testing_criteria[2]")
    assert err.value.param == "testing_criteria[2].type"
    assert err.value.status == 400
    assert "string_check" in err.value.message
    assert "python" in err.value.message and "multi" in err.value.message
    with pytest.raises(InvalidRequestError) as err:
        build_grader({"name": "no type"})
    assert err.value.param == "testing_criteria[0].type"


@pytest.mark.parametrize(
    ("config", "param"),
    [
        ({"type": "string_check", "name": "s", "input": "x", "reference": "y", "operation": "gt"},
         "testing_criteria[1].operation"),
        ({"type": "text_similarity", "name": "t", "input": "x", "reference": "y",
          "evaluation_metric": "rouge_6", "pass_threshold": 0.5},
         "testing_criteria[1].evaluation_metric"),
        ({"type": "text_similarity", "name": "t", "input": "x", "reference": "y",
          "evaluation_metric": "bleu", "pass_threshold": "high"},
         "testing_criteria[1].pass_threshold"),
        ({"type": "string_check", "name": "s", "input": "x", "reference": "y", "operation": "eq",
          "pass_treshold": 1}, "testing_criteria[1].pass_treshold"),
        ({"type": "label_model", "name": "l", "model": "m",
          "input": [{"role": "robot", "content": "x"}], "labels": ["a"], "passing_labels": ["a"]},
         "testing_criteria[1].input[0].role"),
        ({"type": "label_model", "name": "l", "model": "m",
          "input": [{"role": "user", "content": "x"}], "labels": ["a"], "passing_labels": ["b"]},
         "testing_criteria[1]"),
        ({"type": "score_model", "name": "s", "model": "m",
          "input": [{"role": "user", "content": "x"}], "range": [5, 1]}, "testing_criteria[1]"),
        ({"type": "factuality", "model": "m", "reference": "r", "passing_choices": ["F"]},
         "testing_criteria[1].passing_choices[0]"),
    ],
)  # fmt: skip
def test_invalid_configs_are_400_with_param(config: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        build_grader(config, param="testing_criteria[1]")
    assert err.value.param == param


def test_label_model_content_items_are_validated() -> None:
    config = {
        **MINIMAL["label_model"],
        "type": "label_model",
        "input": [{"role": "user", "content": [{"type": "input_video", "url": "x"}]}],
    }
    with pytest.raises(InvalidRequestError) as err:
        build_grader(config)
    assert err.value.param == "testing_criteria[0].input[0].content"


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidRequestError):
        build_grader(["string_check"])  # type: ignore[arg-type]


def test_text_similarity_without_pass_threshold_only_measures() -> None:
    """OpenAI's grader object (RFT, multi, the grader API) has no pass_threshold; an eval's
    testing criterion requires one (``evals.runner.build_graders``)."""
    from distillery.evals.runner import build_graders

    from .support import run_grade

    config = {**MINIMAL["text_similarity"], "type": "text_similarity"}
    del config["pass_threshold"]
    grade = run_grade(build_grader(config), "a")
    assert grade.score == 1.0 and grade.passed is None
    with pytest.raises(InvalidRequestError) as err:
        build_graders({"testing_criteria": [config]}, None)
    assert err.value.param == "testing_criteria[0].pass_threshold"
