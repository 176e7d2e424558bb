"""``distillery jobs create|list|show|follow|cancel`` and ``distillery worker``.

A job runs in a worker: the one inside ``distillery serve``, or ``distillery worker`` on its own
(any number of them, sharing the database). ``follow`` draws a progress bar (step/total, loss)
until the job ends and exits 0 when it succeeded, 1 when it failed or was cancelled.
"""

from __future__ import annotations

import contextlib
import signal
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import orjson
import typer

from distillery.cli.context import services
from distillery.cli.options import key_values
from distillery.cli.output import console, err_console, print_json, progress_bars, table

app = typer.Typer(help="Fine-tuning jobs (OpenAI's /v1/fine_tuning/jobs).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
HyperOpt = Annotated[str | None, typer.Option(help='A number or "auto".')]


def _number(value: str | None, name: str) -> int | float | str | None:
    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError as exc:
        raise typer.BadParameter(f'{name}: expected a number or "auto", got {value!r}') from exc
    return int(number) if number.is_integer() and name != "learning_rate_multiplier" else number


def _option_values(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` with JSON values where they parse (``max_length=128``, ``packing=false``)."""
    out: dict[str, Any] = dict(key_values(items, "--option") or {})
    for key, value in out.items():
        with contextlib.suppress(orjson.JSONDecodeError):
            out[key] = orjson.loads(value)
    return out


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _print_job(job: dict[str, Any]) -> None:
    hyper = job.get("hyperparameters") or {}
    rows = [
        ["id", job["id"]],
        ["status", job["status"]],
        ["model", job["model"]],
        ["fine_tuned_model", job.get("fine_tuned_model")],
        ["training_file", job["training_file"]],
        ["validation_file", job.get("validation_file")],
        ["hyperparameters", ", ".join(f"{k}={v}" for k, v in hyper.items())],
        ["seed", job.get("seed")],
        ["created_at", _when(job.get("created_at"))],
        ["finished_at", _when(job.get("finished_at"))],
        ["trained_tokens", job.get("trained_tokens")],
    ]
    if job.get("error"):
        rows.append(["error", f"{job['error'].get('code')}: {job['error'].get('message')}"])
    table(None, ["field", "value"], rows)


@app.command()
def create(
    model: Annotated[str, typer.Option(help="Base model (a local model or a provider's).")],
    training_file: Annotated[
        str, typer.Option(help="A file id, or a local JSONL path (uploaded first).")
    ],
    validation_file: Annotated[
        str | None, typer.Option(help="A file id, or a local JSONL path.")
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="Up to 64 characters in the model id.")] = None,
    n_epochs: HyperOpt = None,
    batch_size: HyperOpt = None,
    learning_rate_multiplier: HyperOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed (generated when absent).")] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", "-m", help="key=value, repeatable.")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="Local trainer option key=value (max_length=128, lora_r=8...)."
        ),
    ] = None,
    follow: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a fine-tuning job."""
    svc = services().fine_tuning

    def file_id(value: str) -> str:
        path = Path(value)
        return svc.upload(path).id if path.is_file() else value

    hyper = {
        "n_epochs": _number(n_epochs, "n_epochs"),
        "batch_size": _number(batch_size, "batch_size"),
        "learning_rate_multiplier": _number(learning_rate_multiplier, "learning_rate_multiplier"),
    }
    body: dict[str, Any] = {
        "model": model,
        "training_file": file_id(training_file),
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {k: v for k, v in hyper.items() if v is not None}},
        },
    }
    if validation_file:
        body["validation_file"] = file_id(validation_file)
    extra = {"suffix": suffix, "seed": seed, "metadata": key_values(metadata, "--metadata")}
    body.update({k: v for k, v in extra.items() if v is not None})
    options = _option_values(option)
    if options:
        body["distillery"] = options
    job = svc.create(body)
    if follow:
        _follow(job["id"], json_out)
        return
    if json_out:
        print_json(job)
    else:
        err_console.print(f"created {job['id']} ({job['status']})")
        _print_job(job)


@app.command("list")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List fine-tuning jobs, newest first."""
    page = services().fine_tuning.list(limit=limit, status=status)
    if json_out:
        print_json(page.data)
        return
    table(
        "fine-tuning jobs",
        ["id", "status", "model", "fine_tuned_model", "created"],
        [
            [j["id"], j["status"], j["model"], j.get("fine_tuned_model"), _when(j["created_at"])]
            for j in page.data
        ],
    )


@app.command()
def show(
    job_id: str,
    events: Annotated[int, typer.Option(help="How many recent events to show.")] = 10,
    json_out: JsonOpt = False,
) -> None:
    """Show a job, its latest events and its checkpoints."""
    svc = services().fine_tuning
    job = svc.retrieve(job_id)
    recent = svc.events(job_id, limit=max(1, min(events, 100))).data
    checkpoints = svc.checkpoints(job_id, limit=100).data
    if json_out:
        print_json({**job, "events": recent, "checkpoints": checkpoints})
        return
    _print_job(job)
    if checkpoints:
        table(
            "checkpoints",
            ["step", "model", "train_loss", "valid_loss", "valid_accuracy"],
            [
                [
                    c["step_number"],
                    c["fine_tuned_model_checkpoint"],
                    c["metrics"].get("train_loss"),
                    c["metrics"].get("valid_loss"),
                    c["metrics"].get("valid_mean_token_accuracy"),
                ]
                for c in reversed(checkpoints)
            ],
        )
    if events > 0:
        table(
            "events",
            ["time", "level", "message"],
            [[_when(e["created_at"]), e["level"], e["message"]] for e in reversed(recent)],
        )


def _follow(job_id: str, json_out: bool, timeout: float | None = None) -> None:
    svc = services().fine_tuning
    try:
        with progress_bars(enabled=not json_out) as progress:
            job = svc.wait(job_id, progress=progress, timeout_s=timeout)
    except TimeoutError as exc:
        err_console.print(f"[red]timeout:[/red] {exc} (is a worker running?)")
        raise typer.Exit(code=1) from None
    if json_out:
        print_json(job)
    else:
        line = f"{job['id']} {job['status']}"
        if job.get("fine_tuned_model"):
            line += f": {job['fine_tuned_model']}"
        if job.get("error"):
            line += f": {job['error'].get('message')}"
        console.print(line)
    if job["status"] != "succeeded":
        raise typer.Exit(code=1)


@app.command()
def follow(
    job_id: str,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds (exit 1).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Follow a job until it ends (exit 0 succeeded, 1 failed, cancelled or timed out)."""
    _follow(job_id, json_out, timeout)


@app.command()
def cancel(job_id: str, json_out: JsonOpt = False) -> None:
    """Cancel a job that has not ended."""
    job = services().fine_tuning.cancel(job_id)
    if json_out:
        print_json(job)
    else:
        typer.echo(f"{job['id']} {job['status']}")


def worker(
    poll: Annotated[float, typer.Option(help="Seconds between polls of the store.")] = 0.5,
) -> None:
    """Run a job worker until interrupted (Ctrl-C or SIGTERM); jobs held are given back."""
    from distillery.worker import JobWorker

    job_worker = JobWorker(services().fine_tuning, poll_s=poll)

    def stop(signum: int, frame: FrameType | None) -> None:
        job_worker.stop()  # the loop ends after its current tick and gives its jobs back

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    err_console.print(f"worker {job_worker.worker_id} polling every {poll}s (Ctrl-C to stop)")
    job_worker.run()
