"""``distillery datasets create|list|show|export|import|synthesize``."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from distillery.cli.context import services
from distillery.cli.options import ConcurrencyOpt, MaxCallsOpt, MaxUsdOpt, key_values
from distillery.cli.output import console, err_console, fail, print_json, progress_bars, table
from distillery.datasets.service import DatasetsService
from distillery.errors import DistilleryError, InvalidRequestError
from distillery.progress import ProgressCallback
from distillery.services import Services

app = typer.Typer(help="Versioned training datasets.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
VersionOpt = Annotated[
    int | None, typer.Option("--version", "-v", help="Version (default latest).")
]
SplitRatios = Annotated[
    str | None,
    typer.Option(help="Ratios, e.g. train=0.8,validation=0.1,test=0.1 (must sum to 1)."),
]
DedupeOpt = Annotated[str, typer.Option(help="exact, near (embeddings) or none.")]


def ratios(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError as exc:
            raise typer.BadParameter(f"expected split=ratio, got {part!r}") from exc
    return out


def timestamp(text: str | None) -> int | None:
    """Unix seconds or an ISO 8601 date/time."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError as exc:
        raise typer.BadParameter(f"expected Unix seconds or an ISO date, got {text!r}") from exc


def _print_version(view: dict[str, Any]) -> None:
    stats = view["stats"]
    typer.echo(f"{view['dataset_id']} version {view['version']} ({view['id']})")
    rows = [
        [s, v["examples"], v["tokens"], v["corrected"]]
        for s, v in stats.get("splits", {}).items()
        if v["examples"]
    ]
    table("splits", ["split", "examples", "tokens", "corrected"], rows)
    dup = stats.get("duplicates", {})
    typer.echo(
        f"selected {stats.get('selected')}  examples {stats.get('examples')}  "
        f"duplicates {dup.get('found', 0)} ({dup.get('mode')}, removed {dup.get('removed', 0)})  "
        f"invalid {stats.get('invalid', 0)}  tokenizer {stats.get('tokenizer')}"
    )
    cost = stats.get("training_cost") or {}
    usd = cost.get("usd")
    typer.echo(
        f"training: {cost.get('billed_tokens')} billed tokens over {cost.get('epochs')} epoch(s)"
        + (f" = ${usd:.4f} at {cost.get('model')} prices" if usd is not None else "")
    )
    for warning in stats.get("warnings", []):
        err_console.print(f"[yellow]warning:[/yellow] {warning}")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Dataset name (a new version if it exists).")],
    model: Annotated[str | None, typer.Option(help="Completions of this model.")] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", "-m", help="key=value filter (repeatable).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Created at or after (Unix s or ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Created at or before (Unix s or ISO).")] = None,
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="Completion id (repeatable).")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Accepted items of this queue.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    split: SplitRatios = None,
    dedupe: DedupeOpt = "exact",
    near_threshold: Annotated[float, typer.Option(help="Cosine for near-duplicates.")] = 0.95,
    keep_duplicates: Annotated[
        bool, typer.Option(help="Keep duplicates (on their original's side of the split).")
    ] = False,
    prompt_version_key: Annotated[str, typer.Option(help="Metadata key of prompt versions.")] = (
        "prompt_version"
    ),
    strict: Annotated[bool, typer.Option(help="Refuse mixed prompt versions.")] = False,
    acknowledge_terms: Annotated[
        bool,
        typer.Option(help="Build it although some teachers' terms restrict training (recorded)."),
    ] = False,
    training_model: Annotated[
        str | None, typer.Option(help="Price the training at this model's rate.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs for the estimate.")] = None,
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Snapshot stored completions (with accepted corrections) as a new dataset version."""
    svc = services()
    spec = {
        "source": {
            "model": model,
            "metadata": key_values(metadata),
            "created_after": timestamp(since),
            "created_before": timestamp(until),
            "completion_ids": ids or None,
            "queue_id": queue,
            "limit": limit,
        },
        "split": ratios(split),
        "dedupe": dedupe,
        "near_threshold": near_threshold,
        "keep_duplicates": keep_duplicates,
        "prompt_version_key": prompt_version_key,
        "strict": strict,
        "acknowledge_terms": acknowledge_terms,
        "training_model": training_model,
        "epochs": epochs,
    }
    with progress_bars(not json_out) as progress:
        version = svc.datasets.create_version(
            name, spec, description=description, progress=progress
        )
    view = DatasetsService.version_view(version)
    if json_out:
        print_json(view)
    else:
        _print_version(view)


@app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """List datasets, newest first."""
    svc = services().datasets
    data = [svc.dataset_view(d) for d in svc.list(limit=100).data]
    if json_out:
        print_json(data)
        return
    table(
        "datasets",
        ["id", "name", "latest version", "description"],
        [[d["id"], d["name"], d["latest_version"], d["description"]] for d in data],
    )


@app.command()
def show(
    dataset: Annotated[str, typer.Argument(help="Dataset id or name.")],
    version: VersionOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a dataset version: splits, tokens, duplicates, cost estimate, warnings."""
    svc = services().datasets
    ds = svc.get(dataset)
    view = svc.dataset_view(ds, svc.get_version(ds.id, version))
    if json_out:
        print_json(view)
        return
    typer.echo(f"{ds.name} ({ds.id}), {ds.latest_version} version(s)")
    _print_version(view["version"])


