"""Shared CLI output: JSON for scripts, Rich tables and progress bars for people."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from distillery.errors import DistilleryError
from distillery.progress import ProgressEvent

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    console.print(t)


def fail(exc: DistilleryError) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(code=2 if exc.status < 500 else 1)


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Callable[[ProgressEvent], None]]:
    """A ``progress`` callback that draws one Rich bar per ``event.task``."""
    if not enabled:
        yield lambda _e: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def callback(event: ProgressEvent) -> None:
            info = event.message or " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in event.info.items()
            )
            if event.task not in tasks:
                tasks[event.task] = progress.add_task(event.task, total=event.total, info=info)
            progress.update(
                tasks[event.task], completed=event.completed, total=event.total, info=info
            )

        yield callback
