"""``distillery routes create|list|show|update|promote|rollback|events|delete``.

Routes move a prompt's traffic from its teacher to its student (shadow, canary, full) behind the
parity gate. A running ``distillery serve`` picks up a change made here within two seconds.
A gate refusal exits with code 2 and prints its numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from distillery.cli.context import services
from distillery.cli.options import key_values
from distillery.cli.output import print_json, table
from distillery.wire.route_modes import PromoteTarget, RollbackTarget, RouteMode

app = typer.Typer(help="Routes: move a prompt's traffic to its student.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Bypass the parity gate (recorded as an event).")
]
ACTOR = "cli"


def _graders(items: list[str] | None, path: Path | None) -> list[dict[str, Any]] | None:
    found: list[Any] = []
    for item in items or []:
        try:
            found.append(json.loads(item))
        except ValueError as exc:
            raise typer.BadParameter(f"--grader is not JSON: {exc}") from None
    if path is not None:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        found.extend(loaded if isinstance(loaded, list) else [loaded])
    if not all(isinstance(g, dict) for g in found):
        raise typer.BadParameter("each grader is a JSON object")
    return found or None


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    """Drop the options left unset (``None``), also inside nested sections."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, dict):
            value = _compact(value)
            if not value:
                continue
        if value is not None:
            out[key] = value
    return out


def _show(route: dict[str, Any], json_out: bool) -> None:
    if json_out:
        print_json(route)
        return
    match = route["match"]
    where = ", ".join(f"{k}={v}" for k, v in sorted(match.get("metadata", {}).items()))
    typer.echo(f"{route['id']} {route['name']}: {route['mode']}", nl=False)
    if RouteMode(route["mode"]).splits_traffic:
        typer.echo(f" {route['percent']:g}%", nl=False)
    typer.echo(f"  {match['model']} [{where or 'all traffic'}] -> {route['student']}")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Route name.")],
    model: Annotated[str, typer.Option(help="The teacher model the application requests.")],
    student: Annotated[str, typer.Option(help="The student model that answers instead.")],
    metadata: Annotated[
        list[str] | None,
        typer.Option("--metadata", "-m", help="key=value the traffic carries (repeatable)."),
    ] = None,
    prompt_version: Annotated[str | None, typer.Option(help="Only this prompt_version.")] = None,
    mode: Annotated[
        RouteMode, typer.Option(help="Who answers the route's requests.")
    ] = RouteMode.SHADOW,
    percent: Annotated[float | None, typer.Option(help="Canary share, 0-100.")] = None,
    sticky_key: Annotated[
        str | None, typer.Option(help="Metadata key a canary is sticky to (e.g. user).")
    ] = None,
    grader: Annotated[
        list[str] | None, typer.Option("--grader", help="A grader as JSON (repeatable).")
    ] = None,
    graders_file: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="A JSON list of graders.")
    ] = None,
    teacher_run: Annotated[str | None, typer.Option(help="Gate: the teacher's eval run.")] = None,
    student_run: Annotated[str | None, typer.Option(help="Gate: the student's eval run.")] = None,
    min_percent: Annotated[
        float | None, typer.Option(help="Gate: the student's % of the teacher (lower bound).")
    ] = None,
    floor: Annotated[
        float | None, typer.Option(help="Roll back below this online pass rate (0-1).")
    ] = None,
    window: Annotated[int | None, typer.Option(help="Rollback: graded answers watched.")] = None,
    cache_ttl: Annotated[
        int | None, typer.Option(help="Cache deterministic answers this many seconds.")
    ] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a route (canary and full pass the parity gate first)."""
    body = _compact(
        {
            "name": name,
            "match": {
                "model": model,
                "metadata": key_values(metadata),
                "prompt_version": prompt_version,
            },
            "student": student,
            "mode": mode,
            "percent": percent,
            "sticky_key": sticky_key,
            "graders": _graders(grader, graders_file),
            "gate": {
                "teacher_run": teacher_run,
                "student_run": student_run,
                "min_percent_of_teacher": min_percent,
            },
            "rollback": {"floor": floor, "window": window},
            "cache": {"enabled": True, "ttl_s": cache_ttl} if cache_ttl else None,
            "force": force or None,
        }
    )
    _show(services().routes.create(body, actor=ACTOR), json_out)


@app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """List routes."""
    data, _ = services().routes.page(after=None, limit=100, order="asc")
    if json_out:
        print_json(data)
        return
    rows = [
        [
            r["id"],
            r["name"],
            r["match"]["model"],
            ", ".join(f"{k}={v}" for k, v in sorted(r["match"].get("metadata", {}).items())),
            r["student"],
            r["mode"],
            f"{r['percent']:g}%" if RouteMode(r["mode"]).splits_traffic else "",
        ]
        for r in data
    ]
    table("routes", ["id", "name", "teacher", "match", "student", "mode", "canary"], rows)


@app.command()
def show(
    route_id: Annotated[str, typer.Argument(help="Route id.")], json_out: JsonOpt = False
) -> None:
    """A route with its live numbers."""
    svc = services()
    route = svc.routes.get(route_id)
    stats = svc.routes.stats(route_id)
    if json_out:
        print_json({**route, "stats": stats})
        return
    _show(route, False)
    online, shadow, costs = stats["online"], stats["shadow"], stats["costs"]
    served = ", ".join(f"{k} {v}" for k, v in sorted(stats["by_served"].items()))
    typer.echo(f"  requests {stats['requests']} ({served or 'none yet'})")
    if stats["fallback_rate"] is not None:
        typer.echo(f"  fallback rate {stats['fallback_rate']:.1%} {stats['fallback_reasons']}")
    for label, block in (("online", online), ("shadow", shadow)):
        if block["graded"]:
            low, high = block["pass_rate_ci"] or (None, None)
            typer.echo(
                f"  {label} pass rate {block['pass_rate']:.1%} of {block['graded']}"
                + (f" (95% CI {low:.1%}-{high:.1%})" if low is not None else "")
            )
    typer.echo(f"  saved ${costs['saved_usd']:.4f} (training ${costs['training_cost_usd']:.2f})")


@app.command()
def update(
    route_id: Annotated[str, typer.Argument(help="Route id.")],
    student: Annotated[str | None, typer.Option(help="A new student.")] = None,
    mode: Annotated[
        RouteMode | None, typer.Option(help="Who answers the route's requests.")
    ] = None,
    percent: Annotated[float | None, typer.Option(help="Canary share, 0-100.")] = None,
    sticky_key: Annotated[str | None, typer.Option(help="Canary sticky metadata key.")] = None,
    graders_file: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Replace the graders.")
    ] = None,
    teacher_run: Annotated[str | None, typer.Option(help="Gate: the teacher's eval run.")] = None,
    student_run: Annotated[str | None, typer.Option(help="Gate: the student's eval run.")] = None,
    floor: Annotated[float | None, typer.Option(help="Rollback floor (0-1).")] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Change a route (only the options given)."""
    svc = services().routes
    current = svc.get(route_id)
    change = _compact(
        {
            "student": student,
            "mode": mode,
            "percent": percent,
            "sticky_key": sticky_key,
            "graders": _graders(None, graders_file),
            "force": force or None,
        }
    )
    gate = _compact({"teacher_run": teacher_run, "student_run": student_run})
    if gate:
        change["gate"] = {**current["gate"], **gate}
    if floor is not None:
        change["rollback"] = {**current["rollback"], "floor": floor}
    _show(svc.update(route_id, change, actor=ACTOR), json_out)


