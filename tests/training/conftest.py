"""Fixtures for the local-trainer tests: the converted embedded student, tiny chat files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .chat_files import QUESTIONS, chat_record, write_jsonl


@pytest.fixture(scope="session")
def converted_model(model_home: Path) -> Path:
    """The embedded student converted once into the shared model cache (~20 s the first time)."""
    previous = os.environ.get("DISTILLERY_HOME")
    os.environ["DISTILLERY_HOME"] = str(model_home)
    try:
        from distillery import weights

        return weights.materialize(weights.resolve_source(weights.EMBEDDED_MODEL)).path
    finally:
        if previous is None:
            os.environ.pop("DISTILLERY_HOME", None)
        else:
            os.environ["DISTILLERY_HOME"] = previous


@pytest.fixture
def training_home(home: Path, converted_model: Path) -> Path:
    """A fresh DISTILLERY_HOME per test (root ``home`` fixture) sharing the converted model
    (used by the trainer's test modules through ``pytestmark``)."""
    return home


@pytest.fixture(scope="session")
def torch_threads() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer(converted_model: Path) -> Any:
    from distillery import weights

    return weights.load_tokenizer(weights.resolve_source(weights.EMBEDDED_MODEL, converted_model))


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS])


@pytest.fixture
def valid_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "valid.jsonl", [chat_record(q, c) for q, c in QUESTIONS[:4]])
