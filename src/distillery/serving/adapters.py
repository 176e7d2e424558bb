"""LoRA adapters (PEFT format) served on top of a shared base model.

:class:`AdapterRef` names a fine-tuned model (``ft:<base>:<suffix>:<id>``) and where its adapter
lives. An engine keeps one base model in memory and an :class:`AdapterPool` loads adapters into it
with PEFT's multi-adapter support (``load_adapter(path, adapter_name)``, ``set_adapter``) on first
use, and evicts the least recently used ones when their weights exceed the memory budget. Adapters
that running sequences use are pinned and never evicted; a single adapter larger than the whole
budget is still served (alone).

peft and torch are imported inside functions only.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery.errors import DistilleryError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterRef:
    """A fine-tuned model of ``base_model``: a PEFT adapter folder at ``path``, served on the
    shared base, or a whole transformers folder (full fine-tuning), served as a model of its own.
    """

    model_id: str
    base_model: str
    path: str | Path
    created: int = 0


def is_full_model(path: str | Path) -> bool:
    """Whether ``path`` holds a whole fine-tuned model rather than a PEFT adapter (a finished
    fine-tune's folder never changes kind, so each folder is looked at once)."""
    return _is_full_model(str(path))


@functools.lru_cache(maxsize=1024)
def _is_full_model(path: str) -> bool:
    p = Path(path)
    return (p / "config.json").is_file() and not (p / "adapter_config.json").is_file()


@dataclass(frozen=True)
class LoadedAdapter:
    model_id: str
    name: str
    nbytes: int
    loaded_at: float


def adapter_name(model_id: str) -> str:
    """A module-safe PEFT adapter name for a model id (``ft:...`` contains ':' and '.')."""
    return "ft_" + hashlib.sha256(model_id.encode()).hexdigest()[:16]


class AdapterPool:
    """The adapters loaded into one base model. Used from the engine thread only."""

    def __init__(self, model: PreTrainedModel, *, budget_bytes: int, dtype: Any) -> None:
        self._base = model
        self._peft: Any = None  # peft.PeftModel once the first adapter is loaded
        self._budget = budget_bytes
        self._dtype = dtype
        self._loaded: OrderedDict[str, LoadedAdapter] = OrderedDict()  # LRU order, oldest first
        self._pins: dict[str, int] = {}
        self._active: str | None = None
        self._active_known = True  # False after a load or unload changed the adapter layers
        self.loads: dict[
            str, int
        ] = {}  # model_id -> how many times it was loaded (evictions reload)

    @property
    def used_bytes(self) -> int:
        return sum(a.nbytes for a in self._loaded.values())

    def loaded(self) -> list[LoadedAdapter]:
        return list(self._loaded.values())

    def pin(self, model_id: str) -> None:
        self._pins[model_id] = self._pins.get(model_id, 0) + 1

    def unpin(self, model_id: str) -> None:
        left = self._pins.get(model_id, 0) - 1
        if left > 0:
            self._pins[model_id] = left
        else:
            self._pins.pop(model_id, None)

    def ensure(self, ref: AdapterRef) -> None:
        """Load ``ref`` unless it is loaded; mark it most recently used."""
        if ref.model_id in self._loaded:
            self._loaded.move_to_end(ref.model_id)
            return
        path = Path(ref.path)
        if not (path / "adapter_config.json").is_file():
            raise DistilleryError(
                f"cannot load adapter {ref.model_id!r}: no PEFT adapter at {path}",
                code="model_load_failed",
            )
        name = adapter_name(ref.model_id)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self._load(name, path)
        except Exception as exc:
            self._discard(name)
            raise DistilleryError(
                f"cannot load adapter {ref.model_id!r} from {path}: {exc}", code="model_load_failed"
            ) from exc
        nbytes = self._adapter_bytes(name)
        self._loaded[ref.model_id] = LoadedAdapter(ref.model_id, name, nbytes, time.time())
        self.loads[ref.model_id] = self.loads.get(ref.model_id, 0) + 1
        self._evict(keep=ref.model_id)

    def _load(self, name: str, path: Path) -> None:
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(str(path))
        if config.is_prompt_learning:
            raise ValueError("prompt-learning adapters are not supported; use LoRA")
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(
                self._base,
                str(path),
                adapter_name=name,
                is_trainable=False,
                autocast_adapter_dtype=False,
            )
            self._peft.eval()
        else:
            self._peft.load_adapter(
                str(path), adapter_name=name, is_trainable=False, autocast_adapter_dtype=False
            )
        # run the adapter in the base dtype (bf16 where the base is bf16): no casts per layer
        marker = f".{name}."
        for pname, param in self._peft.named_parameters():
            if marker in pname and param.dtype != self._dtype and param.is_floating_point():
                param.data = param.data.to(self._dtype)
        self._active_known = False

    def _adapter_bytes(self, name: str) -> int:
        marker = f".{name}."
        return sum(
            p.numel() * p.element_size()
            for pname, p in self._peft.named_parameters()
            if marker in pname
        )

    def _discard(self, name: str) -> None:
        if self._peft is None:
            return
        if name in self._peft.peft_config:
            with warnings.catch_warnings():  # "adapter X was active which is now deleted"
                warnings.simplefilter("ignore", UserWarning)
                self._peft.delete_adapter(name)
        if not self._peft.peft_config:
            # no adapter left: restore the plain base modules (no LoRA wrappers on the hot path)
            self._peft.base_model.unload()
            self._peft = None
        self._active_known = False

    def _evict(self, keep: str) -> None:
        for model_id in list(self._loaded):
            if self.used_bytes <= self._budget:
                return
            if model_id == keep or self._pins.get(model_id):
                continue
            entry = self._loaded.pop(model_id)
            self._discard(entry.name)
            log.info(
                "evicted adapter %s (%d bytes) to fit the adapter memory budget",
                model_id,
                entry.nbytes,
            )

    def activate(self, model_id: str | None) -> None:
        """Make ``model_id``'s adapter the one the next forward pass uses (None: the plain base)."""
        if self._peft is None:
            if model_id is not None:
                raise DistilleryError(f"adapter {model_id!r} is not loaded")
            self._active, self._active_known = None, True
            return
        name = self._loaded[model_id].name if model_id is not None else None
        if self._active_known and name == self._active:
            return
        tuner = self._peft.base_model
        if name is None:
            tuner.disable_adapter_layers()
        else:
            tuner.enable_adapter_layers()
            tuner.set_adapter(name, inference_mode=True)
        self._active = name
        self._active_known = True
