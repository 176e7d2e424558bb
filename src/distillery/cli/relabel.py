"""``distillery relabel --teacher M``: stored inputs answered again by a stronger teacher."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer

from distillery.cli.context import services
from distillery.cli.options import ConcurrencyOpt, MaxCallsOpt, MaxUsdOpt, key_values
from distillery.cli.output import console, err_console, fail, print_json, progress_bars, table
from distillery.errors import DistilleryError
from distillery.progress import ProgressCallback
from distillery.services import Services

SHOWN = 20  # disagreements printed for people (--json has up to 1000 items)


class CompareBy(StrEnum):
    label = "label"
    json = "json"
    text = "text"


async def _relabel(
    svc: Services, body: dict[str, Any], progress: ProgressCallback | None
) -> dict[str, Any]:
    try:
        return await svc.curation.relabel(body, progress=progress)
    finally:
        await svc.providers.aclose()


def _ids(values: list[str] | None) -> list[str] | None:
    """``--ids a --ids b`` or ``--ids a,b``."""
    if not values:
        return None
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def _money(usd: float | None) -> str:
    return f"${usd:.4f}" if usd is not None else "unknown price"


def _print_estimate(result: dict[str, Any]) -> None:
    est = result["estimate"]
    seconds = est.get("seconds")
    console.print(
        f"dry run: {est['calls']} stored input(s) to answer again with {est['teacher']} "
        f"(compared by {result['compare']}"
        + (f" on {result['label_field']}" if result.get("label_field") else "")
        + ")"
    )
    console.print(
        f"calls {est['calls']}  tokens ~{est['prompt_tokens']} prompt + "
        f"~{est['completion_tokens']} completion  cost "
        + (f"~{_money(est['usd'])}" if est.get("usd") is not None else "unknown (no price)")
        + "  time "
        + (
            f"~{seconds:.0f} s"
            if seconds is not None
            else "unknown (no stored answer of the teacher yet)"
        )
    )
    if result.get("skipped"):
        console.print(f"{result['skipped']} matching completion(s) have no output: skipped")
    if not est.get("within_caps", True):
        err_console.print("[yellow]warning:[/yellow] the estimate is over the caps given")


def _print_result(result: dict[str, Any]) -> None:
    console.print(
        f"relabel {result['id']} with {result['teacher']}: {result['relabelled']} of "
        f"{result['selected']} answered again, {result['agreed']} agree, "
        f"{result['disagreed']} disagree, {result['failed']} failed"
    )
    if result.get("stopped"):
        console.print(f"[yellow]stopped:[/yellow] {result['stopped']} reached")
    spent = result.get("spent") or {}
    console.print(
        f"spent {spent.get('calls', 0)} calls, {spent.get('prompt_tokens', 0)} prompt + "
        f"{spent.get('completion_tokens', 0)} completion tokens, {_money(spent.get('usd'))}"
    )
    disagreements = [i for i in result.get("items") or [] if i.get("agreed") is False]
    if disagreements:
        field = result.get("label_field")
        table(
            f"disagreements ({field})" if field else "disagreements",
            ["completion", "original", "relabelled"],
            [
                [i["completion_id"], _shown(i["original"], field), _shown(i["relabelled"], field)]
                for i in disagreements[:SHOWN]
            ],
        )
    if result.get("queue_id"):
        console.print(f"review queue {result['queue_id']} ({result['queue_name']})")
    errors = [i for i in result.get("items") or [] if i.get("error")]
    if errors:
        err_console.print(f"[yellow]warning:[/yellow] first failure: {errors[0]['error']}")


def _shown(text: str | None, label_field: str | None) -> str:
    """The label an answer gives when answers are compared by label, else its text, cut."""
    if label_field is not None and text:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict) and label_field in value:
            return str(value[label_field])
    return _short(text)


def _short(text: str | None, limit: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def relabel(
    teacher: Annotated[str, typer.Option(help="The teacher that answers the inputs again.")],
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata", "-m", help="Only stored completions with key=value (repeatable)."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Only stored completions of this model.")
    ] = None,
    ids: Annotated[
        list[str] | None,
        typer.Option("--ids", help="These completion ids (repeatable, or comma-separated)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many inputs.")] = None,
    compare: Annotated[
        CompareBy | None,
        typer.Option(
            help="How answers are compared (default: label if known, else json, else text)."
        ),
    ] = None,
    label_field: Annotated[
        str | None,
        typer.Option(help="The answers' JSON field holding the label (default: the first enum)."),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(help="Name of the review queue (default: 'relabel <teacher>')."),
    ] = None,
    max_usd: MaxUsdOpt = None,
    max_calls: MaxCallsOpt = None,
    concurrency: ConcurrencyOpt = 4,
    acknowledge_terms: Annotated[
        bool,
        typer.Option(help="Run although the teacher's terms restrict training (recorded)."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the estimate only; call no teacher.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Answer selected stored inputs again with another teacher, store the new answers beside
    the old ones and put the disagreements in a new annotation queue for review."""
    chosen = _ids(ids)
    filters = key_values(metadata)
    if chosen is None and filters is None and model is None and limit is None:
        raise typer.BadParameter(
            "say which stored inputs to relabel: --model, --metadata, --ids or --limit"
        )
    source: dict[str, Any] = {"type": "completions"}
    if chosen is not None:
        source["completion_ids"] = chosen
    if filters is not None:
        source["metadata"] = filters
    if model is not None:
        source["model"] = model
    body: dict[str, Any] = {
        "teacher": teacher,
        "source": source,
        "limit": limit,
        "compare": str(compare) if compare is not None else None,
        "label_field": label_field,
        "queue_name": queue,
        "max_usd": max_usd,
        "max_calls": max_calls,
        "concurrency": concurrency,
        "acknowledge_terms": acknowledge_terms,
        "dry_run": dry_run,
    }
    svc = services()
    try:
        with progress_bars(not json_out and not dry_run) as progress:
            result = asyncio.run(_relabel(svc, body, progress))
    except DistilleryError as exc:
        raise fail(exc) from exc
    if json_out:
        print_json(result)
    elif dry_run:
        _print_estimate(result)
    else:
        _print_result(result)
