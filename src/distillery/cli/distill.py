"""``distillery distill --prompt NAME``: captured traffic to a gated student in one command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from distillery.cli.context import services
from distillery.cli.output import console, err_console, fail, print_json, progress_bars
from distillery.errors import DistilleryError
from distillery.weights import DEMO_STUDENT


def _auto(value: str, kind: type[int] | type[float], name: str) -> Any:
    if value == "auto":
        return "auto"
    try:
        return kind(value)
    except ValueError:
        raise typer.BadParameter(f"{name} is 'auto' or a number, not {value!r}") from None


def distill(
    prompt: Annotated[
        str, typer.Option(help="The prompt to distill: the `prompt` metadata of its traffic.")
    ],
    student: Annotated[
        str, typer.Option(help="The student: an embedded model or a configured local one.")
    ] = DEMO_STUDENT,
    teacher: Annotated[
        str | None,
        typer.Option(help="The model whose answers are distilled [default: the most used]."),
    ] = None,
    prompt_version: Annotated[
        str | None, typer.Option(help="Only this prompt version [default: the newest].")
    ] = None,
    graders: Annotated[
        Path | None,
        typer.Option(help="A JSON file with the testing criteria [default: inferred]."),
    ] = None,
    test_fraction: Annotated[
        float | None,
        typer.Option(
            min=0.05, max=0.5, help="Share held out to test [default: 0.1, 0.2 under 200]."
        ),
    ] = None,
    n_epochs: Annotated[str, typer.Option(help="Epochs, or auto.")] = "auto",
    batch_size: Annotated[str, typer.Option(help="Examples per step, or auto.")] = "auto",
    lr_multiplier: Annotated[str, typer.Option(help="Learning-rate multiplier, or auto.")] = "auto",
    lora_r: Annotated[int | None, typer.Option(min=1, max=256, help="LoRA rank.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Tokens the students may answer with.")
    ] = None,
    gate_percent: Annotated[
        float,
        typer.Option(
            min=1, max=1000, help="The gate: the student's share of the teacher, lower bound."
        ),
    ] = 95.0,
    route_name: Annotated[
        str | None, typer.Option(help="The route to create [default: <prompt>-distilled].")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Folder for report.md and report.json.")
    ] = None,
    rft: Annotated[
        bool,
        typer.Option(
            "--rft/--no-rft",
            help="After the supervised student, reinforcement fine-tuning with the graders as "
            "the reward (on the training prompts it gets wrong); the route gets the better one.",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Snapshot a prompt's traffic, baseline the teacher and the base student, fine-tune, evaluate,
    compare and create its route in shadow, gated by that comparison. Run again to resume."""
    from distillery.demo.stack import LocalStack, generate_on_every_core
    from distillery.distill.pipeline import slug
    from distillery.distill.service import DistillationsService, new_runner_id

    svc = services()
    generate_on_every_core(svc)  # the baselines, the training and the student's eval take turns
    chosen_graders = None
    if graders is not None:
        try:
            chosen_graders = json.loads(graders.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"--graders: {exc}") from None
    options: dict[str, Any] = {
        "prompt": prompt,
        "student": student,
        "teacher": teacher,
        "prompt_version": prompt_version,
        "graders": chosen_graders,
        "test_fraction": test_fraction,
        "n_epochs": _auto(n_epochs, int, "--n-epochs"),
        "batch_size": _auto(batch_size, int, "--batch-size"),
        "learning_rate_multiplier": _auto(lr_multiplier, float, "--lr-multiplier"),
        "lora_r": lora_r,
        "max_tokens": max_tokens,
        "min_percent_of_teacher": gate_percent,
        "route_name": route_name,
        "rft": rft,
    }

    def say(message: str) -> None:
        if not json_out:
            err_console.print(f"[cyan]•[/cyan] {message}")

    distillations = DistillationsService(svc)
    runner = new_runner_id()
    try:
        created = distillations.create(
            {k: v for k, v in options.items() if v is not None}, runner_id=runner
        )
        say(f"distillation {created['id']}")
        # the stack: the job worker that trains and the event loop the eval runs use
        with LocalStack(svc), progress_bars(not json_out) as progress:
            result = distillations.run(created["id"], runner_id=runner, progress=progress, say=say)
    except DistilleryError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]: run the same command again to resume")
        raise typer.Exit(code=130) from None
    if result is None:
        record = distillations.get(created["id"])
        err_console.print(f"[red]error:[/red] {(record.get('error') or {}).get('message')}")
        raise typer.Exit(code=1)
    folder = (
        report or svc.settings.home / "reports" / f"distill-{slug(prompt)}-{result.fingerprint}"
    )
    result.write(folder)
    if json_out:
        print_json({"id": created["id"], **result.to_json()})
    else:
        from rich.markdown import Markdown

        console.print(Markdown(result.markdown()))
        console.print(f"report: {result.files['markdown']}")