@app.command()
def export(
    dataset: Annotated[str, typer.Argument(help="Dataset id or name.")],
    output: Annotated[
        Path | None, typer.Argument(help="Output JSONL ('-' for stdout); omit with --to-file.")
    ] = None,
    version: VersionOpt = None,
    split: Annotated[str, typer.Option(help="train, validation, test or all.")] = "train",
    to_file: Annotated[
        bool, typer.Option("--to-file", help="Upload as a fine-tune file; print its id.")
    ] = False,
    lineage: Annotated[
        bool,
        typer.Option(
            "--lineage",
            help="Mark each line's origin (captured, imported, synthetic, relabel) under "
            "'metadata' (not with --to-file).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a split as OpenAI fine-tuning JSONL, to a path or as a file id."""
    svc = services().datasets
    chosen = None if split == "all" else split
    if lineage and to_file:
        raise typer.BadParameter(
            "--lineage adds a 'metadata' field to every line, and a fine-tune file holds the "
            "lines exactly as OpenAI's format has them: export to a path instead",
            param_hint="--lineage",
        )
    if to_file:
        record = svc.export_to_file(dataset, version=version, split=chosen)
        if json_out:
            print_json(record.to_file_object())
        else:
            typer.echo(record.id)
        return
    if output is None:
        raise typer.BadParameter("give an OUTPUT path (or '-'), or --to-file")
    if str(output) == "-":
        count = svc.export_jsonl(
            dataset, sys.stdout.buffer, version=version, split=chosen, lineage=lineage
        )
    else:
        count = svc.export_jsonl(dataset, output, version=version, split=chosen, lineage=lineage)
    if json_out and str(output) != "-":
        print_json({"path": str(output), "examples": count, "split": split})
    else:
        err_console.print(f"exported {count} examples ({split})")


@app.command("import")
def import_(
    name: Annotated[str, typer.Argument(help="Dataset name (a new version if it exists).")],
    path: Annotated[Path, typer.Argument(help="Fine-tuning JSONL ('-' for stdin).")],
    split: SplitRatios = None,
    dedupe: DedupeOpt = "exact",
    training_model: Annotated[str | None, typer.Option(help="Price the training.")] = None,
    description: Annotated[str | None, typer.Option(help="Description.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Import fine-tuning JSONL as a dataset version (bad lines are reported by number)."""
    svc = services().datasets
    spec = {"split": ratios(split), "dedupe": dedupe, "training_model": training_model}
    stream = sys.stdin.buffer if str(path) == "-" else path.open("rb")
    with stream, progress_bars(not json_out) as progress:
        version = svc.import_jsonl(
            name,
            stream,
            spec,
            description=description,
            source_name=path.name,
            progress=progress,
        )
    view = DatasetsService.version_view(version)
    if json_out:
        print_json(view)
    else:
        _print_version(view)


class Language(StrEnum):
    en = "en"
    ja = "ja"


class Length(StrEnum):
    short = "short"
    medium = "medium"
    long = "long"


def _graders(path: Path | None) -> list[Any] | None:
    """The graders of ``--graders FILE``: a JSON list of grader configs."""
    if path is None:
        return None
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc}", param="graders") from exc
    if not isinstance(data, list) or not all(isinstance(g, dict) for g in data):
        raise InvalidRequestError(
            f"{path}: expected a JSON list of grader configs", param="graders"
        )
    return data


async def _synthesize(
    svc: Services, dataset: str, body: dict[str, Any], progress: ProgressCallback | None
) -> dict[str, Any]:
    try:
        return await svc.curation.synthesize(dataset, body, progress=progress)
    finally:
        await svc.providers.aclose()


def _print_estimate(est: dict[str, Any]) -> None:
    usd = est.get("usd")
    seconds = est.get("seconds")
    console.print(
        f"dry run: {est['requested']} rows from {est['teacher']} over {est['cells']} cell(s) "
        f"(seed version {est.get('seed_version')})"
    )
    console.print(
        f"calls ~{est['calls']}  tokens ~{est['prompt_tokens']} prompt + "
        f"~{est['completion_tokens']} completion  "
        + (f"cost ~${usd:.4f}" if usd is not None else "cost: unknown price")
        + "  "
        + (
            f"time ~{seconds:.0f} s"
            if seconds is not None
            else "time: unknown (no stored answer of the teacher yet)"
        )
    )
    labels = ", ".join(est.get("labels") or []) or "-"
    console.print(
        f"label field {est.get('label_field') or '-'}  labels {labels}  "
        f"languages {', '.join(est.get('languages') or [])}"
    )
    if not est.get("within_caps", True):
        err_console.print("[yellow]warning:[/yellow] the estimate is over the caps given")
    for warning in est.get("warnings") or []:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")


def _print_synthesis(view: dict[str, Any]) -> None:
    version = view["version"]
    rep = version["stats"]["synthesis"]
    console.print(
        f"{view['name']} version {version['version']} ({version['id']}): "
        f"{rep['accepted']}/{rep['requested']} synthetic rows accepted, "
        f"{rep['rejected']} rejected ({rep['id']})"
    )
    if rep.get("stopped"):
        console.print(f"[yellow]stopped:[/yellow] {rep['stopped']}")
    spent = rep.get("spent") or {}
    usd = spent.get("usd")
    console.print(
        f"spent {spent.get('calls', 0)} calls, {spent.get('prompt_tokens', 0)} prompt + "
        f"{spent.get('completion_tokens', 0)} completion tokens, "
        + (f"${usd:.4f}" if usd is not None else "unknown price")
    )
    reasons = rep.get("reasons") or {}
    if reasons:
        table("rejected", ["reason", "count"], list(reasons.items()))
    for warning in rep.get("warnings") or []:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")


@app.command()
def synthesize(
    dataset: Annotated[str, typer.Argument(help="Seed dataset (id or name).")],
    teacher: Annotated[str, typer.Option(help="The teacher model that writes and answers.")],
    description: Annotated[str, typer.Option(help="What the application does, in words.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Synthetic rows wanted.")] = 100,
    version: Annotated[
        int | None, typer.Option("--version", "-v", help="Seed version (default latest).")
    ] = None,
    labels: Annotated[
        list[str] | None, typer.Option("--label", help="A label to cover (repeatable).")
    ] = None,
    languages: Annotated[
        list[Language] | None,
        typer.Option("--language", help="A language to write in (repeatable; default the seeds')."),
    ] = None,
    topics: Annotated[
        list[str] | None, typer.Option("--topic", help="A topic to cover (repeatable).")
    ] = None,
    lengths: Annotated[
        list[Length] | None, typer.Option("--length", help="Input lengths to vary (repeatable).")
    ] = None,
    failing_run: Annotated[
        str | None,
        typer.Option(help="An eval run: write more inputs like the ones it failed."),
    ] = None,
    label_field: Annotated[
        str | None,
        typer.Option(help="The answer's JSON field holding the label (default the first enum)."),
    ] = None,
    graders: Annotated[
        Path | None, typer.Option(help="JSON file: a list of graders every answer must pass.")
    ] = None,
    inputs_per_call: Annotated[
        int, typer.Option(min=1, max=50, help="Inputs asked for per call.")
    ] = 10,
    concurrency: ConcurrencyOpt = 4,
    max_rounds: Annotated[
        int, typer.Option(min=1, max=10, help="Rounds to fill the cells short of their quota.")
    ] = 3,
    max_usd: MaxUsdOpt = None,
    max_calls: MaxCallsOpt = None,
    acknowledge_terms: Annotated[
        bool,
        typer.Option(help="Run although the teacher's terms restrict training (recorded)."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the estimate only; call no teacher.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Synthetic rows: the teacher writes inputs like the seeds', answers them as production
    does, and the rows that pass every check become the next version."""
    svc = services()
    coverage: dict[str, Any] = {
        "labels": labels or None,
        "languages": [str(x) for x in languages] if languages else None,
        "topics": topics or None,
        "lengths": [str(x) for x in lengths] if lengths else None,
        "failing_run_id": failing_run,
    }
    body: dict[str, Any] = {
        "teacher": teacher,
        "description": description,
        "n": n,
        "version": version,
        "coverage": {k: v for k, v in coverage.items() if v is not None},
        "label_field": label_field,
        "inputs_per_call": inputs_per_call,
        "concurrency": concurrency,
        "max_rounds": max_rounds,
        "max_usd": max_usd,
        "max_calls": max_calls,
        "acknowledge_terms": acknowledge_terms,
        "dry_run": dry_run,
    }
    try:
        body["graders"] = _graders(graders)
        body = {k: v for k, v in body.items() if v is not None}
        with progress_bars(not json_out and not dry_run) as progress:
            result = asyncio.run(_synthesize(svc, dataset, body, progress))
    except DistilleryError as exc:
        raise fail(exc) from exc
    if json_out:
        print_json(result)
    elif dry_run:
        _print_estimate(result)
    else:
        _print_synthesis(result)
