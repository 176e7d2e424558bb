"""``distillery <noun> <verb>``: the command line, a thin edge over the core."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from distillery import __version__
from distillery.cli import annotations as annotations_cli
from distillery.cli import completions, costs, datasets, evals, exports, jobs, keys
from distillery.cli import routes as routes_cli
from distillery.cli.context import services
from distillery.cli.demo import demo as demo_command
from distillery.cli.distill import distill as distill_command
from distillery.cli.output import fail, print_json, table
from distillery.cli.relabel import relabel as relabel_command
from distillery.errors import ConfigError, DistilleryError
from distillery.services import Services

app = typer.Typer(
    name="distillery",
    help="Self-hosted LLM distillation: capture, evaluate, annotate, distill, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(completions.app, name="completions")
app.add_typer(datasets.app, name="datasets")
app.add_typer(annotations_cli.app, name="annotations")
app.add_typer(costs.app, name="costs")
app.add_typer(jobs.app, name="jobs")
app.command("worker")(jobs.worker)
app.add_typer(evals.app, name="evals")
app.add_typer(routes_cli.app, name="routes")
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
models_app = typer.Typer(help="Models served through the gateway.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
models_app.command("export")(exports.export)


app.command(name="demo")(demo_command)
app.command(name="distill")(distill_command)
app.command(name="relabel")(relabel_command)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default from config).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config).")] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "warning",
) -> None:
    """Run the gateway, the API, the dashboard and the job worker."""
    import uvicorn

    from distillery.api.server import uvicorn_options
    from distillery.app import create_app
    from distillery.security import redact

    svc = services()
    logging.basicConfig(level=log_level.upper())
    redact.install()  # the app's start-up adds the provider keys once uvicorn set up logging
    bind_host = host or svc.config.server.host
    bind_port = port or svc.config.server.port
    # the trusted hosts default to the loopback names when bound to loopback
    svc.config.server = svc.config.server.model_copy(update={"host": bind_host, "port": bind_port})
    if not _is_loopback(bind_host) and not (svc.config.server.auth and _has_keys(svc)):
        raise fail(
            ConfigError(
                f"refusing to serve on {bind_host} without authentication: set [server] auth = true "
                "and create a key with `distillery keys create --scope admin`"
            )
        )
    uvicorn.run(
        create_app(svc),
        host=bind_host,
        port=bind_port,
        log_level=log_level,
        loop="uvloop",
        access_log=False,
        timeout_graceful_shutdown=10,
        **uvicorn_options(svc.config.server),  # httptools, with a deadline on request headers
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_keys(svc: Services) -> bool:
    return bool(svc.settings.api_key) or any(k.revoked_at is None for k in svc.keys.list())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    try:
        svc = services()
    except DistilleryError as exc:
        raise fail(exc) from exc
    typer.echo(f"database at revision {svc.store.current_revision()}")


@models_app.command("list")
def models_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List base and fine-tuned models, with the licence each student carries."""
    from distillery.weights import embedded_license

    svc = services()
    data: list[dict[str, object]] = [
        {"id": m.id, "owned_by": m.owned_by, "base_model": None} for m in svc.providers.models()
    ]
    listed = {m["id"] for m in data}
    data += [
        {"id": m.id, "owned_by": m.provider, "base_model": m.base_model}
        for m in svc.fine_tuning.list_models()
        if m.id not in listed
    ]
    for row in data:  # a fine-tune inherits the terms of its base model
        terms = embedded_license(str(row["base_model"] or row["id"]))
        row["license"] = terms["license"] if terms else None
        # a teacher's terms from the config; a student's from its lineage
        row["terms"] = svc.config.terms_of(str(row["id"])) or svc.lineage.terms_status(
            str(row["id"])
        )
    if json_out:
        print_json(data)
    else:
        table(
            "models",
            ["id", "provider", "license", "terms"],
            [[m["id"], m["owned_by"], m["license"] or "-", m["terms"] or "-"] for m in data],
        )


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()
    except DistilleryError as exc:
        raise SystemExit(fail(exc).exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


__all__ = ["Path", "app", "main"]
