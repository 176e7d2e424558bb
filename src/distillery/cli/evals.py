"""``distillery evals run|show|compare|repeat``: evaluate in-process, read results, compare runs.

``run`` takes an eval config file (JSON) or flags. A config file is either an existing eval and a
run, ``{"eval_id": "eval_...", "run": {"data_source": {...}}}``, or a new eval and its run,
``{"name", "data_source_config", "testing_criteria", "metadata"?, "data_source", "run_name"?}``
(``{"eval": {...}, "run": {...}}`` also works). Flags build the same thing, e.g.::

    distillery evals run --stored-completions --metadata prompt=router \\
        --model smollm2-135m-instruct --criteria criteria.json

``--criteria`` names a JSON file holding a list of graders (OpenAI's testing_criteria).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from distillery.cli.context import services
from distillery.cli.options import key_values
from distillery.cli.output import console, err_console, fail, print_json, progress_bars, table
from distillery.errors import DistilleryError, InvalidRequestError
from distillery.progress import ProgressCallback
from distillery.services import Services

app = typer.Typer(help="Evaluations: run, show and compare eval runs.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
MetaOpt = Annotated[
    list[str] | None,
    typer.Option("--metadata", "-m", help="key=value filter of stored completions (repeatable)."),
]


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc}") from exc


def _criteria(path: Path | None) -> list[Any] | None:
    if path is None:
        return None
    data = _read_json(path)
    if isinstance(data, dict):
        data = data.get("testing_criteria", [data])
    if not isinstance(data, list):
        raise InvalidRequestError(f"{path}: expected a list of graders")
    return data


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequestError(f"{path}, line {number}: invalid JSON ({exc})") from exc
        if isinstance(row, dict) and isinstance(row.get("item"), dict):
            rows.append({k: row[k] for k in ("item", "sample") if k in row})
        else:
            rows.append({"item": row})
    return rows


def _from_flags(
    *,
    stored: bool,
    metadata: dict[str, str] | None,
    source_model: str | None,
    limit: int | None,
    jsonl: Path | None,
    dataset: str | None,
    version: int | None,
    split: str | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The eval's data_source_config and the run's data_source the flags describe."""
    if sum([stored, jsonl is not None, dataset is not None]) != 1:
        raise InvalidRequestError(
            "choose one data source: --stored-completions, --jsonl FILE or --dataset ID"
        )
    if stored:
        source: dict[str, Any] = {"type": "stored_completions"}
        for key, value in (("metadata", metadata), ("model", source_model), ("limit", limit)):
            if value is not None:
                source[key] = value
        config: dict[str, Any] = {"type": "logs"}
        if metadata:
            config["metadata"] = metadata
        return config, {"type": "completions", "source": source}
    any_item = {"type": "custom", "item_schema": {"type": "object"}}
    if jsonl is not None:
        content = {"type": "file_content", "content": _jsonl_rows(jsonl)}
        return any_item, {"type": "jsonl", "source": content}
    ds: dict[str, Any] = {"type": "distillery_dataset", "dataset_id": dataset}
    if version is not None:
        ds["version"] = version
    if split is not None:
        ds["split"] = split
    return any_item, ds


def _sampling(
    temperature: float | None, max_tokens: int | None, seed: int | None
) -> dict[str, Any] | None:
    params = {
        k: v
        for k, v in (
            ("temperature", temperature),
            ("max_completion_tokens", max_tokens),
            ("seed", seed),
        )
        if v is not None
    }
    return params or None


def _with_model(
    ds: dict[str, Any], model: str | None, sampling: dict[str, Any] | None
) -> dict[str, Any]:
    if model is None:
        return ds
    if ds["type"] == "jsonl":  # generating turns a jsonl source into a completions one
        ds = {"type": "completions", "source": ds["source"]}
    ds = {**ds, "model": model}
    if sampling:
        ds["sampling_params"] = {**(ds.get("sampling_params") or {}), **sampling}
    return ds


