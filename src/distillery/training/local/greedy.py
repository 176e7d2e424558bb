"""Greedy answers to the validation prompts, for a measure that teacher forcing cannot give.

When a free-text field comes before the label (``{"reason": ..., "category": ...}``), scoring the
label after the *reference* reason says little: once the model has read the right reason the
label follows, and every epoch scores 100%. What the user will see is the label the model writes
after its *own* reason, so such a measure (``TaskMeasure.generate``) is taken from answers
generated greedily with the weights being trained, as the served student would write them.

The trainer's packed attention (``packing.py``) is for training rows without a cache; generation
switches the model to transformers' ``sdpa`` for its duration (with the KV cache) and back.
Prompts are batched by length (left-padded, so every row's last prompt token is aligned), and each
row stops at the template's end-of-turn token, at the longest reference answer plus a margin, or
as soon as the caller's ``finished`` says its text is settled (a JSON object closed, or text that
cannot become one).

The validation prompts of one task share its system prompt: it is computed once, and each batch
continues from a copy of its KV cache (the padding of the shorter prompts sits between the shared
prefix and their own tokens, masked out, with positions counted as if it were not there).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from distillery import chat_templates
from distillery.training.local import packing
from distillery.training.local.data import TokenizedExample

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from distillery.training.local.student import Student

BATCH = 16  # prompts generated together
MARGIN = 16  # tokens allowed beyond the longest reference answer


def prompt_ids(example: TokenizedExample) -> list[int]:
    """The example's tokens before its answer (the conversation and the generation prompt)."""
    return example.input_ids[: example.n_tokens - example.answer_tokens]


@contextlib.contextmanager
def generating(student: Student) -> Iterator[None]:
    """The model in eval mode with the KV cache and standard attention; restored afterwards."""
    model = student.causal_lm
    packed = student.use_packing
    cache = model.config.use_cache
    if packed:
        model.set_attn_implementation("sdpa")
    model.config.use_cache = True
    student.model.eval()
    try:
        yield
    finally:
        student.model.train()
        model.config.use_cache = cache
        if packed:
            model.set_attn_implementation(packing.PACKED_ATTENTION)


def greedy_answers(
    student: Student,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[TokenizedExample],
    *,
    device: str,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    check_stop: Callable[[], None] = lambda: None,
    finished: Callable[[str], bool] | None = None,
) -> list[str]:
    """The answer the model writes greedily to each example's prompt (special tokens dropped).

    ``finished(text)``, when given, ends a row early once its text so far is settled."""
    import torch
    from transformers import StoppingCriteriaList

    if not examples:
        return []
    stop = sorted(chat_templates.end_of_turn_ids(tokenizer) | _eos_ids(tokenizer))
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0])
    longest = max(ex.answer_tokens for ex in examples)
    prompts = [prompt_ids(ex) for ex in examples]
    shared = packing.shared_prefix_length(examples)  # before any answer: within every prompt
    order = sorted(range(len(examples)), key=lambda i: len(prompts[i]))
    answers: dict[int, str] = {}
    with generating(student), torch.no_grad(), autocast():
        prefix_cache = None
        if shared:
            prefix = torch.tensor([prompts[0][:shared]], device=device)
            prefix_cache = student.model(input_ids=prefix, use_cache=True).cache
        for start in range(0, len(order), BATCH):
            check_stop()
            chunk = order[start : start + BATCH]
            rests = [prompts[i][shared:] for i in chunk]
            width = max(len(r) for r in rests)
            head = prompts[chunk[0]][:shared]
            ids = torch.tensor([head + [pad] * (width - len(r)) + r for r in rests], device=device)
            mask = torch.tensor(
                [[1] * shared + [0] * (width - len(r)) + [1] * len(r) for r in rests],
                device=device,
            )
            kwargs: dict[str, Any] = {}
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(chunk))
                kwargs["cache"] = cache
            if finished is not None:
                criteria = _settled(tokenizer, shared + width, finished)
                kwargs["stopping_criteria"] = StoppingCriteriaList([criteria])
            out = student.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=longest + MARGIN,
                do_sample=False,
                eos_token_id=stop or None,
                pad_token_id=pad,
                **kwargs,
            )
            for i, row in zip(chunk, out[:, shared + width :].tolist(), strict=True):
                answers[i] = str(tokenizer.decode(row, skip_special_tokens=True))
    return [answers[i] for i in range(len(examples))]


def _settled(
    tokenizer: PreTrainedTokenizerBase, start: int, finished: Callable[[str], bool]
) -> Any:
    """A stopping criterion: each row is done once ``finished`` says its text (the tokens from
    ``start`` on) is."""
    import torch
    from transformers import StoppingCriteria

    class Settled(StoppingCriteria):
        def __call__(
            self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any
        ) -> torch.BoolTensor:
            rows = input_ids[:, start:].tolist()
            done = [finished(str(tokenizer.decode(r, skip_special_tokens=True))) for r in rows]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    return Settled()


def _eos_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        return {eos}
    return {int(t) for t in eos or []}
