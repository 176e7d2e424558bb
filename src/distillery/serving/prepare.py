"""Request preparation for the generation engine, on the caller's worker threads.

Before a request reaches the engine thread it is templated (the model's chat template, with the
request's tools when it has any), measured against the context length (a prompt that leaves no
room for a completion is a ``context_length_exceeded`` 400; ``max_tokens`` is capped at the room
left), its ``logit_bias`` ids checked against the vocabulary, and its grammar compiled: the
tool-calling grammar (``tools.tool_grammar``, with the response format's schema for plain text
answers) when tool calls are constrained, else the response format's. Each choice gets its own
grammar state and seed. The engine thread then only runs the model.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distillery.errors import ContextLengthExceededError, InvalidRequestError
from distillery.serving.chat_template import render_prompt
from distillery.serving.constrained import ResponseFormat, TokenConstraint
from distillery.serving.runtime import ModelRuntime
from distillery.serving.sampling import SamplingParams
from distillery.serving.tools import ToolRequest, tool_grammar

if TYPE_CHECKING:
    from distillery.chat_templates import ToolFormat


@dataclass
class PreparedRequest:
    """A request ready for the engine: templated prompt, limits, seeds and grammar states."""

    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    seeds: list[int]
    constraints: list[TokenConstraint] | None = None
    tool_format: ToolFormat | None = None  # how the model writes tool calls (requests with tools)


def prepare_request(
    runtime: ModelRuntime,
    render_lock: threading.Lock,
    messages: list[dict[str, Any]],
    params: SamplingParams,
    response_format: ResponseFormat | None,
    tools: ToolRequest | None = None,
) -> PreparedRequest:
    """Template, measure and compile a request (rendering under ``render_lock``)."""
    from distillery import chat_templates

    tokenizer, compiler = runtime.tokenizer, runtime.compiler
    with render_lock:
        prompt = render_prompt(tokenizer, messages, runtime.name, tools.specs if tools else None)
        fmt = chat_templates.tool_format(tokenizer) if tools is not None else None
    limit = runtime.context_length
    if len(prompt) >= limit:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {len(prompt)} tokens, which leaves no room for a completion. "
            "Please reduce the length of the messages.",
            param="messages",
        )
    room = limit - len(prompt)
    max_new = min(params.max_tokens, room) if params.max_tokens is not None else room
    for token, _ in params.logit_bias:
        if not 0 <= token < runtime.vocab_size:
            raise InvalidRequestError(
                f"Invalid 'logit_bias': token id {token} is outside the vocabulary "
                f"(0..{runtime.vocab_size - 1}).",
                param="logit_bias",
                code="invalid_value",
            )
    constraints = None
    grammar = None
    if tools is not None and fmt is not None and tools.constrained:
        text_schema = (
            json.loads(response_format.schema_json()) if response_format is not None else None
        )
        lark = tool_grammar(tools, fmt, text_schema)
        grammar = compiler.lark(lark) if lark is not None else None
    elif response_format is not None:
        grammar = compiler.grammar(response_format)
    if grammar is not None:
        constraints = [compiler.constraint(grammar) for _ in range(params.n)]
    return PreparedRequest(prompt, params, max_new, params.choice_seeds(), constraints, fmt)
