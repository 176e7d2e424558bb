"""The student as the local trainer trains it: device and precision, loading, LoRA, stop hooks
and the optimizer.

The device is ``config.device`` (``auto``: the best one present); bf16 ``auto`` means bf16 where
the device supports it (CUDA's own check, or the CPU's bf16 instructions).

For LoRA the frozen base stays in bf16 (when bf16 is on) while the adapters are fp32 under
autocast, so no base weight is cast on any step; full fine-tuning keeps fp32 master weights.
Models that can run padding-free packed rows (``packing.supports_packing``) get the packed
attention implementation.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distillery import weights
from distillery.training.local import packing
from distillery.training.local.config import LocalSFTConfig

if TYPE_CHECKING:
    import torch


@dataclass
class Runtime:
    """Where the student runs and whether in bf16 (autocast)."""

    device: str
    use_bf16: bool

    @property
    def device_type(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"


def resolve_runtime(config: LocalSFTConfig) -> Runtime:
    """Set the torch threads and pick the device and precision ``config`` asks for."""
    import torch

    cfg = config
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = weights.best_device(None if cfg.device == "auto" else cfg.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available")
    if cfg.bf16 == "auto":
        if device.startswith("cuda"):
            use_bf16 = bool(torch.cuda.is_bf16_supported())
        else:
            use_bf16 = weights.cpu_supports_bf16()
    else:
        use_bf16 = bool(cfg.bf16)
    return Runtime(device, use_bf16)


def autocast(device_type: str, use_bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device_type`` when ``use_bf16``, else nothing."""
    import torch

    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


REFERENCE_ADAPTER = "reference"  # the frozen start adapter of a reinforcement run


@dataclass
class Student:
    """The model being trained and the parts the loop calls directly."""

    model: Any  # the PEFT model for LoRA, else the causal LM itself
    causal_lm: Any
    body: Any  # the decoder (run on all tokens)
    lm_head: Any  # applied to the target positions only
    trainable: list[torch.nn.Parameter]
    n_trainable: int
    n_params: int
    use_packing: bool


def load_student(
    source: weights.ModelSource, config: LocalSFTConfig, *, device: str, use_bf16: bool
) -> Student:
    """Load ``source`` on ``device`` and wrap it for ``config.method``."""
    import torch

    cfg = config
    lora = cfg.method == "lora"
    dtype = "bfloat16" if (use_bf16 and lora) else "float32"
    random.seed(cfg.seed)
    model: Any = weights.load_model(source, dtype=dtype, device=device)
    model.config.use_cache = False
    use_packing = cfg.packing and packing.supports_packing(model)
    if use_packing:
        packing.register_packed_attention()
        model.set_attn_implementation(packing.PACKED_ATTENTION)
    start = getattr(cfg, "start_adapter", None)
    if lora and start:
        from peft import PeftModel

        # the fine-tuned model the run starts from: its adapter is trained on, and a frozen
        # copy of it (a few MB beside the shared base) is the reference the run stays close to
        model = PeftModel.from_pretrained(model, start, is_trainable=True)
        model.load_adapter(start, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        model.set_adapter("default")
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
        causal_lm = model.get_base_model()
    elif lora:
        from peft import LoraConfig, get_peft_model

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        torch.manual_seed(cfg.seed)  # the adapters' initialisation depends on the seed only
        model = get_peft_model(model, peft_config, autocast_adapter_dtype=True)
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
        causal_lm = model.get_base_model()
    else:
        torch.manual_seed(cfg.seed)
        causal_lm = model
    trainable = [
        p for name, p in model.named_parameters() if p.requires_grad and not _reference(name)
    ]
    return Student(
        model=model,
        causal_lm=causal_lm,
        body=causal_lm.base_model,
        lm_head=causal_lm.get_output_embeddings(),
        trainable=trainable,
        n_trainable=sum(p.numel() for p in trainable),
        n_params=sum(p.numel() for p in model.parameters()),
        use_packing=use_packing,
    )


def _reference(name: str) -> bool:
    return f".{REFERENCE_ADAPTER}." in name or name.endswith(f".{REFERENCE_ADAPTER}")


@contextlib.contextmanager
def reference_weights(student: Student) -> Iterator[None]:
    """The model as the run started: the frozen start adapter, or no adapter at all."""
    model = student.model
    if REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
        model.set_adapter(REFERENCE_ADAPTER)
        try:
            yield
        finally:
            model.set_adapter("default")
            for name, p in model.named_parameters():
                if _reference(name):
                    p.requires_grad_(False)
        return
    with model.disable_adapter():
        yield


def install_stop_hooks(body: Any, check_stop: Callable[[], None]) -> None:
    """Call ``check_stop`` before every decoder layer, forward and backward."""
    layers = getattr(body, "layers", None)
    if layers is None:
        return

    def backward_check(grad: torch.Tensor) -> torch.Tensor:
        check_stop()
        return grad

    def pre_hook(module: Any, args: Any) -> None:
        check_stop()

    def post_hook(module: Any, args: Any, output: Any) -> None:
        tensor = output[0] if isinstance(output, tuple) else output
        if getattr(tensor, "requires_grad", False):
            tensor.register_hook(backward_check)

    for layer in layers:
        layer.register_forward_pre_hook(pre_hook)
        layer.register_forward_hook(post_hook)


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    warmup_steps: int


def make_optimizer(
    trainable: list[torch.nn.Parameter], config: LocalSFTConfig, total_steps: int
) -> Optimization:
    """AdamW (fused where available), linear warm-up then linear decay."""
    import torch

    cfg = config
    kwargs: dict[str, Any] = {"lr": cfg.peak_learning_rate, "weight_decay": cfg.weight_decay}
    optimizer: torch.optim.Optimizer
    try:
        optimizer = torch.optim.AdamW(trainable, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(trainable, **kwargs)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)

    def schedule(step: int) -> float:  # every step trains: warm-up never starts at 0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return Optimization(optimizer, scheduler, warmup)
