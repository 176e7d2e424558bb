"""LocalBackend's job config: the local provider's chat template reaches the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distillery.errors import InvalidRequestError
from distillery.providers.local_config import LocalProviderConfig
from distillery.services import _training_registry
from distillery.settings import Config
from distillery.training.base import FineTuneSpec, Hyperparameters
from distillery.training.local.backend import LocalBackend

TEMPLATE = "{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}"


def spec(tmp_path: Path, model: str = "student", **extras: Any) -> FineTuneSpec:
    return FineTuneSpec(
        job_id="ftjob-1",
        model=model,
        provider="local",
        training_file="file-1",
        training_path=tmp_path / "train.jsonl",
        validation_file=None,
        validation_path=None,
        hyperparameters=Hyperparameters(),
        seed=1,
        suffix=None,
        job_dir=tmp_path / "job",
        training_examples=10,
        extras=extras,
    )


def test_the_providers_chat_template_is_trained_with(tmp_path: Path) -> None:
    path = tmp_path / "chat.jinja"
    path.write_text(TEMPLATE, encoding="utf-8")
    config = Config(
        providers={
            "local": LocalProviderConfig(
                models=["student", "other"], chat_template={"student": str(path)}
            )
        }
    )
    registry = _training_registry(config, tmp_path)
    backend = registry.resolve("student").backend
    assert isinstance(backend, LocalBackend)
    assert backend.config(spec(tmp_path)).chat_template == TEMPLATE
    assert backend.config(spec(tmp_path, "other")).chat_template is None
    assert LocalBackend().config(spec(tmp_path)).chat_template is None


def test_a_job_cannot_set_its_own_template(tmp_path: Path) -> None:
    backend = LocalBackend(provider=LocalProviderConfig(models=["student"]))
    with pytest.raises(InvalidRequestError) as info:
        backend.config(spec(tmp_path, chat_template=TEMPLATE))
    assert info.value.param == "distillery.chat_template"
