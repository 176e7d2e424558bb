"""Online grading of a student's answer with a route's graders.

On the request path only the blocking graders run (``grade(..., blocking=True)``); the others run
after the answer has been sent. Each grader grades a sampled share of the answers
(``sample_rate``). A grader that errors (a judge whose provider is down) is recorded as an error
and blocks nothing unless the route says ``block_on_error``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from distillery.evals.graders.base import GradeInput, sample_from_output
from distillery.routing.table import RouteGrader
from distillery.wire.content import message_text


@dataclass
class Verdict:
    grades: list[dict[str, Any]] = field(default_factory=list)
    blocked_by: list[str] = field(default_factory=list)  # blocking graders that failed

    @property
    def passed(self) -> bool | None:
        """All graded graders passed (``None`` when none graded without an error)."""
        graded = [g["passed"] for g in self.grades if g.get("error") is None]
        return None if not graded else all(graded)

    def merge(self, other: Verdict) -> Verdict:
        return Verdict(self.grades + other.grades, self.blocked_by + other.blocked_by)


def grading_item(
    upstream: Mapping[str, Any], metadata: Mapping[str, str] | None, teacher: str | None
) -> dict[str, Any]:
    """The ``item`` namespace of a route grader: ``teacher`` is the teacher's answer (shadow mode
    and fallbacks), ``teacher_json`` the same parsed as JSON (``None`` when it is not JSON), as
    ``sample.output_json`` is the student's: ``{{item.teacher_json.category}}``."""
    messages = upstream.get("messages")
    messages = list(messages) if isinstance(messages, list) else []
    last_user = next(
        (m for m in reversed(messages) if isinstance(m, Mapping) and m.get("role") == "user"),
        None,
    )
    return {
        "input": message_text(last_user) if last_user is not None else "",
        "messages": messages,
        "teacher": teacher,
        "teacher_json": sample_from_output(teacher)["output_json"] if teacher is not None else None,
        "metadata": dict(metadata or {}),
    }


async def grade(
    graders: Sequence[RouteGrader],
    item: Mapping[str, Any],
    answer: str,
    *,
    blocking: bool,
    rng: random.Random | None = None,
) -> Verdict:
    """Grade ``answer`` with the blocking graders (or with the others)."""
    verdict = Verdict()
    compared = item.get("teacher") is not None
    chosen = [g for g in graders if g.blocking == blocking and (compared or not g.needs_teacher)]
    if not chosen:
        return verdict
    draw = (rng or random).random
    inp = GradeInput(item=item, sample=sample_from_output(answer))
    for rg in chosen:
        if rg.sample_rate < 1.0 and draw() >= rg.sample_rate:
            continue
        entry: dict[str, Any] = {"name": rg.name, "type": rg.type, "blocking": rg.blocking}
        try:
            result = await rg.grader.grade(inp)
        except Exception as exc:  # any grader failure is a recorded error, never a lost answer
            entry |= {"score": None, "passed": None, "error": str(exc)[:500]}
            if rg.blocking and rg.block_on_error:
                verdict.blocked_by.append(rg.name)
        else:
            passed = bool(result.passed) if result.passed is not None else result.score >= 1.0
            entry |= {"score": result.score, "passed": passed, "error": None}
            if rg.blocking and not passed:
                verdict.blocked_by.append(rg.name)
        verdict.grades.append(entry)
    return verdict