@app.command()
def promote(
    route_id: Annotated[str, typer.Argument(help="Route id.")],
    mode: Annotated[
        PromoteTarget, typer.Option(help="A mode in which the student answers users.")
    ] = RouteMode.CANARY,
    percent: Annotated[float | None, typer.Option(help="Canary share, 0-100.")] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Move a route to canary or full through the parity gate (exit 2 when it refuses)."""
    route = services().routes.promote(
        route_id, mode=mode, percent=percent, force=force, actor=ACTOR
    )
    _show(route, json_out)


@app.command()
def rollback(
    route_id: Annotated[str, typer.Argument(help="Route id.")],
    mode: Annotated[
        RollbackTarget, typer.Option(help="A mode in which the teacher answers users.")
    ] = RouteMode.SHADOW,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the event).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Move a route back to shadow or off."""
    _show(services().routes.rollback(route_id, mode=mode, reason=reason, actor=ACTOR), json_out)


@app.command()
def events(
    route_id: Annotated[str, typer.Argument(help="Route id.")], json_out: JsonOpt = False
) -> None:
    """The route's events, newest first."""
    data, _ = services().routes.events(route_id, after=None, limit=100)
    if json_out:
        print_json(data)
        return
    rows = [
        [e["created_at"], e["type"], e.get("actor"), e.get("to") or "", e.get("reason") or ""]
        for e in data
    ]
    table(f"events of {route_id}", ["at", "type", "actor", "to", "reason"], rows)


@app.command()
def delete(
    route_id: Annotated[str, typer.Argument(help="Route id.")], json_out: JsonOpt = False
) -> None:
    """Delete a route: its traffic goes back to the teacher."""
    result = services().routes.delete(route_id)
    if json_out:
        print_json(result)
    else:
        typer.echo(f"deleted {route_id}")
