"""One decoding step of a batch, and the choice of each sequence's next token.

A step runs every slot of the batch through the model with one new column: the last token of
each live row (free slots ride along with a dummy token and are masked out afterwards) at its own
position, attending through the batch's column mask (and the window masks of sliding-window
layers). The batch is compacted first when it needs it (``Batch.needs_compaction``). The next
token of each row is sampled from its logits (``sampling.choose_tokens``) after the grammar masks
of constrained rows are applied; a row whose grammar allows few tokens gets the logits of those
tokens only (``serving/head.py``). A row ends on an end-of-sequence token, a token its grammar
rejects (logged), a stop sequence, the end of its grammar (``stop``) or ``max_new_tokens``
(``length``).
"""

from __future__ import annotations

import logging

from distillery.serving.batch import Batch, Row
from distillery.serving.constrained import GrammarCompiler
from distillery.serving.head import SPARSE_SHARE, LastColumn
from distillery.serving.runtime import ModelRuntime
from distillery.serving.sampling import choose_tokens

log = logging.getLogger(__name__)


def decode_step(runtime: ModelRuntime, batch: Batch) -> tuple[list[Row], LastColumn]:
    """Advance every live row of ``batch`` by one column; returns the rows and their outputs."""
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
    last = runtime.last_column(
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
    if len(live) < len(slots):
        last = last.select(torch.tensor(live, device=device))
    return rows, last


def next_tokens(
    compiler: GrammarCompiler, rows: list[Row], last: LastColumn, vocab: int
) -> list[int]:
    """Each row's next token from its output ``last``, within its grammar if it has one.

    The logits of a row whose grammar allows at most ``vocab / SPARSE_SHARE`` tokens are made
    for those tokens only (when ``last`` can); the rest are -inf, as the mask would set them."""
    import torch

    scores = torch.empty((len(rows), vocab), dtype=torch.float32)
    constrained = [i for i, r in enumerate(rows) if r.constraint is not None]
    allowed = None
    few: list[int] = []  # indices into ``constrained``
    if constrained:
        allowed = compiler.allowed([rows[i].constraint for i in constrained], vocab)  # type: ignore[misc]
        if last.sparse:
            counts = allowed.sum(dim=1).tolist()
            few = [j for j, n in enumerate(counts) if n <= vocab // SPARSE_SHARE]
    sparse_rows = {constrained[j] for j in few}
    dense = [i for i in range(len(rows)) if i not in sparse_rows]
    if dense:
        index = torch.tensor(dense)
        scores[index] = last.logits(index)
    if few:
        assert allowed is not None
        ids = allowed[few].any(dim=0).nonzero().squeeze(1)
        index = torch.tensor([constrained[j] for j in few])
        block = torch.full((len(few), vocab), float("-inf"))
        block[:, ids] = last.logits(index, ids)
        scores[index] = block
    if allowed is not None:
        index = torch.tensor(constrained)
        scores[index] = scores.index_select(0, index).masked_fill_(~allowed, float("-inf"))
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
