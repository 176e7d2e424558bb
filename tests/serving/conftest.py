"""Fixtures for the local provider: the embedded student converted once into a shared folder.

The converted model lives in ``$DISTILLERY_TEST_HOME`` (default ``/tmp/distillery-test-home``),
shared by test sessions, so only the first session pays for the GGUF conversion (~20 s).
Providers get the converted folder through ``paths`` and never depend on ``DISTILLERY_HOME``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from distillery.providers.local_config import LocalProviderConfig
from distillery.serving import LocalProvider

MODEL = "smollm2-135m-instruct"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture(scope="session")
def shared_home() -> Path:
    return Path(os.environ.get("DISTILLERY_TEST_HOME", "/tmp/distillery-test-home"))


@pytest.fixture(scope="session")
def model_dir(shared_home: Path) -> Iterator[Path]:
    """The embedded student as a transformers folder (converted from the GGUF once)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    previous = os.environ.get("DISTILLERY_HOME")
    os.environ["DISTILLERY_HOME"] = str(shared_home)
    try:
        from distillery import weights

        source = weights.materialize(weights.resolve_source(MODEL))
    finally:
        if previous is None:
            os.environ.pop("DISTILLERY_HOME", None)
        else:
            os.environ["DISTILLERY_HOME"] = previous
    yield source.path


@pytest.fixture(scope="session")
def small_context_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights with a 128-token context, to test context limits cheaply."""
    target = tmp_path_factory.mktemp("small-context")
    for item in model_dir.iterdir():
        if item.name != "config.json" and item.is_file():
            (target / item.name).symlink_to(item)
    config = json.loads((model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 128
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="session")
def broken_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder whose weights file is garbage."""
    target = tmp_path_factory.mktemp("broken-model")
    for item in model_dir.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy(item, target / item.name)
    (target / "model.safetensors").write_bytes(b"\x00not a safetensors file" * 64)
    return target


def make_provider(model_dir: Path, **config: Any) -> LocalProvider:
    dtype = config.pop("dtype", None)
    resolver = config.pop("adapter_resolver", None)
    models = config.pop("models", [MODEL])
    paths = {MODEL: str(model_dir), **config.pop("paths", {})}
    cfg = LocalProviderConfig(models=models, paths=paths, **config)
    return LocalProvider("local", cfg, adapter_resolver=resolver, dtype=dtype)


@pytest.fixture(scope="session")
def provider(model_dir: Path) -> Iterator[LocalProvider]:
    """The default provider (bf16 where the CPU supports it), shared by the session."""
    p = make_provider(model_dir)
    yield p
    run(p.aclose())
