"""One decoding step of a batch, and the choice of each sequence's next token.

A step runs every slot of the batch through the model with one new column: the last token of
each live row (free slots ride along with a dummy token and are masked out afterwards) at its own
position, attending through the batch's column mask (and the window masks of sliding-window
layers). The batch is compacted first when it needs it (``Batch.needs_compaction``). The next
token of each row is sampled from its logits (``sampling.choose_tokens``) after the grammar masks
of constrained rows are applied. A row ends on an end-of-sequence token, a token its grammar
rejects (logged), a stop sequence, the end of its grammar (``stop``) or ``max_new_tokens``
(``length``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from distillery.serving.batch import Batch, Row
from distillery.serving.constrained import GrammarCompiler
from distillery.serving.runtime import ModelRuntime
from distillery.serving.sampling import choose_tokens

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def decode_step(runtime: ModelRuntime, batch: Batch) -> tuple[list[Row], torch.Tensor]:
    """Advance every live row of ``batch`` by one column; returns the rows and their logits."""
    import torch

    if batch.needs_compaction():
        batch.compact()
    cache = batch.cache
    assert cache.mask is not None and cache.positions is not None
    device = runtime.model.device
    slots = batch.slots
    length = cache.length
    ids = torch.tensor([[r.last_token if r else runtime.pad] for r in slots], device=device)
    positions = torch.tensor([[r.pos if r else 0] for r in slots], device=device)
    cache.mask[:, length] = True
    cache.positions[:, length] = positions[:, 0]
    full = cache.mask[:, None, None, : length + 1]
    runtime.adapters.activate(batch.key)
    out = runtime.model(
        input_ids=ids,
        position_ids=positions,
        attention_mask=full,
        cache=cache.cache,
        use_cache=True,
        **runtime.window_kwargs(full, positions, cache.positions[:, : length + 1]),
    )
    cache.length = length + 1
    free = [i for i, r in enumerate(slots) if r is None]
    if free:
        cache.mask[torch.tensor(free, device=device), length] = False
    live = [i for i, r in enumerate(slots) if r is not None]
    rows = [r for r in slots if r is not None]
    for row in rows:
        row.pos += 1
        row.span += 1
    logits = out.logits[:, -1, :]
    if len(live) < len(slots):
        logits = logits.index_select(0, torch.tensor(live, device=device))
    return rows, logits


def next_tokens(compiler: GrammarCompiler, rows: list[Row], logits: torch.Tensor) -> list[int]:
    """Each row's next token from its row of ``logits``, within its grammar if it has one."""
    import torch

    scores = logits.float().cpu()
    constrained = [i for i, r in enumerate(rows) if r.constraint is not None]
    if constrained:
        index = torch.tensor(constrained)
        sub = scores.index_select(0, index)
        compiler.apply_masks([rows[i].constraint for i in constrained], sub)  # type: ignore[misc]
        scores[index] = sub
    return choose_tokens([r.sampler for r in rows], scores)


def accept_token(row: Row, token: int, eos: frozenset[int]) -> str | None:
    """Record ``token`` as ``row``'s next; the finish reason when it ends the row, else None."""
    row.sampler.observe(token)
    if token in eos:
        return "stop"
    if row.constraint is not None and not row.constraint.consume(token):
        log.warning("grammar rejected token %d: %s", token, row.constraint.error())
        return "stop"
    row.generated += 1
    row.last_token = token
    row.text.push(token)
    if row.text.stopped or (row.constraint is not None and row.constraint.is_stopped()):
        return "stop"
    if row.generated >= row.max_new:
        return "length"
    return None
