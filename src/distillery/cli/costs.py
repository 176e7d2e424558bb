"""``distillery costs report``."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from distillery.cli.context import services
from distillery.cli.output import console, print_json, table

app = typer.Typer(help="Spend, savings and payback.", no_args_is_help=True)


@app.command()
def report(
    group_key: Annotated[str, typer.Option(help="Metadata key that names the prompt.")] = "prompt",
    days: Annotated[float | None, typer.Option(help="Only the last N days.")] = None,
    min_examples: Annotated[int, typer.Option(help="Examples needed to distil a prompt.")] = 100,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Spend per prompt and model, ranked; "distil first" candidates; students' savings."""
    svc = services()
    since = int(time.time() - days * 86_400) if days else None
    data = svc.costs.report(group_key=group_key, since=since, min_examples=min_examples)
    if json_out:
        print_json(data)
        return
    table(
        f"spend per {group_key} and model",
        ["prompt", "model", "requests", "cost $", "$ / 1k req", "tokens / req", "$ / day"],
        [
            [
                s["prompt"],
                s["model"],
                s["requests"],
                f"{s['cost_usd']:.4f}",
                f"{s['cost_per_1k']:.4f}",
                f"{s['tokens_per_request']:.0f}",
                f"{s['daily_spend']:.4f}",
            ]
            for s in data["by_prompt"]
        ],
    )
    if data["candidates"]:
        table(
            "distil first",
            ["prompt", "teacher", "requests", "$ / day", "enough examples"],
            [
                [
                    c["prompt"],
                    c["model"],
                    c["requests"],
                    f"{c['daily_spend']:.4f}",
                    "yes" if c["enough_examples"] else "no",
                ]
                for c in data["candidates"]
            ],
        )
    for s in data["savings"]:
        payback = "never" if s["payback_days"] is None else f"{s['payback_days']:.1f} days"
        console.print(
            f"[bold]{s['student_model']}[/bold] vs {s['teacher_model']}: "
            f"${s['student_cost_per_1k']:.4f} vs ${s['teacher_cost_per_1k']:.4f} per 1k requests, "
            f"saves ${s['daily_saving']:.2f}/day, payback {payback}"
        )
