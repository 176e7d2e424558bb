"""multi: sub-graders combined by calculate_output; the formula is checked when it is built."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from distillery.errors import InvalidRequestError
from distillery.evals.graders.base import GradeInput, GraderError, grade_many, sample_from_output
from distillery.evals.graders.formula import compile_formula
from distillery.evals.graders.multi import MultiGrader
from distillery.evals.graders.registry import build_grader

from .support import ScriptedJudge, run_grade

EXACT = {
    "type": "string_check",
    "name": "exact_grader",
    "input": "{{sample.output_json.name}}",
    "reference": "{{item.name}}",
    "operation": "eq",
}
FUZZY = {
    "type": "text_similarity",
    "name": "fuzzy_grader",
    "input": "{{sample.output_json.email}}",
    "reference": "{{item.email}}",
    "evaluation_metric": "fuzzy_match",
    "pass_threshold": 0.5,
}
ITEM = {"name": "Ada", "email": "ada@example.com"}
ANSWER = '{"name": "Ada", "email": "ada@example.org"}'


def multi(formula: str, graders: Any = None, **extra: Any) -> dict[str, Any]:
    graders = {"name": EXACT, "email": FUZZY} if graders is None else graders
    return {"type": "multi", "name": "m", "graders": graders, "calculate_output": formula, **extra}


def value(formula: str, **scores: float) -> float:
    return compile_formula(formula, frozenset(scores)).evaluate(scores)


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("a + b", 3.5),
        ("a - b", -1.5),
        ("a * b", 2.5),
        ("a / b", 0.4),
        ("(a + b) / 2", 1.75),
        ("a ^ 2", 1.0),
        ("b ^ 2", 6.25),
        ("b ** 2", 6.25),
        ("2 ^ 3 ^ 2", 512.0),  # right-associative, as in mathematics
        ("a + b ^ 2", 7.25),  # ^ binds tighter than +
        ("-b ^ 2", -6.25),  # and tighter than unary minus
        ("-a + +b", 1.5),
        ("min(a, b)", 1.0),
        ("max(a, b, 3)", 3.0),
        ("min(b)", 2.5),
        ("abs(a - b)", 1.5),
        ("floor(b)", 2.0),
        ("ceil(b)", 3.0),
        ("exp(0)", 1.0),
        ("sqrt(b * 10)", 5.0),
        ("log(exp(2))", 2.0),
        ("log(8, 2)", 3.0),
        ("1e-1 * 10", 1.0),
        ("0.5 * a + 0.5 * min(b, 1)", 1.0),
    ],
)
def test_formula_operations(formula: str, expected: float) -> None:
    assert math.isclose(value(formula, a=1.0, b=2.5), expected)


@pytest.mark.parametrize(
    "formula",
    ["a +", "(a", "a % 2", "a // 2", "a if b else 1", "a.real", "__import__('os')", "a[0]",
     "'text'", "True", "lambda: 1", "[a]", "pow(a, 2)", "min()", "abs(a, b)", "log(a, b, 2)",
     "max(*a)", "max(a, key=b)", "a == b", "", "   "],
)  # fmt: skip
def test_formula_refuses_anything_else(formula: str) -> None:
    with pytest.raises(ValueError):
        compile_formula(formula, frozenset({"a", "b"}))


@pytest.mark.parametrize("formula", ["a / b", "sqrt(-a)", "log(b)", "(-a) ^ 0.5", "exp(1000)",
                                     "9 ^ 9 ^ 9", "a / (b * 1e-320) * 1e300"])  # fmt: skip
def test_formula_values_it_cannot_compute(formula: str) -> None:
    formula_ = compile_formula(formula, frozenset({"a", "b"}))
    with pytest.raises((ArithmeticError, ValueError)):
        formula_.evaluate({"a": 1.0, "b": 0.0})


def test_mapping_of_graders_as_in_the_rft_guide() -> None:
    grader = build_grader(multi("(name + email) / 2"))
    assert isinstance(grader, MultiGrader) and grader.type == "multi"
    assert list(grader.graders) == ["name", "email"]
    grade = run_grade(grader, ANSWER, ITEM)
    sub = grade.details["sub_rewards"]
    assert isinstance(sub, dict)
    assert sub["name"] == 1.0 and 0.5 < sub["email"] < 1.0
    assert grade.score == pytest.approx((1.0 + sub["email"]) / 2)
    assert grade.passed is None  # no pass_threshold
    graders = grade.details["graders"]
    assert isinstance(graders, dict)
    assert graders["email"]["type"] == "text_similarity" and graders["email"]["passed"] is True
    assert grade.reason and "name=1" in grade.reason


def test_a_sub_grader_without_a_name_takes_its_key() -> None:
    unnamed = {k: v for k, v in EXACT.items() if k != "name"}
    grader = build_grader(multi("exact", {"exact": unnamed}))
    assert isinstance(grader, MultiGrader)
    assert grader.graders["exact"].name == "exact"
    assert run_grade(grader, ANSWER, ITEM).score == 1.0


def test_one_grader_as_the_sdk_types_it() -> None:
    grader = build_grader(multi("0.5 * exact_grader", EXACT))
    assert isinstance(grader, MultiGrader)
    assert list(grader.graders) == ["exact_grader"]
    grade = run_grade(grader, ANSWER, ITEM)
    assert grade.score == 0.5 and grade.details["sub_rewards"] == {"exact_grader": 1.0}
    with pytest.raises(InvalidRequestError) as err:
        build_grader(multi("x", {k: v for k, v in EXACT.items() if k != "name"}), param="g")
    assert err.value.param == "g.graders.name"


def test_pass_threshold() -> None:
    assert run_grade(build_grader(multi("name", pass_threshold=1.0)), ANSWER, ITEM).passed is True
    failing = run_grade(build_grader(multi("name", pass_threshold=1.0)), '{"name": "Bob"}', ITEM)
    assert failing.passed is False and failing.score == 0.0


def test_unknown_variable_is_a_400_at_build_time() -> None:
    with pytest.raises(InvalidRequestError) as err:
        build_grader(multi("(name + phone) / 2"), param="method.reinforcement.grader")
    assert err.value.status == 400
    assert err.value.param == "method.reinforcement.grader.calculate_output"
    assert "'phone'" in err.value.message and "email, name" in err.value.message


@pytest.mark.parametrize("formula", ["(name + email", "name % 2", "open('x')", "name; email"])
def test_formula_that_does_not_parse_is_a_400(formula: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        build_grader(multi(formula), param="grader")
    assert err.value.status == 400
    assert err.value.param == "grader.calculate_output"


def test_sub_grader_problems_name_their_param() -> None:
    bad = {**EXACT, "operation": "contains"}
    with pytest.raises(InvalidRequestError) as err:
        build_grader(multi("name", {"name": bad}), param="grader")
    assert err.value.param == "grader.graders.name.operation"
    with pytest.raises(InvalidRequestError) as err:
        build_grader(multi("name", {"name": "not an object"}), param="grader")
    assert err.value.param == "grader.graders.name"
    with pytest.raises(InvalidRequestError) as err:
        build_grader(multi("name", {}), param="grader")
    assert err.value.param == "grader.graders"


def test_multi_does_not_nest() -> None:
    inner = multi("name")
    with pytest.raises(InvalidRequestError, match="cannot contain another multi") as err:
        build_grader(multi("inner", {"inner": inner}), param="grader")
    assert err.value.param == "grader.graders.inner.type"


def test_division_by_zero_at_grade_time_is_a_grader_error() -> None:
    grader = build_grader(multi("email / name"))
    with pytest.raises(GraderError, match="calculate_output") as err:
        run_grade(grader, '{"name": "Bob", "email": "ada@example.com"}', ITEM)
    assert err.value.kind == "other_error"
    assert err.value.details["sub_rewards"] == {"name": 0.0, "email": 1.0}


def test_a_failing_sub_grader_fails_the_grade_with_its_kind() -> None:
    judge = ScriptedJudge("no score here", "still none")
    judged = {"type": "score_model", "name": "judge", "model": "m",
              "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}]}  # fmt: skip
    grader = build_grader(multi("name * judge", {"name": EXACT, "judge": judged}), judge=judge)
    with pytest.raises(GraderError, match="grader 'judge' failed") as err:
        run_grade(grader, ANSWER, ITEM)
    assert err.value.kind == "model_grader_parse_error"
    assert err.value.details["sub_rewards"] == {"name": 1.0}


def test_model_judge_inside_multi_keeps_its_usage() -> None:
    judge = ScriptedJudge('{"reasoning": "fine", "score": 0.5}')
    judged = {"type": "score_model", "name": "judge", "model": "m",
              "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}]}  # fmt: skip
    grader = build_grader(multi("name * judge", {"name": EXACT, "judge": judged}), judge=judge)
    grade = run_grade(grader, ANSWER, ITEM)
    assert grade.score == 0.5
    graders = grade.details["graders"]
    assert isinstance(graders, dict)
    assert graders["judge"]["details"]["usage"]["total_tokens"] == 49


def test_grade_many_grades_every_input_in_order() -> None:
    grader = build_grader(multi("name + 0 * email"))
    names = ["Ada", "Bob", "Ada", "Eve"]
    inputs = [
        GradeInput(item=ITEM, sample=sample_from_output(f'{{"name": "{n}", "email": ""}}'))
        for n in names
    ]
    results = asyncio.run(grade_many(grader, inputs))
    assert [r.score for r in results if not isinstance(r, GraderError)] == [1.0, 0.0, 1.0, 0.0]
    broken = build_grader(multi("1 / name"))
    results = asyncio.run(grade_many(broken, inputs))
    assert [isinstance(r, GraderError) for r in results] == [False, True, False, True]
