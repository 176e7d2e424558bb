"""The echo plugin installed as pip would install it: its package and ``.dist-info`` on a path.

``installed_plugin`` copies ``echo_plugin/distillery_echo`` into a fresh site folder, writes the
``.dist-info`` (``METADATA`` and ``entry_points.txt`` from the plugin's own ``pyproject.toml``)
beside it, and puts the folder on ``sys.path`` (and on ``PYTHONPATH`` for subprocesses), so
``importlib.metadata`` finds its entry points exactly as after ``pip install``. Nothing under
``src/distillery`` knows the plugin.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillery import plugins

PLUGIN = Path(__file__).parent / "echo_plugin"


def install(site: Path) -> Path:
    """Install the echo plugin into ``site`` (a folder to put on ``sys.path``)."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    shutil.copytree(PLUGIN / "distillery_echo", site / "distillery_echo")
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n",
        encoding="utf-8",
    )
    groups = [
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
        for group, entries in project["entry-points"].items()
    ]
    (info / "entry_points.txt").write_text("\n".join(groups), encoding="utf-8")
    (info / "top_level.txt").write_text("distillery_echo\n", encoding="utf-8")
    return site


def _forget_kinds() -> None:
    plugins.entries.cache_clear()
    plugins.load.cache_clear()


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = install(tmp_path / "site-packages")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    _forget_kinds()
    yield site
    sys.modules.pop("distillery_echo", None)
    _forget_kinds()
