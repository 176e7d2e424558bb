"""Progress reporting from the core to whatever edge is listening (CLI bars, job events)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """``task`` names the bar; ``completed``/``total`` move it; ``info`` carries figures (loss...)."""

    task: str
    completed: float
    total: float | None = None
    message: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]


def report(progress: ProgressCallback | None, event: ProgressEvent) -> None:
    if progress is not None:
        progress(event)
