"""A finished local run's outputs: ``<output>/adapter/``, ``merged/`` and the training record.

``adapter/`` is the final weights as a servable folder (the PEFT adapter, or the whole model for
full fine-tuning, plus the tokenizer) with ``distillery_training.json`` (the resolved config and
the final metrics) beside them. ``merged/`` (LoRA with ``merge_adapter``) is the adapter merged
into an fp32 copy of the base. Each folder is written under a temporary name and renamed, so a
folder with the final name is complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery import weights
from distillery.training.local.checkpoints import ADAPTER, MERGED
from distillery.training.local.config import LocalSFTConfig


def write_adapter(output_dir: Path, write_weights: Callable[[Path], None]) -> Path:
    """Write the final weights into ``output_dir/adapter`` (replacing an older one)."""
    adapter = output_dir / ADAPTER
    tmp = output_dir / f".{ADAPTER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_weights(tmp)
    shutil.rmtree(adapter, ignore_errors=True)
    tmp.rename(adapter)
    return adapter


def write_training_record(adapter: Path, config: LocalSFTConfig, metrics: dict[str, Any]) -> None:
    """``distillery_training.json`` beside the weights: the config trained with and the metrics."""
    (adapter / "distillery_training.json").write_text(
        json.dumps({"config": config.model_dump(mode="json"), "metrics": metrics}, indent=2)
    )


def merge_adapter(
    source: weights.ModelSource, adapter: Path, output_dir: Path, tokenizer: Any
) -> Path:
    """Merge the adapter into an fp32 copy of the base and save it in ``output_dir/merged``."""
    from peft import PeftModel

    base = weights.load_model(source, dtype="float32", device="cpu")
    merged_model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    target = output_dir / MERGED
    tmp = output_dir / f".{MERGED}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged_model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
