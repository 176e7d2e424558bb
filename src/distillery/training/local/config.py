"""``LocalSFTConfig``: the hyperparameters of a local supervised fine-tuning run.

The fine-tuning API passes OpenAI's ``n_epochs`` / ``batch_size`` / ``learning_rate_multiplier``
(each a number or ``"auto"``) through unchanged; the worker resolves ``"auto"`` once it has read
the data (:meth:`LocalSFTConfig.resolve_auto` with the data's :class:`DataShape`); explicit values
always win. The rules (``docs/fine_tuning.md`` explains them with the measurements behind them):

- ``n_epochs``: OpenAI's documented rule: 3, raised so that a small file is seen at least 100
  times in total (at most 25 epochs) and lowered so that a big one is seen at most 25,000 times
  (at least 1 epoch). A classification task with few examples per label (the label space of the
  task's measure) gets enough epochs for each label to be seen about 40 times, at most 8, when the
  checkpoint is chosen on a validation split: that run keeps its best epoch and stops early once
  the measure stops improving, so a generous count costs little. (CLINC150 with 8 examples per
  intent: the held-out intent accuracy was still rising after 3 epochs, 65/76/81%.)
- ``batch_size``: at least 8, and large enough that the shared system prompt, which each forward
  pass computes once for all of its examples (``packing.pack_shared``), is at most a third of the
  pass (``2 x prefix / tokens after it``), so the cost per example hardly grows with the prompt;
  at most 32, and at most a sixteenth of the examples (16 steps an epoch); OpenAI's ~0.2% of the
  examples when that is more (at most 256).
- ``learning_rate_multiplier``: for LoRA ``2.5 x sqrt(batch_size / 8)`` on a base learning rate of
  2e-4 (5e-4 at batch 8, 1e-3 at batch 32: the square-root rule for Adam); for full fine-tuning
  1.0 on 2e-5.

Data given without a validation file keeps ``holdout`` examples aside for choosing the checkpoint
(``"auto"``: a tenth, 20 to 100, for files of at least 100 examples; stratified by label).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distillery.weights import EMBEDDED_MODEL
from distillery.wire.fine_tuning_jsonl import auto_n_epochs

Auto = Literal["auto"]

BATCH_FRACTION = 0.002
MIN_AUTO_BATCH_SIZE = 8
MAX_PREFIX_AWARE_BATCH = 32  # the shared-prompt rule stops here
MIN_STEPS_PER_EPOCH = 16
MAX_AUTO_BATCH_SIZE = 256
PREFIX_SHARE = 3  # the shared prefix at most 1/PREFIX_SHARE of a pass's tokens
LORA_LR_MULTIPLIER_AT_8 = 2.5
LABEL_VIEWS = 40  # times each label is seen in a classification run that chooses its epoch
MAX_LABEL_EPOCHS = 8
HOLDOUT_MIN_EXAMPLES = 100  # files smaller than this train on everything
HOLDOUT_SHARE = 0.1
HOLDOUT_RANGE = (20, 100)
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


@dataclass(frozen=True)
class DataShape:
    """What the automatic recipe reads from the tokenized training data."""

    n_examples: int
    shared_prefix: int = 0  # tokens of the prompt prefix every example starts with
    mean_rest_tokens: float = 0.0  # mean tokens of an example after that prefix
    n_labels: int = 0  # label space of the task's measure (0: free text or unknown)


def auto_batch_size(shape: DataShape | int) -> int:
    """The batch size for ``shape`` (the rules in the module docstring)."""
    if isinstance(shape, int):
        shape = DataShape(shape)
    n = max(1, shape.n_examples)
    batch = MIN_AUTO_BATCH_SIZE
    if shape.shared_prefix and shape.mean_rest_tokens > 0:
        need = math.ceil((PREFIX_SHARE - 1) * shape.shared_prefix / shape.mean_rest_tokens)
        batch = max(batch, min(MAX_PREFIX_AWARE_BATCH, need))
    batch = min(batch, max(4, n // MIN_STEPS_PER_EPOCH))
    batch = max(batch, min(MAX_AUTO_BATCH_SIZE, round(n * BATCH_FRACTION)))
    return min(n, batch)


def auto_epochs(shape: DataShape, *, selecting: bool) -> int:
    """OpenAI's rule; more for few examples per label when the best epoch is chosen."""
    epochs = auto_n_epochs(shape.n_examples)
    if selecting and shape.n_labels >= 2 and shape.n_examples:
        per_label = shape.n_examples / shape.n_labels
        epochs = max(epochs, min(MAX_LABEL_EPOCHS, math.ceil(LABEL_VIEWS / per_label)))
    return epochs


def auto_learning_rate_multiplier(method: str, batch_size: int) -> float:
    """``2.5 x sqrt(batch / 8)`` for LoRA (rounded to 2 decimals), 1.0 for full fine-tuning."""
    if method != "lora":
        return 1.0
    return round(LORA_LR_MULTIPLIER_AT_8 * math.sqrt(batch_size / 8), 2)


def auto_holdout(n_examples: int) -> int:
    """Examples kept aside to choose the checkpoint when there is no validation file."""
    if n_examples < HOLDOUT_MIN_EXAMPLES:
        return 0
    low, high = HOLDOUT_RANGE
    return max(low, min(high, round(n_examples * HOLDOUT_SHARE)))


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
    holdout: int | Auto = Field(
        "auto",
        description="Training examples kept aside to choose the checkpoint when there is no "
        "validation file (auto: a tenth, 20 to 100, from 100 examples up; 0: none).",
    )
    checkpoint: Literal["best", "last"] = Field(
        "best",
        description="Keep the epoch that scores best on the validation split by the task's "
        "measure (the base model when no epoch beats it), or the last epoch.",
    )
    early_stopping_patience: int = Field(
        1,
        ge=0,
        description="Stop after this many epochs without a better validation score (0: never).",
    )
    measure_fields: list[str] | None = Field(
        None,
        description="JSON fields of the answer that the validation measure compares (default: "
        "the label-like fields found in the answers).",
    )

    @model_validator(mode="after")
    def _check_positive(self) -> LocalSFTConfig:
        if isinstance(self.n_epochs, int) and self.n_epochs < 1:
            raise ValueError("n_epochs must be at least 1")
        if isinstance(self.batch_size, int) and self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if isinstance(self.learning_rate_multiplier, float) and self.learning_rate_multiplier <= 0:
            raise ValueError("learning_rate_multiplier must be positive")
        if isinstance(self.holdout, int) and self.holdout < 0:
            raise ValueError("holdout must be 0 or more")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
        return self

    def resolve_auto(self, shape: DataShape | int, *, selecting: bool = False) -> LocalSFTConfig:
        """A copy with every ``"auto"`` hyperparameter replaced by its value for the data
        (``shape``, or only its number of examples before the data is read); ``selecting``: the
        run chooses its best epoch on a validation split."""
        if isinstance(shape, int):
            shape = DataShape(shape)
        batch = auto_batch_size(shape) if self.batch_size == "auto" else int(self.batch_size)
        return self.model_copy(
            update={
                "n_epochs": auto_epochs(shape, selecting=selecting)
                if self.n_epochs == "auto"
                else self.n_epochs,
                "batch_size": batch,
                "learning_rate_multiplier": auto_learning_rate_multiplier(self.method, batch)
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
