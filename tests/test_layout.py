"""The test tree's layout: one package, so no test folder shadows an installed package."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import tests

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_folder_is_a_package() -> None:
    """A folder without ``__init__.py`` would put itself on ``sys.path`` under its bare name."""
    folders = {
        p.parent
        for p in (ROOT / "tests").rglob("*.py")
        if "__pycache__" not in p.parts and "echo_plugin" not in p.parts
    }
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())
    assert missing == []
    assert Path(tests.__file__).parent == ROOT / "tests"


def test_test_modules_are_named_under_tests() -> None:
    from tests.datasets import test_api

    assert test_api.__name__ == "tests.datasets.test_api"


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is None, reason="HF datasets not installed"
)
def test_hf_datasets_is_not_shadowed_by_tests_datasets() -> None:
    """``tests/datasets`` mirrors ``distillery.datasets``; ``import datasets`` is HuggingFace's."""
    import datasets

    assert (ROOT / "tests" / "datasets").is_dir()
    assert "site-packages" in Path(datasets.__file__).parts, datasets.__file__
    assert hasattr(datasets, "load_dataset")
    # from the repo root, in a fresh interpreter (the path pytest puts first)
    out = subprocess.run(
        [sys.executable, "-c", "import datasets; print(datasets.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "site-packages" in Path(out.strip()).parts, out
