"""A route's mode: who answers the requests the route matches (``distillery.routing``).

- ``off``: the teacher answers everything;
- ``shadow``: the teacher answers; the student answers a sample in the background, both are
  stored and the student's answer is graded against the teacher's;
- ``canary``: ``percent`` of the requests go to the student, sticky by ``sticky_key`` (a
  metadata key such as ``user``) or by a hash of the request;
- ``full``: the student answers everything.

The modes in which the student answers users (``student_answers``: canary, full) are entered
through the parity gate (``promote``) and left by a rollback to ``shadow`` or ``off``, by hand or
when the student's online pass rate falls below the route's floor.

A mode is its string everywhere outside Python (JSON, the database, the CLI): ``RouteMode`` is a
``StrEnum``, validated and documented by pydantic as the ``Literal`` of its values, so the OpenAPI
document keeps an inline ``enum`` and a wrong value gets the same 400 as before. A new mode is a
member here, in the ``Literal`` of the moves it may be the target of, and, when it moves traffic
in a new way, its behaviour in ``routing`` (``table.Route.to_student``, the gateway).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema


class RouteMode(StrEnum):
    OFF = "off"
    SHADOW = "shadow"
    CANARY = "canary"
    FULL = "full"

    def __repr__(self) -> str:
        # the value, as pydantic quotes a Literal's choices in its errors ("'shadow' or 'off'")
        return repr(self.value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """The ``Literal`` of the values (an inline ``enum`` in JSON schema), then the member."""
        return core_schema.no_info_after_validator_function(
            cls, core_schema.literal_schema([mode.value for mode in cls])
        )

    @property
    def student_answers(self) -> bool:
        """The student answers users (canary, full): entered through the parity gate, and
        rolled back when its online pass rate falls below the floor."""
        return self in PROMOTE_TARGETS

    @property
    def splits_traffic(self) -> bool:
        """The route's ``percent`` of the requests goes to the student (canary)."""
        return self is RouteMode.CANARY

    @property
    def shadows(self) -> bool:
        """The teacher answers and the student answers a sample in the background (shadow)."""
        return self is RouteMode.SHADOW


PromoteTarget = Literal[RouteMode.CANARY, RouteMode.FULL]  # the student answers users
RollbackTarget = Literal[RouteMode.SHADOW, RouteMode.OFF]  # the teacher answers users
PROMOTE_TARGETS: tuple[RouteMode, ...] = get_args(PromoteTarget)
ROLLBACK_TARGETS: tuple[RouteMode, ...] = get_args(RollbackTarget)


def either(modes: tuple[RouteMode, ...]) -> str:
    """``'canary' or 'full'``: the modes a move accepts, for its error message."""
    quoted = [repr(mode) for mode in modes]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
