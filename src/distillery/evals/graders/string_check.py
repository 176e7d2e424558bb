"""``string_check``: compare a rendered input with a rendered reference (OpenAI's grader type).

Operations, as in OpenAI's API: ``eq`` equal, ``ne`` not equal, ``like`` the input contains the
reference (case-sensitive), ``ilike`` the same ignoring case (``str.casefold``, which also folds
full Unicode case such as "ß"/"SS"). Score 1.0 when the check holds, else 0.0.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from distillery.evals.graders.base import Grade, GradeInput, GraderConfig, preview
from distillery.evals.graders.templating import render

Operation = Literal["eq", "ne", "like", "ilike"]


class StringCheckConfig(GraderConfig):
    type: Literal["string_check"] = "string_check"
    name: str
    input: str
    reference: str
    operation: Operation


def check(operation: Operation, value: str, reference: str) -> bool:
    match operation:
        case "eq":
            return value == reference
        case "ne":
            return value != reference
        case "like":
            return reference in value
        case "ilike":
            return reference.casefold() in value.casefold()


class StringCheckGrader:
    type: ClassVar[str] = "string_check"

    def __init__(self, config: StringCheckConfig) -> None:
        self.config = config
        self.name = config.name

    async def grade(self, inp: GradeInput) -> Grade:
        value = render(self.config.input, inp)
        reference = render(self.config.reference, inp)
        ok = check(self.config.operation, value, reference)
        reason = (
            None if ok else f"{self.config.operation}: {preview(value)!r} vs {preview(reference)!r}"
        )
        return Grade(
            score=1.0 if ok else 0.0,
            passed=ok,
            reason=reason,
            details={"input": value, "reference": reference, "operation": self.config.operation},
        )
