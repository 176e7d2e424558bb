"""Structured outputs: ``response_format`` json_object / json_schema (and tool calls, whose Lark
grammars :mod:`.tools` writes) through llguidance.

The schema becomes an llguidance grammar; each generated sequence gets an ``LLMatcher`` that
computes the set of allowed next tokens before every sampling step. Disallowed logits are set to
-inf, so the output is always a prefix of a valid document, and a complete one unless the
completion runs out of tokens (``finish_reason: "length"``, as with OpenAI).

llguidance, numpy and torch are imported inside functions only.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from distillery.errors import InvalidRequestError

if TYPE_CHECKING:
    import torch
    from llguidance import LLExecutor, LLMatcher, LLTokenizer
    from transformers import PreTrainedTokenizerBase

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Compact JSON as OpenAI emits it: `{"reason":"...","category":"..."}`, no whitespace between
# tokens (a small model cannot spin on blanks until max_tokens either). Passed as llguidance's
# defaults, so a schema's own `x-guidance` options still win. Keys come in the schema's property
# order: llguidance keeps the order of `properties`, and the schema is serialized unsorted.
_JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ",",
    "key_separator": ":",
}
_GRAMMAR_CACHE_SIZE = 64


@dataclass(frozen=True)
class ResponseFormat:
    """A validated ``response_format`` that constrains decoding (``text`` is represented by None)."""

    type: Literal["json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    name: str | None = None

    def schema_json(self) -> str:
        """The schema as JSON, in its own key order (property order decides the output's).

        Also the grammar cache's key: two schemas that differ only in the order of their
        properties are different grammars, so the key is not sorted.
        """
        if self.type == "json_object" or self.schema is None:
            return json.dumps({"type": "object"})
        return json.dumps(self.schema)


def _invalid(message: str, param: str = "response_format") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_value")


def parse_response_format(value: Any) -> ResponseFormat | None:
    """Validate ``response_format`` as OpenAI does; None for absent or ``{"type": "text"}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            "Invalid type for 'response_format': expected an object.",
            param="response_format",
            code="invalid_type",
        )
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(type="json_object")
    if kind != "json_schema":
        raise _invalid(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object' and "
            "'json_schema'.",
            "response_format.type",
        )
    spec = value.get("json_schema")
    if not isinstance(spec, Mapping):
        raise InvalidRequestError(
            "Missing required parameter: 'response_format.json_schema'.",
            param="response_format.json_schema",
            code="missing_required_parameter",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _invalid(
            "Invalid 'response_format.json_schema.name': expected a string of at most 64 "
            "characters from a-z, A-Z, 0-9, '_' and '-'.",
            "response_format.json_schema.name",
        )
    schema = spec.get("schema")
    if schema is not None and not isinstance(schema, Mapping):
        raise InvalidRequestError(
            "Invalid type for 'response_format.json_schema.schema': expected an object.",
            param="response_format.json_schema.schema",
            code="invalid_type",
        )
    return ResponseFormat(type="json_schema", schema=schema, name=name)


def mentions_json(messages: Sequence[Mapping[str, Any]]) -> bool:
    """OpenAI requires the word JSON somewhere in the messages for ``json_object``."""
    return any("json" in str(m.get("content", "")).lower() for m in messages)


class TokenConstraint:
    """The grammar state of one generated sequence."""

    def __init__(self, matcher: LLMatcher) -> None:
        self.matcher = matcher

    def consume(self, token: int) -> bool:
        return bool(self.matcher.consume_token(token))

    def is_stopped(self) -> bool:
        """True when the document is complete and nothing but end-of-sequence may follow."""
        return bool(self.matcher.is_stopped())

    def error(self) -> str:
        return str(self.matcher.get_error())


class GrammarCompiler:
    """Compiles response formats for one tokenizer; builds the llguidance tokenizer once (~1 s)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, eos_token_ids: Sequence[int]) -> None:
        self._hf_tokenizer = tokenizer
        self._eos = list(eos_token_ids)
        self._lock = threading.Lock()
        self._ll_tokenizer: LLTokenizer | None = None
        self._executor: LLExecutor | None = None
        self._grammars: dict[str, str] = {}

    def _tokenizer(self) -> LLTokenizer:
        with self._lock:
            if self._ll_tokenizer is None:
                import llguidance
                import llguidance.hf

                self._ll_tokenizer = llguidance.hf.from_tokenizer(
                    self._hf_tokenizer,  # type: ignore[arg-type]
                    eos_token=self._eos[0] if len(self._eos) == 1 else self._eos,
                )
                self._executor = llguidance.LLExecutor()
            return self._ll_tokenizer

    @property
    def executor(self) -> LLExecutor:
        self._tokenizer()
        assert self._executor is not None
        return self._executor

    def grammar(self, fmt: ResponseFormat) -> str:
        """The llguidance grammar of ``fmt``, validated (InvalidRequestError when it is not)."""
        from llguidance import LLMatcher

        key = fmt.schema_json()
        with self._lock:
            cached = self._grammars.get(key)
        if cached is not None:
            return cached
        tokenizer = self._tokenizer()
        try:
            grammar = LLMatcher.grammar_from_json_schema(key, defaults=_JSON_OPTIONS)  # type: ignore[arg-type]
        except ValueError as exc:
            raise self._schema_error(fmt, str(exc)) from exc
        is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
        if is_error:
            raise self._schema_error(fmt, "; ".join(messages))
        with self._lock:
            if len(self._grammars) >= _GRAMMAR_CACHE_SIZE:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    def lark(self, text: str) -> str:
        """The llguidance grammar of Lark ``text`` (a request's tools, :mod:`.tools`), validated:
        a schema in it that cannot be compiled is a 400 on ``tools``."""
        from llguidance import LLMatcher

        with self._lock:
            cached = self._grammars.get(text)
        if cached is not None:
            return cached
        tokenizer = self._tokenizer()
        grammar = LLMatcher.grammar_from_lark(text)
        is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
        if is_error:
            raise InvalidRequestError(
                f"Invalid schema for the function parameters in 'tools': {'; '.join(messages)}",
                param="tools",
                code="invalid_function_parameters",
            )
        with self._lock:
            if len(self._grammars) >= _GRAMMAR_CACHE_SIZE:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[text] = grammar
        return grammar

    @staticmethod
    def _schema_error(fmt: ResponseFormat, detail: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"Invalid schema for response_format '{fmt.name or fmt.type}': {detail}",
            param="response_format",
            code="invalid_json_schema",
        )

    def constraint(self, grammar: str) -> TokenConstraint:
        from llguidance import LLMatcher

        matcher = LLMatcher(self._tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequestError(
                f"Invalid response_format: {matcher.get_error()}",
                param="response_format",
                code="invalid_json_schema",
            )
        return TokenConstraint(matcher)

    def allowed(self, constraints: Sequence[TokenConstraint], vocab: int) -> torch.Tensor:
        """The tokens each grammar allows next (rows x ``vocab``, True: allowed). A grammar in an
        error state allows nothing; it gets the end-of-sequence tokens, to end instead of
        sampling garbage."""
        import numpy as np
        import torch
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask_par

        rows = len(constraints)
        tokenizer = self._tokenizer()
        bitmask = allocate_token_bitmask(rows, tokenizer.vocab_size)
        fill_next_token_bitmask_par(
            self.executor, [(c.matcher, i) for i, c in enumerate(constraints)], bitmask
        )
        bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")
        width = min(vocab, bits.shape[1])
        allowed = torch.zeros((rows, vocab), dtype=torch.bool)
        allowed[:, :width] = torch.from_numpy(bits[:, :width].astype(bool))
        stuck = ~allowed.any(dim=1)
        if bool(stuck.any()):
            allowed[stuck.nonzero().squeeze(1).unsqueeze(1), torch.tensor(self._eos)] = True
        return allowed
