"""``distillery annotations create|list|next|submit``: review and correct stored outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from distillery.cli.context import services
from distillery.cli.datasets import timestamp
from distillery.cli.options import key_values
from distillery.cli.output import err_console, print_json, progress_bars, table

app = typer.Typer(help="Annotation queues: review, correct, rate, accept.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
EXIT_EMPTY = 3


def _print_item(view: dict[str, Any]) -> None:
    typer.echo(
        f"item {view['id']} (version {view['version']}, {view['status']}, "
        f"completion {view['completion_id']}, model {view['model']})"
    )
    for message in view["input"]["messages"]:
        typer.echo(f"[{message.get('role')}] {message.get('content')}")
    typer.echo(f"[assistant] {view['output']}")
    if view["corrected_output"] is not None:
        typer.echo(f"[corrected] {view['corrected_output']}")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Queue name.")],
    model: Annotated[str | None, typer.Option(help="Completions of this model.")] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", "-m", help="key=value filter (repeatable).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Created at or after (Unix s or ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Created at or before (Unix s or ISO).")] = None,
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="Completion id (repeatable).")
    ] = None,
    eval_run: Annotated[
        str | None, typer.Option(help="Build from this eval run's graded items.")
    ] = None,
    priority: Annotated[
        str, typer.Option(help="teacher_failed_first, oldest, newest or random.")
    ] = "teacher_failed_first",
    teacher_run: Annotated[str | None, typer.Option(help="Eval run of the teacher.")] = None,
    student_run: Annotated[str | None, typer.Option(help="Eval run of the student.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random order.")] = 0,
    claim_timeout: Annotated[int, typer.Option(min=1, help="Seconds a claim lasts.")] = 1800,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many items.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a review queue from stored completions or an eval run."""
    source: dict[str, Any]
    if eval_run is not None:
        source = {"type": "eval_run", "run_id": eval_run}
    else:
        source = {
            "type": "completions",
            "model": model,
            "metadata": key_values(metadata),
            "created_after": timestamp(since),
            "created_before": timestamp(until),
            "completion_ids": ids or None,
        }
    spec = {
        "name": name,
        "source": source,
        "priority": priority,
        "teacher_run_id": teacher_run,
        "student_run_id": student_run,
        "seed": seed,
        "claim_timeout_s": claim_timeout,
        "limit": limit,
    }
    svc = services().annotations
    with progress_bars(not json_out) as progress:
        queue = svc.create_queue(spec, progress=progress)
    view = svc.queue_view(queue)
    if json_out:
        print_json(view)
    else:
        typer.echo(f"{queue.id} {queue.name}: {queue.counts['total']} items ({queue.priority})")


@app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """List queues with their counts."""
    svc = services().annotations
    data = [svc.queue_view(q) for q in svc.list_queues(limit=100).data]
    if json_out:
        print_json(data)
        return
    rows = [
        [
            q["id"],
            q["name"],
            q["priority"],
            q["counts"]["pending"],
            q["counts"]["claimed"],
            q["counts"]["accepted"],
            q["counts"]["skipped"],
        ]
        for q in data
    ]
    table(
        "annotation queues",
        ["id", "name", "priority", "pending", "claimed", "accepted", "skipped"],
        rows,
    )


@app.command("next")
def next_(
    queue: Annotated[str, typer.Argument(help="Queue id.")],
    reviewer: Annotated[str, typer.Option(help="Your name (the claim holder).")],
    json_out: JsonOpt = False,
) -> None:
    """Claim the next item to review (exit code 3 when the queue has nothing left)."""
    svc = services().annotations
    item = svc.claim(queue, reviewer)
    if item is None:
        if json_out:
            print_json(None)
        else:
            err_console.print("nothing left to review in this queue")
        raise typer.Exit(code=EXIT_EMPTY)
    view = svc.item_view(item)
    if json_out:
        print_json(view)
    else:
        _print_item(view)


@app.command()
def submit(
    queue: Annotated[str, typer.Argument(help="Queue id.")],
    item: Annotated[str, typer.Argument(help="Item id.")],
    version: Annotated[int, typer.Option(help="The item version you reviewed (from `next`).")],
    output: Annotated[str | None, typer.Option(help="Corrected output text.")] = None,
    output_file: Annotated[
        Path | None, typer.Option(help="Corrected output from a UTF-8 file.")
    ] = None,
    rating: Annotated[int | None, typer.Option(min=1, max=5, help="Rating 1-5.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    comment: Annotated[str | None, typer.Option(help="Comment.")] = None,
    accept: Annotated[bool, typer.Option("--accept", help="Accept the item.")] = False,
    skip: Annotated[bool, typer.Option("--skip", help="Skip the item.")] = False,
    release: Annotated[bool, typer.Option("--release", help="Give the item back.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Save a review: correction, rating, tags, comment; accept, skip or release."""
    if sum([accept, skip, release]) > 1:
        raise typer.BadParameter("choose one of --accept, --skip, --release")
    update: dict[str, Any] = {"version": version}
    if output_file is not None:
        update["corrected_output"] = output_file.read_text(encoding="utf-8")
    elif output is not None:
        update["corrected_output"] = output
    if rating is not None:
        update["rating"] = rating
    if tag:
        update["tags"] = tag
    if comment is not None:
        update["comment"] = comment
    update["action"] = "accept" if accept else "skip" if skip else "release" if release else "save"
    svc = services().annotations
    saved = svc.submit(queue, item, update)
    view = svc.item_view(saved)
    if json_out:
        print_json(view)
    else:
        typer.echo(f"item {saved.id}: {saved.status}, version {saved.version}")
