from __future__ import annotations

import pytest
from pydantic import ValidationError

from distillery.training.local.config import LocalSFTConfig, auto_batch_size
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
    [(1, 1), (3, 3), (10, 4), (600, 4), (2500, 5), (10_000, 20), (1_000_000, 256)],
)
def test_auto_batch_size(n: int, batch: int) -> None:
    # round(0.2% of n), at least min(n, 4), at most 256
    assert auto_batch_size(n) == batch


def test_resolve_auto_and_learning_rate() -> None:
    cfg = LocalSFTConfig().resolve_auto(12)
    assert (cfg.n_epochs, cfg.batch_size, cfg.learning_rate_multiplier) == (8, 4, 1.0)
    assert cfg.peak_learning_rate == pytest.approx(2e-4)
    explicit = LocalSFTConfig(n_epochs=2, batch_size=16, learning_rate_multiplier=0.5)
    resolved = explicit.resolve_auto(12)
    assert (resolved.n_epochs, resolved.batch_size) == (2, 16)
    assert resolved.peak_learning_rate == pytest.approx(1e-4)
    full = LocalSFTConfig(method="full", learning_rate_multiplier=2).resolve_auto(50)
    assert full.peak_learning_rate == pytest.approx(4e-5)
    assert LocalSFTConfig(learning_rate=1e-3).peak_learning_rate == 1e-3


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValidationError):
        LocalSFTConfig(n_epochs=0)
    with pytest.raises(ValidationError):
        LocalSFTConfig(method="qlora")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        LocalSFTConfig(unknown_field=1)  # type: ignore[call-arg]
