"""Checkpoints of a local run: ``<output>/checkpoints/epoch-<N>/`` and resuming from the last.

Each checkpoint folder holds the weights as a servable folder (the PEFT adapter, or the whole
model for full fine-tuning, plus the tokenizer) and ``trainer_state.pt``: the epoch and step, the
optimizer and scheduler state, the RNG states, the config and what the caller adds (trained
tokens, the metrics history, the training seconds). A checkpoint is written into a temporary
folder and renamed, so a folder named ``epoch-<N>`` with a state file is complete; only the latest
keeps its optimizer state (:func:`slim_previous`).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery.training.local.config import LocalSFTConfig

STATE_FILE = "trainer_state.pt"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
MERGED = "merged"

WarnFn = Callable[[str], None]


def checkpoint_epochs(output_dir: Path) -> list[int]:
    """Epochs with a complete checkpoint under ``output_dir/checkpoints``, ascending."""
    root = output_dir / CHECKPOINTS
    found = []
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith("epoch-") and (d / STATE_FILE).is_file():
                with contextlib.suppress(ValueError):
                    found.append(int(d.name.removeprefix("epoch-")))
    return sorted(found)


def checkpoint_dir(output_dir: Path, epoch: int) -> Path:
    return output_dir / CHECKPOINTS / f"epoch-{epoch}"


def copy_weights(checkpoint: Path, target: Path) -> None:
    """A checkpoint's servable folder (weights and tokenizer, not the trainer state) copied to
    ``target``."""
    shutil.copytree(checkpoint, target, ignore=shutil.ignore_patterns(STATE_FILE))


def save_weights(
    path: Path, config: LocalSFTConfig, model: Any, causal_lm: Any, tokenizer: Any
) -> None:
    """The adapter (or whole model) and the tokenizer: each saved folder is servable."""
    if config.method == "lora":
        # the trained adapter only (a reinforcement run also holds its frozen start adapter)
        model.save_pretrained(str(path), selected_adapters=["default"])
    else:
        previous = causal_lm.config._attn_implementation
        causal_lm.set_attn_implementation("sdpa")
        try:
            causal_lm.save_pretrained(str(path))
        finally:
            causal_lm.set_attn_implementation(previous)
    tokenizer.save_pretrained(str(path))


def save_checkpoint(
    output_dir: Path,
    epoch: int,
    step: int,
    state: dict[str, Any],
    *,
    config: LocalSFTConfig,
    write_weights: Callable[[Path], None],
    optimizer: Any,
    scheduler: Any,
) -> Path:
    """Write ``checkpoints/epoch-<epoch>/`` (weights + ``trainer_state.pt``) atomically."""
    import torch

    root = output_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch}"
    tmp = root / f".epoch-{epoch}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_weights(tmp)
    torch.save(
        {
            **state,
            "epoch": epoch,
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            "config": config.model_dump(mode="json"),
        },
        tmp / STATE_FILE,
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    slim_previous(root, epoch)
    return final


def slim_previous(root: Path, epoch: int) -> None:
    """Drop the optimizer state (2x the trainable weights) from older checkpoints: only the
    latest one is resumed from, the older ones stay loadable as adapters/models."""
    import torch

    for older in checkpoint_epochs(root.parent):
        path = root / f"epoch-{older}" / STATE_FILE
        if older >= epoch:
            continue
        state = torch.load(path, weights_only=False)
        if state.get("optimizer") is None:
            continue
        state["optimizer"] = None
        tmp = path.with_name(f".{STATE_FILE}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)


def load_latest(
    output_dir: Path,
    *,
    config: LocalSFTConfig,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    warn: WarnFn,
) -> dict[str, Any] | None:
    """Load the latest checkpoint into ``model``/``optimizer``/``scheduler`` and the RNGs;
    returns its state (None when there is none)."""
    import torch

    epochs = checkpoint_epochs(output_dir)
    if not epochs:
        return None
    path = output_dir / CHECKPOINTS / f"epoch-{epochs[-1]}"
    state: dict[str, Any] = torch.load(path / STATE_FILE, weights_only=False)
    saved = state.get("config", {})
    for key in ("n_epochs", "batch_size", "method", "max_length", "seed"):
        if key in saved and saved[key] != getattr(config, key):
            warn(
                f"resuming with {key}={getattr(config, key)!r} although the "
                f"checkpoint was trained with {saved[key]!r}"
            )
    from safetensors.torch import load_file

    if config.method == "lora":
        from peft import set_peft_model_state_dict

        tensors = load_file(str(path / "adapter_model.safetensors"))
        set_peft_model_state_dict(model, tensors)
    else:
        tensors = {}
        for shard in sorted(path.glob("model*.safetensors")):
            tensors.update(load_file(str(shard)))
        missing, _ = model.load_state_dict(tensors, strict=False)
        if any("lm_head" not in k for k in missing):
            raise RuntimeError(f"checkpoint {path} lacks weights: {missing[:3]}")
    if state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    else:
        warn(f"{path.name} has no optimizer state: resuming without it")
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    return state
