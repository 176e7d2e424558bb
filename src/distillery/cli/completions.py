"""``distillery completions list|show|import|export``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from distillery.capture.importer import export_lines
from distillery.cli.context import services
from distillery.cli.options import key_values
from distillery.cli.output import err_console, print_json, progress_bars, table
from distillery.wire.chat import output_text

app = typer.Typer(help="Stored completions.", no_args_is_help=True)

MetaOpt = Annotated[
    list[str] | None, typer.Option("--metadata", "-m", help="key=value filter (repeatable).")
]


@app.command("list")
def list_(
    model: Annotated[str | None, typer.Option(help="Filter by model.")] = None,
    metadata: MetaOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    order: Annotated[str, typer.Option(help="asc or desc")] = "desc",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List stored completions, newest first."""
    page = services().stored_completions.list(
        model=model,
        metadata=key_values(metadata),
        limit=limit,
        order="asc" if order == "asc" else "desc",
    )
    if json_out:
        print_json([c.to_chat_completion() for c in page.data])
        return
    rows = [
        [
            c.id,
            c.model,
            c.status,
            ",".join(f"{k}={v}" for k, v in c.metadata.items()),
            output_text(c.response or {})[:60].replace("\n", " "),
        ]
        for c in page.data
    ]
    table("stored completions", ["id", "model", "status", "metadata", "output"], rows)


@app.command()
def show(completion_id: str, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one stored completion."""
    c = services().stored_completions.get(completion_id)
    if json_out:
        print_json(
            {
                **c.to_chat_completion(),
                "request": c.request,
                "latency_ms": c.latency_ms,
                "cost_usd": c.cost_usd,
                "status": c.status,
                "error": c.error,
            }
        )
        return
    for m in c.messages:
        typer.echo(f"[{m.get('role')}] {m.get('content')}")
    typer.echo(f"[assistant → {c.model}] {output_text(c.response or {})}")
    typer.echo(f"metadata={c.metadata} latency_ms={c.latency_ms} cost_usd={c.cost_usd}")


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="JSONL file ('-' for stdin).")],
    model: Annotated[str | None, typer.Option(help="Model for lines that name none.")] = None,
    metadata: MetaOpt = None,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the valid lines, report the others.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Import exchanges, stored-completion exports or fine-tuning examples (OpenAI or
    LangSmith's "OpenAI Fine-Tuning JSONL") as stored completions; all or nothing by default."""
    lines = sys.stdin.buffer if str(path) == "-" else path.open("rb")
    with lines, progress_bars(not json_out) as progress:
        svc = services()
        rep = svc.stored_completions.import_jsonl(
            lines,
            default_model=model,
            metadata=key_values(metadata),
            prices=svc.prices,
            progress=progress,
            skip_invalid=skip_invalid,
        )
    if json_out:
        print_json({"imported": rep.imported, "errors": rep.errors})
    else:
        for e in rep.errors[:50]:
            err_console.print(f"[red]{e}[/red]")
        typer.echo(f"imported {rep.imported} completions")
    if rep.errors and not skip_invalid:
        raise typer.Exit(code=2)


@app.command()
def export(
    output: Annotated[Path, typer.Argument(help="Output JSONL ('-' for stdout).")],
    model: Annotated[str | None, typer.Option()] = None,
    metadata: MetaOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="completions or finetune")] = "completions",
) -> None:
    """Export stored completions as JSONL."""
    items = services().stored_completions.iterate(model=model, metadata=key_values(metadata))
    out = sys.stdout.buffer if str(output) == "-" else output.open("wb")
    count = 0
    with out:
        for line in export_lines(items, fmt=fmt):
            out.write(line)
            count += 1
    err_console.print(f"exported {count} completions")
