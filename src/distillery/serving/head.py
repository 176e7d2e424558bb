"""The model's output head, computed for the whole vocabulary or only for the tokens a grammar
allows.

The engine runs the body of the model (``model.get_decoder()``) and keeps the hidden state of
each row's last column (:class:`LastColumn`); logits are made from it when a token is chosen. A
structured answer spends most of its tokens where its grammar allows only a few (the keys and
punctuation of a JSON object, an enum value), and the head is the largest matrix of a small model
(Gemma 3 270M: 262,144 x 640, 168M of its 268M parameters, more than the 18 layers together): a
row that may choose among at most a sixteenth of the vocabulary gets the logits of those tokens
only (the rows of the head's weight they select), the others -inf as the grammar mask gives them.
The scores the sampler sees are the same as before, token for token.

The split is used only when it is exact: at load, one forward pass through the whole model and
one through the body and :class:`OutputHead` must give equal logits (a model whose forward does
more after its head, such as a logit scale, is run whole as before, and so is a head a LoRA adapter
wraps).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

SPARSE_SHARE = 16  # a row allowing at most vocab / SPARSE_SHARE tokens gets only their logits


@dataclass(frozen=True)
class OutputHead:
    """``lm_head`` (a plain linear layer) and Gemma's final logit soft-capping, if any."""

    model: PreTrainedModel
    softcap: float | None

    @property
    def linear(self) -> torch.nn.Linear | None:
        """The head's linear layer, or None while an adapter wraps it."""
        import torch

        layer = self.model.get_output_embeddings()  # type: ignore[no-untyped-call]
        return layer if type(layer) is torch.nn.Linear else None

    def logits(self, hidden: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``hidden`` (rows x hidden) for every token, or for the token ``ids``."""
        import torch
        import torch.nn.functional as F

        linear = self.linear if ids is not None else None
        if ids is None or linear is None:
            out = self.model.get_output_embeddings()(hidden)  # type: ignore[no-untyped-call]
        else:
            bias = None if linear.bias is None else linear.bias.index_select(0, ids)
            out = F.linear(hidden, linear.weight.index_select(0, ids), bias)
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out  # type: ignore[no-any-return]


def exact_head(model: PreTrainedModel, windows: tuple[int, ...]) -> OutputHead | None:
    """The model's :class:`OutputHead` when body + head equals its forward (checked on one short
    forward pass; ``windows``: the sliding windows of its layers), else None (the engine then
    runs the whole model)."""
    import torch

    from distillery.serving import attention

    config = model.config.get_text_config()
    head = OutputHead(model, getattr(config, "final_logit_softcapping", None))
    if head.linear is None:
        return None
    ids = torch.tensor([[2, 3, 5]], dtype=torch.long, device=model.device)
    mask = torch.ones((1, 1, 3, 3), dtype=torch.bool, device=model.device).tril()
    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
    if windows:
        positions = torch.arange(3, device=model.device).unsqueeze(0)
        inputs[attention.KWARG] = attention.window_masks(mask, positions, positions, windows)
    try:
        with torch.inference_mode():
            whole = model(**inputs, logits_to_keep=1).logits[:, -1]
            body = model.get_decoder()(**inputs)  # type: ignore[no-untyped-call]
            split = head.logits(body.last_hidden_state[:, -1])
    except (TypeError, AttributeError, ValueError, RuntimeError) as exc:
        log.info("%s: the engine runs the whole model (no separate head: %s)", type(model), exc)
        return None
    if whole.shape != split.shape or not torch.equal(whole, split):
        log.info("%s: the engine runs the whole model (body + head differs)", type(model))
        return None
    return head


class LastColumn:
    """Each row's output at its last column: the hidden state (with a :class:`OutputHead`), from
    which the logits of all tokens or of some are made, or the logits of a whole-model pass."""

    def __init__(self, values: torch.Tensor, head: OutputHead | None) -> None:
        self.values = values  # rows x hidden (head) or rows x vocab (no head)
        self.head = head

    def select(self, index: torch.Tensor) -> LastColumn:
        return LastColumn(self.values.index_select(0, index.to(self.values.device)), self.head)

    @property
    def sparse(self) -> bool:
        """Whether logits can be made for some tokens only."""
        return self.head is not None and self.head.linear is not None

    def logits(self, rows: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> Any:
        """Float32 CPU logits of ``rows`` (all rows when None): for every token, or (when
        :attr:`sparse`) for the tokens ``ids`` only."""
        values = (
            self.values
            if rows is None
            else self.values.index_select(0, rows.to(self.values.device))
        )
        if self.head is None:
            out = values
        else:
            out = self.head.logits(values, None if ids is None else ids.to(values.device))
        return out.float().cpu()
