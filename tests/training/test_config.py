from __future__ import annotations

import pytest
from pydantic import ValidationError

from distillery.training.local.config import (
    DataShape,
    LocalSFTConfig,
    auto_batch_size,
    auto_holdout,
)
from distillery.wire.fine_tuning_jsonl import auto_n_epochs

pytestmark = pytest.mark.training


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (1, 25),
        (3, 25),
        (10, 10),
        (12, 8),
        (33, 3),
        (34, 3),
        (100, 3),
        (8333, 3),
        (8334, 2),
        (12_500, 2),
        (30_000, 1),
    ],
)
def test_auto_epochs_follow_openai_rule(n: int, epochs: int) -> None:
    # n*3 < 100 -> min(25, 100 // n); n*3 > 25000 -> max(1, 25000 // n); else 3
    assert auto_n_epochs(n) == epochs


@pytest.mark.parametrize(
    ("n", "batch"),
    [(1, 1), (3, 3), (10, 4), (100, 6), (600, 8), (2500, 8), (10_000, 20), (1_000_000, 256)],
)
def test_auto_batch_size_from_the_count(n: int, batch: int) -> None:
    # 8, at most a sixteenth of the examples (at least 4), OpenAI's 0.2% when more, at most 256
    assert auto_batch_size(n) == batch


@pytest.mark.parametrize(
    ("shape", "batch"),
    [
        (DataShape(1000, shared_prefix=0, mean_rest_tokens=80), 8),
        # the shared prompt at most a third of a pass: 2 x 400 / 50 = 16
        (DataShape(1000, shared_prefix=400, mean_rest_tokens=50), 16),
        (DataShape(1200, shared_prefix=1000, mean_rest_tokens=35), 32),  # capped at 32
        (DataShape(100, shared_prefix=400, mean_rest_tokens=50), 6),  # 16 steps an epoch
        (DataShape(535, shared_prefix=345, mean_rest_tokens=80), 9),
    ],
)
def test_auto_batch_size_grows_with_the_shared_prompt(shape: DataShape, batch: int) -> None:
    assert auto_batch_size(shape) == batch


def test_resolve_auto_and_learning_rate() -> None:
    cfg = LocalSFTConfig().resolve_auto(12)
    # 12 examples: 100 // 12 epochs, batch 4, LoRA rate 2.5 x sqrt(4 / 8)
    assert (cfg.n_epochs, cfg.batch_size, cfg.learning_rate_multiplier) == (8, 4, 1.77)
    assert cfg.peak_learning_rate == pytest.approx(2e-4 * 1.77)
    shaped = LocalSFTConfig().resolve_auto(DataShape(1200, 1000, 35.0))
    assert (shaped.batch_size, shaped.learning_rate_multiplier) == (32, 5.0)
    assert shaped.peak_learning_rate == pytest.approx(1e-3)
    explicit = LocalSFTConfig(n_epochs=2, batch_size=16, learning_rate_multiplier=0.5)
    resolved = explicit.resolve_auto(DataShape(1200, 1000, 35.0))
    assert (resolved.n_epochs, resolved.batch_size) == (2, 16)
    assert resolved.peak_learning_rate == pytest.approx(1e-4)
    # an explicit batch size sets the automatic learning rate
    assert LocalSFTConfig(batch_size=32).resolve_auto(50).learning_rate_multiplier == 5.0
    full = LocalSFTConfig(method="full").resolve_auto(50)
    assert full.learning_rate_multiplier == 1.0
    assert full.peak_learning_rate == pytest.approx(2e-5)
    assert LocalSFTConfig(learning_rate=1e-3).peak_learning_rate == 1e-3


@pytest.mark.parametrize(("n", "held"), [(20, 0), (99, 0), (100, 20), (535, 54), (5000, 100)])
def test_auto_holdout(n: int, held: int) -> None:
    assert auto_holdout(n) == held


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValidationError):
        LocalSFTConfig(n_epochs=0)
    with pytest.raises(ValidationError):
        LocalSFTConfig(holdout=-1)
    with pytest.raises(ValidationError):
        LocalSFTConfig(method="qlora")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        LocalSFTConfig(unknown_field=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("shape", "selecting", "epochs"),
    [
        (DataShape(1125, n_labels=151), True, 6),  # CLINC150, 8 per intent: 40 views per label
        (DataShape(1125, n_labels=151), False, 3),  # no validation split: OpenAI's rule
        (DataShape(2400, n_labels=151), True, 3),  # 16 per intent
        (DataShape(300, n_labels=150), True, 8),  # 2 per label: at most 8
        (DataShape(535, n_labels=5), True, 3),  # the demo
        (DataShape(20, n_labels=0), True, 5),  # free text: OpenAI's rule (100 // 20)
    ],
)
def test_auto_epochs_see_each_label_enough(shape: DataShape, selecting: bool, epochs: int) -> None:
    assert LocalSFTConfig().resolve_auto(shape, selecting=selecting).n_epochs == epochs
