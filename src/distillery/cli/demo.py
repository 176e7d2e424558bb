"""``distillery demo``: the main job, offline, on an embedded student."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from distillery.cli.context import services
from distillery.cli.output import console, err_console, print_json, progress_bars
from distillery.weights import DEMO_STUDENT


class Method(StrEnum):
    lora = "lora"
    full = "full"


def demo(
    student: Annotated[
        str,
        typer.Option(
            help="The student to distill: gemma-3-270m (multilingual, the default), "
            "smollm2-135m-instruct (small, English-centric) or a configured local model."
        ),
    ] = DEMO_STUDENT,
    teacher: Annotated[
        str | None,
        typer.Option(help="A configured teacher model (e.g. gpt-4o): collect its outputs live."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, max=20, help="LoRA epochs [default: the demo's recipe].")
    ] = None,
    lr_multiplier: Annotated[
        float | None, typer.Option(help="Learning-rate multiplier (LoRA base rate 2e-4).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Examples per step.")] = None,
    train_limit: Annotated[int | None, typer.Option(help="Use only N train questions.")] = None,
    test_limit: Annotated[int | None, typer.Option(help="Use only N test questions.")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    method: Annotated[
        Method | None,
        typer.Option(help="LoRA adapters or full fine-tuning [default: lora]."),
    ] = None,
    corrections: Annotated[
        bool,
        typer.Option(
            "--corrections/--no-corrections",
            help="Apply the reviewers' corrections of the teacher's mistakes before distilling "
            "(--no-corrections distills the raw teacher outputs).",
        ),
    ] = True,
    requests_per_day: Annotated[float, typer.Option(help="Traffic level for payback.")] = 10_000,
    every_epoch: Annotated[
        bool, typer.Option(help="Also evaluate every epoch's checkpoint on the test split.")
    ] = False,
    rollout: Annotated[
        bool,
        typer.Option(
            "--rollout/--no-rollout",
            help="After the report, move the held-out traffic to the student through a route: "
            "shadow, the parity gate, canary, full, and an incident that falls back and rolls "
            "back.",
        ),
    ] = True,
    rft: Annotated[
        bool,
        typer.Option(
            "--rft/--no-rft",
            help="After the supervised student, a reinforcement fine-tuning stage with the "
            "demo's graders as the reward (category, schema, the reason's language).",
        ),
    ] = False,
    rft_epochs: Annotated[
        int | None,
        typer.Option(min=1, max=20, help="Passes of the RFT stage over its prompts [default: 2]."),
    ] = None,
    rft_group_size: Annotated[
        int | None,
        typer.Option(min=2, max=64, help="Answers per prompt in the RFT stage [default: 8]."),
    ] = None,
    rft_max_prompts: Annotated[
        int | None,
        typer.Option(min=1, help="Prompts the RFT stage trains on at most [default: 32]."),
    ] = None,
    gate_percent: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            max=100,
            help="The rollout's parity gate: the student's share of the teacher's pass rate, at "
            "the lower end of its 95% interval [default: 90].",
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Where to write the HTML report.")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Capture → evaluate → distill → evaluate → report → rollout, on the inquiry-routing demo
    data."""
    from distillery.demo.report import print_report, rollout_summary, write_html
    from distillery.demo.rollout import RolloutOptions
    from distillery.demo.run import Demo, DemoOptions, RftOptions

    svc = services()
    recipe = {
        "n_epochs": epochs,
        "learning_rate_multiplier": lr_multiplier,
        "batch_size": batch_size,
        "lora_r": lora_r,
        "method": method.value if method is not None else None,
    }
    rft_recipe = {
        k: v
        for k, v in {
            "n_epochs": rft_epochs,
            "group_size": rft_group_size,
            "max_prompts": rft_max_prompts,
        }.items()
        if v is not None
    }
    options = DemoOptions(
        student=student,
        teacher=teacher,
        corrections=corrections,
        train_limit=train_limit,
        test_limit=test_limit,
        requests_per_day=requests_per_day,
        evaluate_checkpoints=every_epoch,
        rft=rft,
        rft_options=RftOptions(**rft_recipe),  # type: ignore[arg-type]
        rollout=rollout,
        rollout_options=RolloutOptions()
        if gate_percent is None
        else RolloutOptions(min_percent_of_teacher=gate_percent),
        **{k: v for k, v in recipe.items() if v is not None},  # type: ignore[arg-type]
    )
    say = (lambda m: err_console.print(f"[cyan]•[/cyan] {m}")) if not json_out else (lambda m: None)
    try:
        with progress_bars(not json_out) as progress:
            result = Demo(svc, options, progress=progress, say=say).run()
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]: run the demo again to resume")
        raise typer.Exit(code=130) from None
    path = report or svc.settings.home / "reports" / "demo-report.html"
    write_html(result, path)
    if json_out:
        print_json(
            {
                "results": [r.__dict__ for r in result.results],
                "checkpoints": [{"step": step, **r.__dict__} for step, r in result.checkpoints],
                "fine_tuned_model": result.fine_tuned_model,
                "job_id": result.job_id,
                "corrected_examples": result.corrected_examples,
                "trained_tokens": result.trained_tokens,
                "training_seconds": result.training_seconds,
                "training_cost_usd": result.training_cost_usd,
                "teacher_cost_per_1k": result.teacher_cost_per_1k,
                "student_cost_per_1k": result.student_cost_per_1k,
                "payback_days": result.payback_days,
                "rft": result.rft.__dict__ if result.rft else None,
                "rollout": rollout_summary(result.rollout) if result.rollout else None,
                "html": str(path),
            }
        )
    else:
        print_report(result, console)