def _plan(svc: Services, config: dict[str, Any] | None, **flags: Any) -> tuple[str, dict[str, Any]]:
    """Create (or find) the eval; return its id and the run body."""
    criteria = _criteria(flags["criteria"])
    if config is not None:
        nested = config.get("eval")
        eval_body: dict[str, Any] = nested if isinstance(nested, dict) else config
        run_body = dict(config.get("run") or {})
        run_body.setdefault("data_source", config.get("data_source"))
        if config.get("run_name"):
            run_body.setdefault("name", config["run_name"])
        if criteria is not None and "eval_id" not in config:
            eval_body = {**eval_body, "testing_criteria": criteria}
        if "eval_id" in config:
            eval_id = str(config["eval_id"])
            svc.evals.get_eval(eval_id)
        else:
            keys = ("name", "metadata", "data_source_config", "testing_criteria")
            eval_id = svc.evals.create_eval({k: eval_body[k] for k in keys if k in eval_body})["id"]
    else:
        if criteria is None:
            raise InvalidRequestError("give --criteria FILE (a JSON list of graders) or a config")
        ds_config, data_source = _from_flags(
            stored=flags["stored"],
            metadata=flags["metadata"],
            source_model=flags["source_model"],
            limit=flags["limit"],
            jsonl=flags["jsonl"],
            dataset=flags["dataset"],
            version=flags["version"],
            split=flags["split"],
        )
        name = flags["name"] or "cli eval"
        created = svc.evals.create_eval(
            {"name": name, "data_source_config": ds_config, "testing_criteria": criteria}
        )
        eval_id = created["id"]
        run_body = {"data_source": data_source}
    run_body["data_source"] = _with_model(
        dict(run_body.get("data_source") or {}), flags["model"], flags["sampling"]
    )
    if flags["run_name"]:
        run_body["name"] = flags["run_name"]
    return eval_id, run_body


