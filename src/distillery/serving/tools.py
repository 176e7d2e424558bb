"""Tool calling on local models: ``tools`` / ``tool_choice`` / ``parallel_tool_calls``.

A request's tools are validated here (:func:`parse_tools`), rendered into the prompt by the model's
chat template or the fallback format (:mod:`distillery.chat_templates`, the same code training
renders its examples with), and decoding is constrained by an llguidance Lark grammar
(:func:`tool_grammar`) in the model's :class:`~distillery.chat_templates.ToolFormat`:

* ``tool_choice: "required"``: one call or more (one when ``parallel_tool_calls`` is false),
  each ``{"name": <one of the tools>, "arguments": <that tool's parameters schema>}``;
* a named function: one call of that function;
* ``"auto"`` (the default with tools): either a call as above, or text that does not contain the
  format's call marker (or, with a ``response_format`` schema, a JSON document of that schema);
* ``"none"``: the tools are in the prompt, the output is not constrained by them.

Arguments are always constrained to the function's ``parameters`` schema (``strict`` or not);
objects that do not say otherwise get no properties beyond those they list (a document without
extra properties is valid against the schema either way). The output is parsed back
(:class:`ToolCallParser`, incrementally for streaming) into OpenAI's ``tool_calls``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from distillery import ids
from distillery.chat_templates import ToolFormat
from distillery.errors import InvalidRequestError

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
CALL_ID_PREFIX = "call_"

Choice = Literal["none", "auto", "required", "function"]


@dataclass(frozen=True)
class FunctionTool:
    name: str
    parameters: Mapping[str, Any]
    strict: bool = False


@dataclass(frozen=True)
class ToolRequest:
    """The validated tool parameters of a request."""

    tools: tuple[FunctionTool, ...]
    specs: list[dict[str, Any]]  # the tools as the client sent them (what the template renders)
    choice: Choice = "auto"
    name: str | None = None  # the function of a named tool_choice
    parallel: bool = True

    @property
    def constrained(self) -> bool:
        return self.choice != "none"

    @property
    def forced(self) -> bool:
        """The output is a tool call (no text alternative)."""
        return self.choice in ("required", "function")


def _invalid(message: str, param: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _parse_tool(value: Any, i: int) -> FunctionTool:
    where = f"tools[{i}]"
    if not isinstance(value, Mapping):
        raise _invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    if value.get("type") != "function":
        raise _invalid(
            f"Invalid value for '{where}.type': {value.get('type')!r} is not supported by local "
            "models (supported: 'function').",
            f"{where}.type",
            "unsupported_value",
        )
    function = value.get("function")
    if not isinstance(function, Mapping):
        raise _invalid(
            f"Missing required parameter: '{where}.function'.",
            f"{where}.function",
            "missing_required_parameter",
        )
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _invalid(
            f"Invalid '{where}.function.name': string does not match pattern. Expected a string "
            "that matches the pattern '^[a-zA-Z0-9_-]+$' of at most 64 characters.",
            f"{where}.function.name",
        )
    parameters = function.get("parameters")
    if parameters is None:
        parameters = _EMPTY_PARAMETERS
    if not isinstance(parameters, Mapping):
        raise _invalid(
            f"Invalid type for '{where}.function.parameters': expected an object.",
            f"{where}.function.parameters",
            "invalid_type",
        )
    return FunctionTool(name=name, parameters=parameters, strict=bool(function.get("strict")))


def _parse_choice(value: Any, names: Sequence[str]) -> tuple[Choice, str | None]:
    if value is None:
        return ("auto" if names else "none"), None
    if value in ("none", "auto", "required"):
        if value == "required" and not names:
            raise _invalid(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                "specified.",
                "tool_choice",
            )
        return value, None
    if isinstance(value, Mapping) and value.get("type") == "function":
        function = value.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str):
            raise _invalid(
                "Missing required parameter: 'tool_choice.function.name'.",
                "tool_choice.function.name",
                "missing_required_parameter",
            )
        if name not in names:
            raise _invalid(
                f"Invalid value for 'tool_choice': no function named '{name}' was specified in "
                "the 'tools' parameter.",
                "tool_choice",
            )
        return "function", name
    kind = value.get("type") if isinstance(value, Mapping) else value
    raise _invalid(
        f"Invalid value for 'tool_choice': {kind!r} is not supported by local models (supported: "
        "'none', 'auto', 'required' and {'type': 'function', 'function': {'name': ...}}).",
        "tool_choice",
        "unsupported_value",
    )


def parse_tools(body: Mapping[str, Any]) -> ToolRequest | None:
    """The request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``, validated as OpenAI
    does; None when the request has no tools (``tool_choice`` ``none``/``auto`` alone is fine)."""
    raw = body.get("tools")
    if raw is not None and not isinstance(raw, list):
        raise _invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    tools = tuple(_parse_tool(t, i) for i, t in enumerate(raw or []))
    names = [t.name for t in tools]
    duplicate = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if duplicate is not None:
        raise _invalid(
            f"Invalid 'tools': function name '{duplicate}' is used more than once.", "tools"
        )
    choice, name = _parse_choice(body.get("tool_choice"), names)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _invalid(
            "Invalid type for 'parallel_tool_calls': expected a boolean.",
            "parallel_tool_calls",
            "invalid_type",
        )
    if not tools:
        return None
    return ToolRequest(
        tools=tools,
        specs=[dict(t) for t in raw or []],
        choice=choice,
        name=name,
        parallel=parallel is not False,
    )


# ---------------------------------------------------------------------------------------------
# The grammar


def closed_schema(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists its properties
    and says nothing about others (not inside ``allOf``, where it would exclude the siblings'
    properties). Every document this accepts is valid against ``schema``."""
    if isinstance(schema, list):
        return [closed_schema(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "allOf":
            out[key] = value
        elif key in ("properties", "$defs", "definitions", "patternProperties"):
            out[key] = (
                {k: closed_schema(v) for k, v in value.items()}
                if isinstance(value, Mapping)
                else value
            )
        elif key in ("items", "anyOf", "oneOf", "prefixItems", "additionalProperties", "not"):
            out[key] = closed_schema(value)
        else:
            out[key] = value
    if (
        "properties" in out
        and "additionalProperties" not in out
        and "patternProperties" not in out
        and "unevaluatedProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


def _lark_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _regex_literal(text: str) -> str:
    """``text`` as a literal inside a Lark ``/regex/``."""
    return "".join(c if c.isalnum() or ord(c) >= 128 else f"\\x{ord(c):02x}" for c in text)


def _json_options(fmt: ToolFormat) -> dict[str, Any]:
    return {
        "whitespace_flexible": False,
        "item_separator": fmt.item_separator,
        "key_separator": fmt.key_separator,
    }


def tool_grammar(
    request: ToolRequest, fmt: ToolFormat, text_schema: Mapping[str, Any] | None = None
) -> str | None:
    """The Lark grammar of the request's output (None for ``tool_choice: "none"``).

    ``text_schema`` (a ``response_format`` JSON schema) is what the text alternative of ``auto``
    must be; without it, text is free but never contains the format's call marker, so that an
    output is either text or calls, and calls always follow the grammar."""
    if not request.constrained:
        return None
    options = _json_options(fmt)
    tools = [t for t in request.tools if request.choice != "function" or t.name == request.name]
    lines = ["%llguidance {}"]
    calls = "call" if request.choice == "function" or not request.parallel else None
    if calls is None:
        calls = f"call ({_lark_string(fmt.between)} call)*"
    body = f"{_lark_string(fmt.prefix)} {calls} {_lark_string(fmt.suffix)}"
    if request.forced:
        lines.append(f"start: {body}")
    else:
        lines.append(f"start: text | {body}")
        if text_schema is not None:
            schema = {**dict(text_schema)}
            schema["x-guidance"] = {**options, **dict(text_schema.get("x-guidance") or {})}
            lines.append(f"text: %json {json.dumps(schema, ensure_ascii=False)}")
        else:
            marker = fmt.prefix.strip()
            banned = f"(.|\\n)*{_regex_literal(marker)}(.|\\n)*" if marker else "\\s*\\x7b(.|\\n)*"
            lines.append("text: TEXT")
            lines.append(f"TEXT: /(.|\\n)*/ & ~/{banned}/")
    lines.append("call: " + " | ".join(f"fn_{i}" for i in range(len(tools))))
    for i, tool in enumerate(tools):
        schema = dict(closed_schema(tool.parameters))
        schema["x-guidance"] = {**options, **dict(tool.parameters.get("x-guidance") or {})}
        head = _lark_string(fmt.call_head(tool.name))
        lines.append(f'fn_{i}: {head} %json {json.dumps(schema, ensure_ascii=False)} "}}"')
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Parsing the output


@dataclass
class ParsedCall:
    name: str
    arguments: str  # the JSON text generated so far (complete once the call is)
    complete: bool
    id: str = field(default_factory=lambda: ids.new_id(CALL_ID_PREFIX))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class CallStarted:
    index: int
    call: ParsedCall


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    text: str


ParserEvent = ContentDelta | CallStarted | ArgumentsDelta


def _value_end(text: str, start: int) -> int | None:
    """The end of the JSON value at ``start`` in ``text``; None while it is incomplete."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth <= 0:
                return i + 1
        elif depth == 0 and c in ",} \n":
            return i
    return None


class ToolCallParser:
    """The output of one choice as content or tool calls, fed text as it is generated.

    ``forced`` (``required`` / a named function): the output is calls. Otherwise it is calls when
    it starts with the format's prefix (held back until that is decided) and content when it
    does not. :meth:`feed` returns what can be streamed now; :attr:`calls` and :attr:`content`
    hold the result so far."""

    def __init__(self, fmt: ToolFormat, *, forced: bool) -> None:
        self.fmt = fmt
        self.text = ""
        self.mode: Literal["undecided", "content", "calls"] = "calls" if forced else "undecided"
        self.calls: list[ParsedCall] = []
        self._sent_content = 0

    @property
    def content(self) -> str | None:
        return self.text if self.mode != "calls" else None

    def feed(self, delta: str) -> list[ParserEvent]:
        self.text += delta
        if self.mode == "undecided":
            opener = self.fmt.prefix.lstrip() or "{"
            head = self.text.lstrip()
            if head.startswith(opener):
                self.mode = "calls"
            elif not opener.startswith(head):
                self.mode = "content"
        if self.mode == "content":
            out = self.text[self._sent_content :]
            self._sent_content = len(self.text)
            return [ContentDelta(out)] if out else []
        if self.mode == "calls":
            return self._scan()
        return []

    def finish(self) -> list[ParserEvent]:
        """End of output: text still held back (an unfinished prefix) is content."""
        if self.mode == "undecided":
            self.mode = "content"
            return self.feed("")
        return []

    def _scan(self) -> list[ParserEvent]:
        fmt = self.fmt
        text = self.text.lstrip()
        if not text.startswith(fmt.prefix.lstrip()):
            return []
        pos = len(fmt.prefix.lstrip())
        events: list[ParserEvent] = []
        index = 0
        opening = "{" + fmt.dumps(fmt.name_key) + fmt.key_separator + '"'
        while text.startswith(opening, pos):
            name_start = pos + len(opening)
            name_end = text.find('"', name_start)
            if name_end < 0:
                break
            name = text[name_start:name_end]
            args_start = pos + len(fmt.call_head(name))
            if len(text) < args_start:
                events += self._update(index, name, "", complete=False)
                break
            end = _value_end(text, args_start)
            arguments = text[args_start : end if end is not None else len(text)]
            events += self._update(index, name, arguments, end is not None)
            if end is None or not text.startswith("}" + fmt.between, end):
                break
            pos = end + 1 + len(fmt.between)
            index += 1
        return events

    def _update(self, index: int, name: str, arguments: str, complete: bool) -> list[ParserEvent]:
        events: list[ParserEvent] = []
        if index == len(self.calls):
            call = ParsedCall(name=name, arguments="", complete=False)
            self.calls.append(call)
            events.append(CallStarted(index, call))
        call = self.calls[index]
        if len(arguments) > len(call.arguments):
            events.append(ArgumentsDelta(index, arguments[len(call.arguments) :]))
            call.arguments = arguments
        call.complete = complete
        return events


__all__ = [
    "ArgumentsDelta",
    "CallStarted",
    "ContentDelta",
    "FunctionTool",
    "ParsedCall",
    "ParserEvent",
    "ToolCallParser",
    "ToolRequest",
    "closed_schema",
    "parse_tools",
    "tool_grammar",
]
