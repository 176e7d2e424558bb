"""``LocalSFTConfig``: the hyperparameters of a local supervised fine-tuning run.

The fine-tuning API passes OpenAI's ``n_epochs`` / ``batch_size`` / ``learning_rate_multiplier``
(each a number or ``"auto"``) through unchanged; the worker resolves ``"auto"`` once it knows how
many training examples there are (:meth:`LocalSFTConfig.resolve_auto`), following the rules
OpenAI documents for its own fine-tuning:

- ``n_epochs``: 3, raised so that a small file is seen at least 100 times in total (at most 25
  epochs) and lowered so that a big one is seen at most 25,000 times (at least 1 epoch).
- ``batch_size``: about 0.2% of the examples, at most 256 (OpenAI's figure), but at least 4 (or
  all examples when there are fewer): one optimizer step packs its examples into one forward pass,
  and on CPU a single ~150-token example per pass leaves the matrix units mostly idle.
- ``learning_rate_multiplier``: 1.0, applied to a base learning rate of 2e-4 for LoRA and 2e-5 for
  full fine-tuning (the usual starting points for both).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distillery.weights import EMBEDDED_MODEL
from distillery.wire.fine_tuning_jsonl import auto_n_epochs

Auto = Literal["auto"]

BATCH_FRACTION = 0.002
MIN_AUTO_BATCH_SIZE = 4
MAX_AUTO_BATCH_SIZE = 256
BASE_LEARNING_RATE = {"lora": 2e-4, "full": 2e-5}
DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


def auto_batch_size(n_examples: int) -> int:
    """~0.2% of the examples, clamped to [min(n, 4), 256]."""
    n = max(1, n_examples)
    return max(min(n, MIN_AUTO_BATCH_SIZE), min(MAX_AUTO_BATCH_SIZE, round(n * BATCH_FRACTION)))


class LocalSFTConfig(BaseModel):
    """Hyperparameters of :class:`~distillery.training.local.backend.LocalBackend`."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(EMBEDDED_MODEL, description="Model name (the student to fine-tune).")
    base_model_path: str | None = Field(
        None, description="Transformers folder or .gguf file; only the embedded model needs none."
    )
    chat_template: str | None = Field(
        None,
        description="Jinja chat template overriding the model's own (its local provider's "
        "`chat_template` setting, so that training renders what serving renders).",
    )
    method: Literal["lora", "full"] = Field(
        "lora", description="LoRA adapters on a frozen base, or full fine-tuning."
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="LoRA dropout; 0.05 costs about 25% of CPU throughput."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        description="Linear layers that get LoRA adapters (all attention and MLP projections).",
    )
    n_epochs: int | Auto = Field("auto", description="Passes over the training file.")
    batch_size: int | Auto = Field("auto", description="Examples per optimizer step.")
    learning_rate_multiplier: float | Auto = Field(
        "auto", description="Multiplies the base learning rate (2e-4 LoRA, 2e-5 full)."
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Explicit peak learning rate; overrides base x multiplier."
    )
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        description="Split every batch into at least this many forward/backward passes "
        "(memory only: the loss is still the mean over all target tokens of the batch).",
    )
    max_tokens_per_pass: int = Field(
        4096, ge=64, description="Most tokens packed into one forward/backward pass."
    )
    max_length: int = Field(1024, ge=8, description="Examples are truncated to this many tokens.")
    packing: bool = Field(
        True,
        description="Padding-free packing of a batch into one row (per-example attention); "
        "falls back to padded batches for models that cannot use it.",
    )
    seed: int = Field(42, description="Seeds LoRA initialisation and the data order.")
    warmup_ratio: float = Field(0.03, ge=0.0, le=1.0, description="Linear warm-up share of steps.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (global L2 norm).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="cuda when available.")
    devices: int = Field(
        1,
        ge=1,
        description="Data-parallel training processes (one per GPU on cuda, each on its own "
        "cores on cpu); each step's batch_size examples are split between them.",
    )
    bf16: bool | Auto = Field(
        "auto",
        description="bf16 matmuls: on with CUDA bf16 or a CPU with AMX/AVX512-BF16 "
        "(LoRA keeps the frozen base in bf16 and the adapters in fp32 under autocast).",
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores).")
    merge_adapter: bool = Field(
        False, description="Also write the base with the adapter merged into <job_dir>/merged/."
    )
    logging_steps: int = Field(1, ge=1, description="A metrics event every this many steps.")

    @model_validator(mode="after")
    def _check_positive(self) -> LocalSFTConfig:
        if isinstance(self.n_epochs, int) and self.n_epochs < 1:
            raise ValueError("n_epochs must be at least 1")
        if isinstance(self.batch_size, int) and self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if isinstance(self.learning_rate_multiplier, float) and self.learning_rate_multiplier <= 0:
            raise ValueError("learning_rate_multiplier must be positive")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
        return self

    def resolve_auto(self, n_examples: int) -> LocalSFTConfig:
        """A copy with every ``"auto"`` replaced by its value for ``n_examples`` examples."""
        return self.model_copy(
            update={
                "n_epochs": auto_n_epochs(n_examples) if self.n_epochs == "auto" else self.n_epochs,
                "batch_size": auto_batch_size(n_examples)
                if self.batch_size == "auto"
                else self.batch_size,
                "learning_rate_multiplier": 1.0
                if self.learning_rate_multiplier == "auto"
                else float(self.learning_rate_multiplier),
            }
        )

    @property
    def peak_learning_rate(self) -> float:
        """``learning_rate`` if set, else the method's base rate times the multiplier."""
        if self.learning_rate is not None:
            return self.learning_rate
        multiplier = (
            1.0 if self.learning_rate_multiplier == "auto" else self.learning_rate_multiplier
        )
        return BASE_LEARNING_RATE[self.method] * float(multiplier)

    def hyperparameters(self) -> dict[str, int | float | str]:
        """Resolved values in OpenAI's ``hyperparameters`` shape (after :meth:`resolve_auto`)."""
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }
