"""The generated reference docs (``docs/api.md``, ``docs/config.md``, ``docs/cli.md``) match the code.

Each is rendered in memory from the routers, the settings models and the Typer app, and compared
with the committed file: after adding a route, a CLI command or a setting, run ``make docs``.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from distillery.cli import docs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return docs.render()


@pytest.mark.parametrize("name", sorted(docs.GENERATORS))
def test_committed_doc_is_fresh(rendered: dict[str, str], name: str) -> None:
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing: run `make docs` and commit it"
    committed = path.read_text("utf-8")
    if committed != rendered[name]:
        diff = difflib.unified_diff(
            committed.splitlines(),
            rendered[name].splitlines(),
            f"docs/{name} (committed)",
            f"docs/{name} (from the code)",
            lineterm="",
        )
        shown = "\n".join(list(diff)[:60])
        pytest.fail(f"docs/{name} is stale: run `make docs` and commit it.\n{shown}", False)


def test_every_setting_has_a_description() -> None:
    missing = docs.undocumented_settings()
    assert not missing, (
        f"settings without Field(description=...): {', '.join(missing)}; describe them in "
        "src/distillery/settings.py, then run `make docs`"
    )


def test_api_reference_names_scopes_and_routers(rendered: dict[str, str]) -> None:
    api = rendered["api.md"]
    assert "## `distillery.api.routes.files`" in api
    assert "| POST | `/v1/chat/completions` | ingest |" in api
    assert "| GET | `/v1/files` | admin |" in api
    assert (
        "| DELETE | `/v1/files/{file_id}` | admin | none | FileDeleted | 400, 401, 403, 404 |"
        in api
    )
    # the request body and the answer as in the OpenAPI document (multipart for an upload)
    assert (
        "| POST | `/v1/files` | admin | `FileCreateParams` | FileObject | 400, 401, 403, 413 |"
        in api
    )


def test_config_reference_lists_environment_tables_and_defaults(rendered: dict[str, str]) -> None:
    config = rendered["config.md"]
    assert '| `DISTILLERY_HOME` | Path | `"~/.distillery"` |' in config
    assert "### `[providers.NAME]`" in config
    assert "| `concurrency` | int (≥ 1, ≤ 256) | `32` |" in config
    # the common keys, then each kind's own (a plugin's too, when installed)
    assert re.search(r"^\| `kind` \| str \| required \| The provider's kind", config, re.M)
    assert '#### `kind = "vllm"`' in config
    assert re.search(r'^\| `flavor` \| "vllm" \\\| "sglang" \| `"vllm"` \|', config, re.M)


def test_cli_reference_lists_commands_with_their_options(rendered: dict[str, str]) -> None:
    cli = rendered["cli.md"]
    assert "#### `distillery datasets create`" in cli
    assert "distillery datasets create [OPTIONS] NAME" in cli
    assert "| `--near-threshold <float>` | Cosine for near-duplicates. [default: 0.95] |" in cli


def test_make_docs_writes_then_check_passes(tmp_path: Path) -> None:
    env = {**os.environ, "DISTILLERY_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "distillery.cli.docs", "--out", str(tmp_path / "docs")]
    check = subprocess.run([*command, "--check"], env=env, capture_output=True, text=True)
    assert check.returncode == 1
    assert "api.md is stale: run `make docs`" in check.stdout
    written = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert sorted(written.stdout.split()) == sorted(
        ["wrote", "wrote", "wrote", *(str(tmp_path / "docs" / n) for n in docs.GENERATORS)]
    )
    again = subprocess.run([*command, "--check"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout
    assert (tmp_path / "docs" / "config.md").read_text("utf-8") == docs.render()["config.md"]


def test_a_table_inside_a_table_gets_its_own_section() -> None:
    class Inner(BaseModel):
        """``[outer.inner]``: the inner table."""

        depth: int = Field(default=2, ge=1, description="How deep.")

    class Outer(BaseModel):
        inner: Inner = Field(default_factory=Inner, description="Inner.")
        named: dict[str, Inner] = Field(default_factory=dict, description="Inner tables by name.")

    class Root(BaseModel):
        outer: Outer = Field(default_factory=Outer, description="The outer table.")

    text = "\n".join(docs._toml_tables("outer", Root.model_fields["outer"]))
    assert "### `[outer]`\n\nThe outer table." in text
    assert "### `[outer.inner]`\n\nThe inner table." in text
    assert "| `depth` | int (≥ 1) | `2` | How deep. |" in text
    assert "### `[outer.named.NAME]`" in text
    assert "Inner tables by name. Default: `{}`." in text
