"""The trainer contract: every trainer kind, built-in or a plugin's, through the same door.

For a provider table of the kind it trains, ``TrainingRegistry`` picks the kind by default and
builds its backend with its options; the backend then must: resolve hyperparameters
(``validate``), start a run and return a handle, report it through ``poll`` until it ends with a
result (a local adapter folder or a remote model id), events keyed once each, and stop a run it
is asked to cancel. A job's explicit backend that cannot train the model is a 400.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distillery.errors import InvalidRequestError
from distillery.settings import Config, TrainingConfig
from distillery.training.base import FineTuneSpec, Hyperparameters, JobProgress, TrainingBackend
from distillery.training.registry import TrainingRegistry
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.ft import jsonl
from tests.support.tiny_families import tiny_family_dir

TERMINAL = ("succeeded", "failed", "cancelled")
TINY = {"max_length": 64, "lora_r": 4, "lora_alpha": 8}


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_family_dir(tmp_path_factory.mktemp("trainer-gemma3") / "model", "gemma3")


def _case(kind: str, fake: FakeOpenAI, gemma: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """kind -> (a provider table it trains, a model of it, the job's ``distillery`` extras)."""
    if kind == "local":
        table = {"kind": "local", "models": ["tiny-gemma3"], "paths": {"tiny-gemma3": str(gemma)}}
        return table, "tiny-gemma3", TINY
    if kind == "openai":
        return {"kind": "openai", "base_url": fake.base_url, "models": ["gpt-4o"]}, "gpt-4o", {}
    return {"kind": "echo", "models": ["parrot-1"]}, "parrot-1", {}


@pytest.fixture(params=["local", "openai", "memorize"])
def trainer(
    request: pytest.FixtureRequest, tmp_path: Path, fake_openai: FakeOpenAI, home: Path
) -> Iterator[tuple[TrainingRegistry, str, str, dict[str, Any]]]:
    kind: str = request.param
    if kind == "memorize":
        request.getfixturevalue("installed_plugin")
    gemma = request.getfixturevalue("tiny_gemma") if kind == "local" else Path("unused")
    table, model, extras = _case(kind, fake_openai, gemma)
    config = Config.model_validate(
        {"providers": {"p": table}, "training": {"threads": 1, "device": "cpu"}}
    )
    yield TrainingRegistry(config.providers, home, training=config.training), kind, model, extras


def _spec(
    home: Path, model: str, extras: dict[str, Any], job_id: str, model_path: str | None
) -> FineTuneSpec:
    training = home / f"{job_id}.jsonl"
    training.write_bytes(jsonl())
    return FineTuneSpec(
        job_id=job_id,
        model=model,
        provider="p",
        training_file="file-contract",
        training_path=training,
        validation_file=None,
        validation_path=None,
        hyperparameters=Hyperparameters(n_epochs=1, batch_size=12),
        seed=3,
        suffix="contract",
        job_dir=home / "jobs" / job_id,
        training_examples=12,
        method={"type": "supervised", "supervised": {}},
        extras=extras,
        model_path=model_path,  # as the job service passes it (Resolved.model_path)
    )


def _until(backend: TrainingBackend, handle: str, timeout: float = 600) -> list[JobProgress]:
    seen: list[JobProgress] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = backend.poll(handle)
        seen.append(progress)
        if progress.status in TERMINAL:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"the run did not end: {seen[-1] if seen else None}")


def test_every_trainer_kind_keeps_the_contract(
    trainer: tuple[TrainingRegistry, str, str, dict[str, Any]], home: Path
) -> None:
    registry, kind, model, extras = trainer
    resolved = registry.resolve(model)
    assert resolved.kind == kind and resolved.provider == "p"
    assert registry.resolve(model, backend=kind).backend is resolved.backend  # built once
    assert (model, "p") in registry.trainable_models()
    backend = resolved.backend
    assert isinstance(backend, TrainingBackend) and backend.concurrency >= 1

    spec = _spec(home, model, extras, "ftjob-contract1", resolved.model_path)
    hyper = backend.validate(spec)
    assert hyper.n_epochs in (1, "auto")
    handle = backend.start(spec)
    assert isinstance(handle, str) and handle
    seen = _until(backend, handle)
    last = seen[-1]
    assert last.status == "succeeded", last.error
    assert (last.adapter_path and Path(last.adapter_path).is_dir()) or last.remote_model
    keys = [e.key for p in seen for e in p.events]
    assert len(keys) == len(set(keys))  # each event reported once

    other = backend.start(_spec(home, model, extras, "ftjob-contract2", resolved.model_path))
    backend.cancel(other)
    assert _until(backend, other)[-1].status == "cancelled"


def test_a_backend_that_cannot_train_the_model_is_a_400(
    trainer: tuple[TrainingRegistry, str, str, dict[str, Any]],
) -> None:
    registry, kind, model, _extras = trainer
    other = next(k for k in registry.kinds() if k != kind and k in ("local", "openai"))
    with pytest.raises(InvalidRequestError) as info:
        registry.resolve(model, backend=other)
    assert info.value.param == "distillery.backend"
    with pytest.raises(InvalidRequestError) as unknown:
        registry.resolve(model, backend="no-such-trainer")
    assert unknown.value.param == "distillery.backend"


def test_the_configured_backend_and_its_options_are_validated(installed_plugin: Path) -> None:
    assert TrainingConfig(backend="memorize").backend == "memorize"
    with pytest.raises(ValueError, match="unknown trainer kind 'gpu'"):
        TrainingConfig(backend="gpu")
    config = Config.model_validate(
        {
            "providers": {"p": {"kind": "echo", "models": ["parrot-1"]}},
            "training": {"backends": {"memorize": {"polls_to_finish": 0}}},
        }
    )
    registry = TrainingRegistry(config.providers, Path("unused"), training=config.training)
    with pytest.raises(Exception, match=r"training.backends.memorize"):
        registry.resolve("parrot-1")
