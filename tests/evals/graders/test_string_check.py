"""string_check: eq, ne, like, ilike."""

from __future__ import annotations

import pytest

from distillery.evals.graders.registry import build_grader

from .support import run_grade


def _grader(operation: str, reference: str = "{{item.label}}") -> object:
    return build_grader(
        {
            "type": "string_check",
            "name": "label",
            "input": "{{sample.output_json.category}}",
            "reference": reference,
            "operation": operation,
        }
    )


@pytest.mark.parametrize(
    ("operation", "output", "label", "passed"),
    [
        ("eq", '{"category": "情報システム"}', "情報システム", True),
        ("eq", '{"category": "総務"}', "情報システム", False),
        ("ne", '{"category": "総務"}', "情報システム", True),
        ("ne", '{"category": "総務"}', "総務", False),
        ("like", '{"category": "IT support"}', "IT", True),
        ("like", '{"category": "IT support"}', "it", False),
        ("ilike", '{"category": "IT support"}', "it", True),
        ("ilike", '{"category": "Straße"}', "STRASSE", True),
        ("ilike", '{"category": "HR"}', "it", False),
    ],
)
def test_operations(operation: str, output: str, label: str, passed: bool) -> None:
    grade = run_grade(_grader(operation), output, {"label": label})  # type: ignore[arg-type]
    assert grade.passed is passed
    assert grade.score == (1.0 if passed else 0.0)
    assert (grade.reason is None) is passed


def test_eq_on_text_output() -> None:
    grader = build_grader(
        {
            "type": "string_check",
            "name": "exact",
            "input": "{{sample.output_text}}",
            "reference": "労務",
            "operation": "eq",
        }
    )
    assert run_grade(grader, "労務").passed is True
    assert run_grade(grader, "労務 ").passed is False
