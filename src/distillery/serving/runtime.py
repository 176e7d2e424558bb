"""A base model loaded for the generation engine: weights, tokenizer and what the engine needs.

:func:`load_runtime` runs on the engine's thread the first time the model is used. It picks the
device and dtype (the provider's settings, else the best present), loads the tokenizer (with the
provider's chat template, if set) and the weights, and measures what the scheduler works with:
the context length, the end-of-sequence ids (the model's, the tokenizer's and the template's
end-of-turn tokens), the KV shape and a KV budget in tokens (a share of the memory free at load
time). The grammar compiler and the LoRA adapter pool are built on the loaded model.

Attention: the engine passes its own 4D masks. A model with sliding-window layers (Gemma 3,
Mistral, Phi-3, Qwen2/Qwen3 with ``sliding_window``) also gets one windowed mask per window, by
token position, and the engine's attention function gives each layer the mask of its own window
(``attention``), so that every layer attends exactly as in ``model.generate``, also past the
window. A model the engine cannot run exactly is refused at load
(:class:`ModelNotSupportedError`, a 400 naming its architecture), never answered approximately.

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery.errors import DistilleryError, InvalidRequestError
from distillery.serving import attention
from distillery.serving.adapters import AdapterPool
from distillery.serving.constrained import GrammarCompiler
from distillery.serving.head import LastColumn, OutputHead, exact_head
from distillery.serving.kv_cache import SlotCache

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class ModelRuntime:
    """A loaded base model and the figures the engine schedules with."""

    name: str
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    device: str
    dtype: str
    context_length: int
    vocab_size: int
    eos: frozenset[int]
    pad: int
    kv_budget_tokens: int
    kv_shape: tuple[int, int, int]  # layers, kv heads, head dim
    windows: tuple[int, ...]  # the sliding windows of the model's layers (none: full attention)
    compiler: GrammarCompiler
    adapters: AdapterPool
    head: OutputHead | None = None  # the output head run apart from the body (``head``)

    def last_column(self, **inputs: Any) -> LastColumn:
        """One forward pass; each row's output at its last column: the body's hidden state
        when the head runs apart, else the whole model's logits."""
        if self.head is not None:
            out = self.model.get_decoder()(**inputs)  # type: ignore[no-untyped-call]
            return LastColumn(out.last_hidden_state[:, -1, :], self.head)
        out = self.model(**inputs, logits_to_keep=1)
        return LastColumn(out.logits[:, -1, :], None)

    def new_cache(self) -> SlotCache:
        layers, kv_heads, head_dim = self.kv_shape
        return SlotCache(
            layers=layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
            dtype=self.model.dtype,
            device=self.model.device,
        )

    def window_kwargs(
        self, full: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> dict[str, attention.WindowMasks]:
        """The forward kwarg carrying the sliding-window masks (none for full-attention models)."""
        if not self.windows:
            return {}
        masks = attention.window_masks(full, query_positions, key_positions, self.windows)
        return {attention.KWARG: masks}


def load_runtime(
    model_name: str,
    *,
    source_path: str | None,
    device: str | None,
    dtype: str | None,
    threads: int | None,
    chat_template: str | None,
    adapter_budget: int,
) -> ModelRuntime:
    """Load ``model_name`` (from ``source_path`` when given) for the engine."""
    import torch

    from distillery import weights

    source = weights.resolve_source(model_name, source_path)
    device = weights.best_device(device)
    dtype = dtype or weights.best_dtype(device)
    if device == "cpu":
        torch.set_num_threads(threads or inference_threads())
    tokenizer = weights.load_tokenizer(source, chat_template=chat_template)
    model = weights.load_model(source, dtype=dtype, device=device)
    model.eval()  # type: ignore[no-untyped-call]
    return runtime_for(
        model_name, model, tokenizer, adapter_budget=adapter_budget, device=device, dtype=dtype
    )


def runtime_for(
    model_name: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    adapter_budget: int = 0,
    device: str | None = None,
    dtype: str | None = None,
) -> ModelRuntime:
    """The engine's view of a model already loaded: its figures measured, its attention set to
    the engine's. The reinforcement trainer samples with the weights it is training this way (a
    LoRA model's injected layers are part of ``model``)."""
    import torch

    from distillery import chat_templates

    device = device or str(model.device)
    dtype = dtype or str(model.dtype).removeprefix("torch.")
    config = model.config.get_text_config()
    windows = _check_architecture(model_name, model)
    context_length = int(getattr(config, "max_position_embeddings", 0) or 0) or int(
        getattr(tokenizer, "model_max_length", 2048)
    )
    eos: set[int] = set()
    for value in (
        getattr(model.generation_config, "eos_token_id", None),
        tokenizer.eos_token_id,
    ):
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, list):
            eos.update(int(v) for v in value)
    eos.update(chat_templates.end_of_turn_ids(tokenizer))  # <end_of_turn>, <|eot_id|>...
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos))
    vocab_size = int(model.get_output_embeddings().weight.shape[0])  # type: ignore[no-untyped-call]
    head_dim = int(
        getattr(config, "head_dim", 0) or config.hidden_size // config.num_attention_heads
    )
    kv_heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    kv_shape = (int(config.num_hidden_layers), kv_heads, head_dim)
    element = torch.empty((), dtype=model.dtype).element_size()
    per_token = 2 * kv_shape[0] * kv_heads * head_dim * element
    kv_budget_tokens = _memory_budget(device) // per_token // 2
    return ModelRuntime(
        name=model_name,
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        context_length=context_length,
        vocab_size=vocab_size,
        eos=frozenset(eos),
        pad=pad,
        kv_budget_tokens=kv_budget_tokens,
        kv_shape=kv_shape,
        windows=windows,
        compiler=GrammarCompiler(tokenizer, sorted(eos)),
        adapters=AdapterPool(model, budget_bytes=adapter_budget, dtype=model.dtype),
        head=exact_head(model, windows),
    )