async def _execute(svc: Services, run_id: str, progress: ProgressCallback | None) -> dict[str, Any]:
    try:
        return await svc.evals.execute(run_id, progress=progress)
    finally:
        await svc.providers.aclose()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _print_run(run: dict[str, Any]) -> None:
    counts = run.get("result_counts") or {}
    rows = []
    for res in run.get("per_testing_criteria_results") or []:
        n = res["passed"] + res["failed"]
        rows.append(
            [
                res["testing_criteria"],
                res["passed"],
                res["failed"],
                _pct(res["passed"] / n if n else None),
            ]
        )
    table(f"{run['name']} ({run['id']})", ["criterion", "passed", "failed", "pass rate"], rows)
    total = counts.get("total", 0)
    console.print(
        f"status [bold]{run['status']}[/bold]  items {total}  passed {counts.get('passed', 0)}  "
        f"failed {counts.get('failed', 0)}  errored {counts.get('errored', 0)}  "
        f"accuracy {_pct(counts.get('passed', 0) / total if total else None)}"
    )
    if (run.get("error") or {}).get("message"):
        err_console.print(f"[red]{run['error']['message']}[/red]")
    for usage in run.get("per_model_usage") or []:
        console.print(
            f"{usage['model_name']}: {usage['invocation_count']} calls, "
            f"{usage['total_tokens']} tokens"
        )
    console.print(f"report: {run.get('report_url')}")


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="Eval config (JSON); flags describe one otherwise.")
    ] = None,
    stored_completions: Annotated[
        bool, typer.Option("--stored-completions", help="Evaluate stored completions.")
    ] = False,
    metadata: MetaOpt = None,
    source_model: Annotated[
        str | None, typer.Option(help="Only stored completions of this model.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many items.")] = None,
    jsonl: Annotated[
        Path | None, typer.Option(help="JSONL of {item, sample?} rows (or bare items).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="A distillery dataset (id or name).")] = None,
    version: Annotated[int | None, typer.Option(help="Dataset version (default latest).")] = None,
    split: Annotated[str | None, typer.Option(help="Dataset split, e.g. test.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Generate answers with this model, then grade.")
    ] = None,
    criteria: Annotated[
        Path | None, typer.Option(help="JSON file: a list of graders (testing_criteria).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of a new eval.")] = None,
    run_name: Annotated[str | None, typer.Option(help="Name of the run.")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option(help="max_completion_tokens.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Items at once (default [evals] concurrency).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run an eval in this process, with a progress bar, and print its results."""
    svc = services()
    try:
        eval_id, run_body = _plan(
            svc,
            _read_json(config) if config is not None else None,
            criteria=criteria,
            stored=stored_completions,
            metadata=key_values(metadata),
            source_model=source_model,
            limit=limit,
            jsonl=jsonl,
            dataset=dataset,
            version=version,
            split=split,
            model=model,
            sampling=_sampling(temperature, max_tokens, seed),
            name=name,
            run_name=run_name,
        )
        if concurrency is not None:
            svc.evals.runner.concurrency = concurrency
        created = svc.evals.create_run(eval_id, run_body, background=False)
        with progress_bars(not json_out) as progress:
            final = asyncio.run(_execute(svc, created["id"], progress))
    except DistilleryError as exc:
        raise fail(exc) from exc
    if json_out:
        print_json(final)
    else:
        _print_run(final)
    if final["status"] != "completed":
        raise typer.Exit(code=1)


@app.command()
def show(
    run_id: str,
    items: Annotated[bool, typer.Option("--items", help="Also list the output items.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show an eval run (counts per criterion, usage; with --items every graded item)."""
    svc = services()
    try:
        found = svc.evals.get_run(run_id)
        listed = svc.evals.output_items(run_id) if items else []
    except DistilleryError as exc:
        raise fail(exc) from exc
    if json_out:
        print_json({**found, "output_items": listed} if items else found)
        return
    _print_run(found)
    if items:
        rows = []
        for item in listed:
            output = (item.get("sample") or {}).get("output") or [{}]
            reasons = "; ".join(
                f"{r['name']}: {r.get('reason')}" for r in item["results"] if not r["passed"]
            )
            error = (item.get("sample") or {}).get("error") or {}
            rows.append(
                [
                    item["datasource_item_id"],
                    item["status"],
                    str(output[-1].get("content") or "")[:60].replace("\n", " "),
                    (reasons or error.get("message") or "")[:80],
                ]
            )
        table("output items", ["#", "status", "output", "why"], rows)


def _cell(side: dict[str, Any]) -> str:
    text = _pct(side.get("pass_rate"))
    ci = side.get("pass_rate_ci")
    if ci:
        text += f" [{100 * ci[0]:.1f}–{100 * ci[1]:.1f}]"
    percent = side.get("percent_of_baseline")
    if percent is not None:
        text += f"\n{percent:.1f}% of base"
        ratio_ci = side.get("percent_of_baseline_ci")
        if ratio_ci:
            text += f" [{ratio_ci[0]:.1f}–{ratio_ci[1]:.1f}]"
    if side.get("mean_score") is not None:
        text += f"\nmean {side['mean_score']:.3f}"
    return text


@app.command()
def compare(
    run_ids: Annotated[list[str], typer.Argument(help="Runs to compare.")],
    baseline: Annotated[
        str | None, typer.Option(help="The baseline run (the teacher); default the first.")
    ] = None,
    resamples: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Compare runs per criterion against a baseline, with 95% bootstrap intervals and flips."""
    svc = services()
    try:
        result = svc.evals.compare(run_ids, baseline=baseline, resamples=resamples, seed=seed)
    except DistilleryError as exc:
        raise fail(exc) from exc
    if json_out:
        print_json(result)
        return
    runs = result["runs"]
    columns = ["criterion"] + [
        f"{r['name']}{' (baseline)' if r['baseline'] else ''}\n{r['id']}" for r in runs
    ]
    rows = [
        [row["name"], *[_cell(side) for side in row["runs"]]]
        for row in [*result["criteria"], result["overall"]]
    ]
    table("comparison", columns, rows)
    for flip in result["flips"]:
        console.print(
            f"{flip['run_id']} vs baseline: {len(flip['pass_to_fail'])} pass→fail, "
            f"{len(flip['fail_to_pass'])} fail→pass"
        )
    for entry in runs:
        if not entry["baseline"] and entry.get("agreement") is not None:
            console.print(f"{entry['id']}: agreement with baseline {_pct(entry['agreement'])}")
    for sc in result["self_consistency"]:
        console.print(
            f"self-consistency {sc['run_id']} vs {sc['repeat_run_id']}: "
            f"agreement {_pct(sc['agreement'])}, identical outputs {_pct(sc['output_agreement'])}"
        )


@app.command()
def repeat(
    run_id: str,
    model: Annotated[
        str | None, typer.Option(help="Model to repeat with (default the run's).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-run the teacher on the same items and report its agreement with itself."""
    svc = services()
    try:
        created = svc.evals.repeat_run(run_id, model=model, background=False)
        with progress_bars(not json_out) as progress:
            asyncio.run(_execute(svc, created["id"], progress))
        result = svc.evals.self_consistency(run_id, created["id"])
    except DistilleryError as exc:
        raise fail(exc) from exc
    if json_out:
        print_json(result)
        return
    console.print(
        f"repeat run {created['id']}: agreement {_pct(result['agreement'])} over "
        f"{result['matched_items']} items, identical outputs {_pct(result['output_agreement'])}"
    )
