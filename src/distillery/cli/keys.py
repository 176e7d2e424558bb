"""``distillery keys create|list|revoke``."""

from __future__ import annotations

from typing import Annotated

import typer

from distillery.cli.context import services
from distillery.cli.output import print_json, table

app = typer.Typer(help="Gateway API keys (stored only as hashes).", no_args_is_help=True)


@app.command()
def create(
    scope: Annotated[
        str, typer.Option(help="admin (everything) or ingest (chat completions).")
    ] = "admin",
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a key and print the only copy of it."""
    key, secret = services().keys.create(scope=scope, name=name)
    if json_out:
        print_json({"id": key.id, "key": secret, "scope": key.scope, "name": key.name})
    else:
        typer.echo(f"{key.id}  scope={key.scope}\n{secret}\n(store it now: it is shown only once)")


@app.command("list")
def list_keys(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List keys (prefixes only)."""
    keys = services().keys.list()
    rows = [
        {
            "id": k.id,
            "prefix": k.prefix,
            "scope": k.scope,
            "name": k.name,
            "created_at": k.created_at,
            "revoked": k.revoked_at is not None,
        }
        for k in keys
    ]
    if json_out:
        print_json(rows)
    else:
        table(
            "keys",
            ["id", "prefix", "scope", "name", "revoked"],
            [[k.id, k.prefix + "…", k.scope, k.name, k.revoked_at is not None] for k in keys],
        )


@app.command()
def revoke(key_id: str, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Revoke a key."""
    key = services().keys.revoke(key_id)
    if json_out:
        print_json({"id": key.id, "revoked": True})
    else:
        typer.echo(f"revoked {key.id}")