class ModelNotSupportedError(InvalidRequestError):
    """A local model whose architecture the engine cannot run exactly: refused (a 400 naming the
    architecture), never answered approximately."""

    default_code = "model_not_supported"


def _check_architecture(name: str, model: PreTrainedModel) -> tuple[int, ...]:
    """Refuse a model the engine cannot run exactly, set its attention to the engine's
    (``attention.ATTENTION``) and return the sliding windows its layers use (none: full
    attention everywhere).

    Every layer must be full causal or sliding-window attention, and the window each layer
    announces (one probe forward pass) must be the one its configuration describes: a model
    that slides otherwise (in its own mask builder only) would get full attention here.
    """
    config = model.config.get_text_config()
    arch = type(model).__name__

    def refuse(why: str) -> ModelNotSupportedError:
        return ModelNotSupportedError(
            f"model {name!r} ({arch}, model_type {getattr(config, 'model_type', '?')!r}) is not "
            f"supported by the local engine: {why}",
            param="model",
        )

    if getattr(config, "is_encoder_decoder", False) or model.config.is_encoder_decoder:
        raise refuse("encoder-decoder models are not supported")
    if getattr(config, "use_bidirectional_attention", False) or not getattr(
        config, "is_causal", True
    ):
        raise refuse("bidirectional attention is not supported")
    if getattr(config, "attn_logit_softcapping", None):
        raise refuse("attention logit soft-capping is not supported")
    expected = attention.configured_windows(config)
    if expected is None:
        kinds = sorted(set(getattr(config, "layer_types", None) or []))
        raise refuse(f"layer types {kinds}: only full and sliding-window attention are supported")
    try:
        model.set_attn_implementation(attention.register())
    except (ValueError, ImportError) as exc:
        raise refuse(f"it has no SDPA attention ({exc})") from exc
    report = attention.probe(model)
    if report.unsupported:
        raise refuse(f"its attention needs {', '.join(report.unsupported)}")
    sliding = any(w is not None for w in (*expected, *report.windows))
    if sliding and list(report.windows) != expected:
        raise refuse(
            f"its layers apply the sliding windows {_windows_text(report.windows)} but its "
            f"configuration describes {_windows_text(expected)}"
        )
    return tuple(sorted({w for w in expected if w is not None}))


def _windows_text(windows: Sequence[int | None]) -> str:
    return "[" + ", ".join("full" if w is None else str(w) for w in windows) + "]"


def inference_threads() -> int:
    """torch threads for CPU inference: every core this process may use but one.

    The spare core keeps the event loop (HTTP, storage) responsive. It also avoids the collapse
    of OpenMP barriers when all cores are busy: each parallel op waits for its slowest thread, and a
    thread that loses its core to the event loop or another process stalls every op of a step
    (measured on 2 busy cores: 2 threads 2.1 tokens/s, 1 thread 18.4 tokens/s at batch 1).
    """
    from distillery.weights import usable_cores

    return max(1, usable_cores() - 1)


def _memory_budget(device: str) -> int:
    """Bytes the KV caches may use: a share of the memory free at load time."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.6)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 * 4 // 10
    except OSError:
        pass
    return 4 * 1024**3


def load_error(model: str, exc: BaseException) -> DistilleryError:
    if isinstance(exc, ModelNotSupportedError) or (
        isinstance(exc, DistilleryError) and not isinstance(exc, InvalidRequestError)
    ):
        return exc
    message = exc.message if isinstance(exc, DistilleryError) else f"{type(exc).__name__}: {exc}"
    return DistilleryError(
        f"cannot load local model {model!r}: {message}", code="model_load_failed"
    )
