"""Structured outputs' grammars: keys in the schema's property order, compact JSON (as OpenAI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distillery import weights
from distillery.serving.constrained import GrammarCompiler, ResponseFormat

from .conftest import MODEL

pytestmark = pytest.mark.local_model

SCHEMA: dict[str, Any] = {  # "reason" before "category": not the alphabetical order
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "category": {"type": "string", "enum": ["hr", "it"]},
        "scores": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["reason", "category", "scores"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def compiler(model_dir: Path) -> tuple[Any, GrammarCompiler]:
    tokenizer = weights.load_tokenizer(weights.resolve_source(MODEL, model_dir))
    return tokenizer, GrammarCompiler(tokenizer, [int(tokenizer.eos_token_id)])


def accepts(compiler: tuple[Any, GrammarCompiler], fmt: ResponseFormat, text: str) -> bool:
    tokenizer, grammars = compiler
    constraint = grammars.constraint(grammars.grammar(fmt))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return all(constraint.consume(int(t)) for t in ids) and constraint.is_stopped()


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('{"reason":"VPN, not HR: it","category":"it","scores":[1,2]}', True),
        ('{"category":"it","reason":"VPN","scores":[1,2]}', False),  # not the schema's order
        ('{"reason": "VPN", "category": "it", "scores": [1, 2]}', False),  # blanks
        ('{ "reason":"VPN","category":"it","scores":[1,2]}', False),
        ('{"reason":"VPN",\n"category":"it","scores":[1,2]}', False),
    ],
)
def test_json_schema_grammar_is_ordered_and_compact(
    compiler: tuple[Any, GrammarCompiler], text: str, ok: bool
) -> None:
    fmt = ResponseFormat(type="json_schema", schema=SCHEMA, name="route")
    assert accepts(compiler, fmt, text) is ok


def test_json_object_grammar_is_compact(compiler: tuple[Any, GrammarCompiler]) -> None:
    fmt = ResponseFormat(type="json_object")
    assert accepts(compiler, fmt, '{"name":"Rex","age":3,"tags":["a b"]}')
    assert not accepts(compiler, fmt, '{"name": "Rex"}')
    assert not accepts(compiler, fmt, '{\n  "name":"Rex"}')


def test_grammar_cache_keeps_property_order(compiler: tuple[Any, GrammarCompiler]) -> None:
    reordered = {**SCHEMA, "properties": dict(reversed(SCHEMA["properties"].items()))}
    first = ResponseFormat(type="json_schema", schema=SCHEMA, name="a")
    second = ResponseFormat(type="json_schema", schema=reordered, name="b")
    assert accepts(compiler, first, '{"reason":"x","category":"hr","scores":[]}')
    assert accepts(compiler, second, '{"scores":[],"category":"hr","reason":"x"}')
    assert not accepts(compiler, second, '{"reason":"x","category":"hr","scores":[]}')


def test_schema_x_guidance_options_still_apply(compiler: tuple[Any, GrammarCompiler]) -> None:
    spaced = {**SCHEMA, "x-guidance": {"item_separator": ", ", "key_separator": ": "}}
    fmt = ResponseFormat(type="json_schema", schema=spaced, name="spaced")
    assert accepts(compiler, fmt, '{"reason": "x", "category": "hr", "scores": [1, 2]}')
