"""Per-layer attention of the local engine: full causal or sliding-window, exactly as the model.

The engine builds its own 4D boolean attention masks from the column timeline of its KV cache
(left padding, masked holes, see ``kv_cache``). transformers uses a 4D mask as-is for every layer,
so a model mixing layer types would get full attention in its sliding-window layers: Gemma 3
slides five layers of six over a 512-token window, Qwen2/Qwen3 slide the layers their
``layer_types`` name, Mistral and Phi-3 with a ``sliding_window`` slide every layer.

The engine therefore runs its models with the attention function registered here,
:data:`ATTENTION` (``"distillery_sdpa"``): transformers' SDPA attention with the mask chosen per
layer. A layer's window is the ``sliding_window`` its attention module hands to the attention
function (what the flash-attention kernels use), else the module's ``sliding_window`` attribute;
a layer with a window gets the windowed mask the engine passed for that window under
:data:`KWARG`, a layer without one the full mask passed as ``attention_mask``.

The window is transformers' (``masking_utils.sliding_window_overlay``): a query at position ``q``
sees the keys at positions ``k`` with ``q - window < k <= q``. The engine computes it from token
positions, not columns (columns hold padding and holes), so that its output equals
``model.generate``'s (whose sliding cache layers keep the last ``window - 1`` keys).

:func:`probe` runs one 2-token forward pass and reports the window each layer announces and
whether a layer needs what SDPA cannot do here (attention soft-capping, attention sinks); the
engine compares that with the configuration and refuses a model it cannot run exactly.

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

ATTENTION = "distillery_sdpa"  # "sdpa" in the name: transformers checks the model supports SDPA
KWARG = "distillery_windows"  # forward kwarg carrying the windowed masks to the attention function
FULL = "full_attention"
SLIDING = "sliding_attention"
_UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks")  # soft-capping, attention sinks


@dataclass
class WindowMasks:
    """The windowed masks of one forward pass, by window (see the module docstring)."""

    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    calls: list[tuple[int | None, tuple[str, ...]]] | None = None  # probe: (window, unsupported)


@dataclass(frozen=True)
class LayerReport:
    """What :func:`probe` saw: each attention call's window, in call order."""

    windows: tuple[int | None, ...]
    unsupported: tuple[str, ...]  # kwargs SDPA cannot honour, as the layers passed them


def layer_window(module: Any, kwargs: dict[str, Any]) -> int | None:
    """The sliding window of the attention layer ``module`` (None: full attention)."""
    if "sliding_window" in kwargs:
        value = kwargs["sliding_window"]
    else:
        value = getattr(module, "sliding_window", None)
    return int(value) if value else None


def configured_windows(config: Any) -> list[int | None] | None:
    """Each layer's window as the text config describes it; None for a layer type other than
    full or sliding-window attention (chunked, linear, recurrent...)."""
    layers = int(config.num_hidden_layers)
    window = getattr(config, "sliding_window", None)
    if not getattr(config, "use_sliding_window", True):
        window = None
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        if any(t not in (FULL, SLIDING) for t in layer_types):
            return None
        return [int(window) if t == SLIDING and window else None for t in layer_types[:layers]]
    return [int(window) if window else None] * layers


def _attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    windows = kwargs.pop(KWARG, None)
    window = layer_window(module, kwargs)
    if isinstance(windows, WindowMasks):
        if windows.calls is not None:
            bad = tuple(k for k in _UNSUPPORTED_KWARGS if kwargs.get(k) is not None)
            windows.calls.append((window, bad))
        elif window is not None:
            attention_mask = windows.masks[window]
    elif window is not None:
        raise RuntimeError(f"no attention mask for a {window}-token sliding window")
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)  # type: ignore[no-any-return]


@functools.cache
def register() -> str:
    """Register :data:`ATTENTION` with transformers (once); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    return ATTENTION


def probe(model: Any) -> LayerReport:
    """One forward pass of two tokens through ``model`` (already set to :data:`ATTENTION`)."""
    import torch

    record = WindowMasks(calls=[])
    ids = torch.zeros((1, 2), dtype=torch.long, device=model.device)
    mask = torch.ones((1, 1, 2, 2), dtype=torch.bool, device=model.device).tril()
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask, use_cache=False, **{KWARG: record})
    calls = record.calls or []
    unsupported = sorted({name for _, bad in calls for name in bad})
    return LayerReport(tuple(w for w, _ in calls), tuple(unsupported))


def window_masks(
    full: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor, windows: Any
) -> WindowMasks:
    """The masks of ``windows`` for a forward pass whose full mask is ``full``
    (rows x 1 x queries x keys): ``full`` and within the window, by token position (rows x
    queries and rows x keys)."""
    keys = key_positions[:, None, None, :]
    # q - window < k, compared without materializing a (large) integer distance tensor
    return WindowMasks(
        {w: full & (keys > (query_positions - w)[:, None, :, None]) for w in windows}
    )
