"""Option parsing shared by the CLI's commands (one home: ``--metadata key=value`` and friends)."""

from __future__ import annotations

from typing import Annotated

import typer

# what a command that asks a teacher for data takes (synthesis, relabelling)
MaxUsdOpt = Annotated[
    float | None, typer.Option(help="Stop at this spend (needs the teacher's price).")
]
MaxCallsOpt = Annotated[int | None, typer.Option(min=1, help="Stop after this many teacher calls.")]
ConcurrencyOpt = Annotated[int, typer.Option(min=1, max=64, help="Teacher calls at once.")]


def key_values(items: list[str] | None, option: str = "--metadata") -> dict[str, str] | None:
    """Repeated ``key=value`` options as a dict (``None`` when none were given).

    The value may hold ``=`` (split at the first one); an item without ``=`` or with an empty
    key is a usage error (exit code 2) naming the option.
    """
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{option}: expected key=value, got {item!r}")
        out[key] = value
    return out
