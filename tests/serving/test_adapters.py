"""LoRA fine-tunes served on the shared base: output, sharing, LRU eviction, lookup."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from distillery import weights
from distillery.errors import DistilleryError, NotFoundError
from distillery.serving import AdapterRef, LocalProvider

from .conftest import MODEL, make_provider, run

pytestmark = pytest.mark.local_model

FT_A = f"ft:{MODEL}:test:abc123"
FT_B = f"ft:{MODEL}:test:def456"
PROMPT = "Where can I get a new ID card?"


def make_adapter(model_dir: Path, target: Path, seed: int) -> Path:
    """A small LoRA with non-trivial random weights, saved in PEFT format."""
    import torch
    from peft import LoraConfig, get_peft_model

    base = weights.load_model(weights.resolve_source(MODEL, model_dir), dtype="float32")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def adapter_dirs(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        FT_A: make_adapter(model_dir, root / "a", seed=1),
        FT_B: make_adapter(model_dir, root / "b", seed=2),
    }


@pytest.fixture(scope="module")
def refs(adapter_dirs: dict[str, Path]) -> dict[str, AdapterRef]:
    return {mid: AdapterRef(mid, MODEL, path) for mid, path in adapter_dirs.items()}


@pytest.fixture(scope="module")
def served(model_dir: Path, refs: dict[str, AdapterRef]) -> Any:
    p = make_provider(model_dir, adapter_resolver=refs.get)
    yield p
    run(p.aclose())


def ask(provider: LocalProvider, model: str) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "max_tokens": 12,
    }
    response = run(provider.create(body))
    assert response["model"] == model
    return str(response["choices"][0]["message"]["content"])


def test_adapters_change_the_output_and_share_one_base(served: LocalProvider) -> None:
    assert served.serves(FT_A) and served.serves(FT_B)
    base = ask(served, MODEL)
    a = ask(served, FT_A)
    b = ask(served, FT_B)
    assert a != base
    assert b != base
    assert a != b
    # switching back and forth selects the right weights, and the plain base is untouched
    assert ask(served, FT_A) == a
    assert ask(served, MODEL) == base
    (status,) = served.status()
    assert status.load_count == 1  # one base in memory for both fine-tunes
    assert {mid for mid, _ in status.adapters} == {FT_A, FT_B}
    assert status.adapter_loads == {FT_A: 1, FT_B: 1}


def test_adapter_and_base_requests_run_concurrently(served: LocalProvider) -> None:
    expected = {m: ask(served, m) for m in (MODEL, FT_A, FT_B)}

    async def together() -> list[dict[str, Any]]:
        bodies = [
            {
                "model": m,
                "messages": [{"role": "user", "content": PROMPT}],
                "temperature": 0,
                "max_tokens": 12,
            }
            for m in (MODEL, FT_A, FT_B)
        ]
        return await asyncio.gather(*(served.create(b) for b in bodies))

    for response in run(together()):
        assert response["choices"][0]["message"]["content"] == expected[response["model"]]


def test_unknown_fine_tune_is_model_not_found(served: LocalProvider) -> None:
    missing = f"ft:{MODEL}:test:nope"
    assert not served.serves(missing)
    with pytest.raises(NotFoundError) as info:
        ask(served, missing)
    assert info.value.status == 404
    assert info.value.code == "model_not_found"


def test_a_broken_adapter_fails_clearly_and_others_keep_serving(
    served: LocalProvider, tmp_path: Path
) -> None:
    (tmp_path / "adapter_config.json").write_text("{not json")
    broken = AdapterRef(f"ft:{MODEL}:test:broken", MODEL, tmp_path)
    served.register_adapter(broken)
    try:
        with pytest.raises(DistilleryError) as info:
            ask(served, broken.model_id)
        assert info.value.code == "model_load_failed"
        assert broken.model_id in info.value.message
        assert ask(served, FT_A) != ask(served, MODEL)
    finally:
        served.unregister_adapter(broken.model_id)


def test_registered_adapters_are_listed(model_dir: Path, refs: dict[str, AdapterRef]) -> None:
    provider = make_provider(model_dir)  # no resolver, nothing loaded
    assert not provider.serves(FT_A)
    provider.register_adapter(refs[FT_A])
    assert provider.serves(FT_A)
    listed = {m.id: m for m in provider.models()}
    assert set(listed) == {MODEL, FT_A}
    assert listed[FT_A].extra["base_model"] == MODEL
    provider.unregister_adapter(FT_A)
    assert not provider.serves(FT_A)
    assert provider.status() == []  # listing and registering load nothing


def test_least_recently_used_adapter_is_evicted_under_the_budget(
    model_dir: Path, refs: dict[str, AdapterRef], served: LocalProvider
) -> None:
    expected_a = ask(served, FT_A)
    tight = make_provider(model_dir, adapter_resolver=refs.get, adapter_memory_mb=1)
    try:
        assert ask(tight, FT_A) == expected_a
        ask(tight, FT_B)
        (status,) = tight.status()
        assert [mid for mid, _ in status.adapters] == [FT_B]  # A was evicted to fit B
        assert ask(tight, FT_A) == expected_a  # reloaded on demand, same weights
        (status,) = tight.status()
        assert [mid for mid, _ in status.adapters] == [FT_A]
        assert status.adapter_loads == {FT_A: 2, FT_B: 1}
        assert status.load_count == 1
    finally:
        run(tight.aclose())


def full_model_copy(model_dir: Path, target: Path, *, negate_norm: bool) -> Path:
    """A whole-model folder as full fine-tuning writes it: the base's files, the weights
    either the base's own (linked) or changed (the final norm negated: different answers)."""
    from safetensors.torch import load_file, save_file

    target.mkdir()
    for item in model_dir.iterdir():
        if item.is_file() and not (negate_norm and item.name == "model.safetensors"):
            (target / item.name).symlink_to(item)
    if negate_norm:
        tensors = load_file(model_dir / "model.safetensors")
        tensors["model.norm.weight"] = -tensors["model.norm.weight"]
        save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_full_fine_tunes_get_their_own_engine_and_idle_ones_make_room(
    model_dir: Path, tmp_path: Path
) -> None:
    same, changed = f"ft:{MODEL}:full:same", f"ft:{MODEL}:full:changed"
    full = {
        same: AdapterRef(
            same, MODEL, full_model_copy(model_dir, tmp_path / "s", negate_norm=False)
        ),
        changed: AdapterRef(
            changed, MODEL, full_model_copy(model_dir, tmp_path / "c", negate_norm=True)
        ),
    }
    provider = make_provider(model_dir, adapter_resolver=full.get, max_full_models=1)
    try:
        base = ask(provider, MODEL)
        assert ask(provider, same) == base  # the same weights, in an engine of its own
        assert {s.model for s in provider.status()} == {MODEL, same}
        assert ask(provider, changed) != base  # its own weights, not the base's
        # one full fine-tune at a time: the idle one was stopped to make room
        assert {s.model for s in provider.status()} == {MODEL, changed}
        assert ask(provider, same) == base  # and starts again on demand
    finally:
        run(provider.aclose())
