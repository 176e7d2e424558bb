"""Chat templates: one home for how local models turn messages into a prompt.

Serving (``serving/chat_template.py``) and training (``training/local/data.py``) both render and
tokenize through this module, and the template itself is chosen once, when the tokenizer is loaded
(:func:`distillery.weights.load_tokenizer` calls :func:`install`), so a model is always trained on
exactly the text it is later served.

The template of a model is, in order:

1. the ``chat_template`` setting of its local provider (Jinja text or a file), when set;
2. the tokenizer's own template;
3. its family's official format, for models that ship none (a pretrained checkpoint, a GGUF
   without ``tokenizer.chat_template``, such as the embedded Gemma 3 270M). The family comes from
   the special tokens of the vocabulary (a family's turn markers registered as single tokens),
   ``config.model_type`` deciding first which family is tried: Gemma, Llama 3, ChatML (Qwen),
   Phi-3 and Mistral. The templates below are the official ones, text only (no tools, no images).

A model of no known family keeps having no template: chat requests are then a 400 that says to set
``chat_template``.

Tools (OpenAI ``tools``, assistant ``tool_calls``, ``tool`` messages) are rendered here too, the
same way for serving and training (:func:`render`), in the model's :class:`ToolFormat`:

* **native**, when the template renders tools itself (Qwen 2.5, Hermes, Llama 3.1 style): the
  format is read off the template once (:func:`tool_format` renders a probe call and finds the
  JSON object of the call in it, the text around it and the JSON separators), and the messages
  are passed to the template in transformers' convention (arguments as objects, tool results
  with the function's name);
* **fallback** (every template above, the embedded students' own): the Hermes / Qwen 2.5
  convention written into the messages before templating. The tool list goes at the end of the
  system message (one is added first when there is none), as :data:`TOOLS_PROMPT` followed by
  one JSON object per tool inside ``<tools></tools>``; an assistant's calls are its text,
  ``<tool_call>\n{"name":"f","arguments":{...}}\n</tool_call>`` per call (compact JSON, calls
  separated by a newline, after the message's own text if it has some); tool results become
  a user turn of ``<tool_response>\n...\n</tool_response>`` blocks (consecutive results, and a
  user message right after them, share that turn, so templates that require alternating roles
  still render).

The end-of-turn token of a template (``<end_of_turn>``, ``<|eot_id|>``, ``<|im_end|>``,
``<|end|>``) stops generation (:func:`end_of_turn_ids`) and is the last trained token of an
assistant answer (:func:`end_of_turn_tokens`).

No transformers import here: tokenizers are used through their methods only.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery.wire.content import content_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Gemma 3 (google/gemma-3-*-it), text only: the system message is folded into the first user turn
# ("system\n\nuser"), the assistant's role is "model", contents are trimmed.
GEMMA = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""

# Llama 3 (meta-llama/Meta-Llama-3-*-Instruct).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# ChatML as Qwen writes it (Qwen2/2.5/3 without tools, no default system message).
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Phi-3 / Phi-3.5 (microsoft/Phi-3.5-mini-instruct).
PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{ '<|system|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Mistral (mistralai/Mistral-7B-Instruct-v0.3): the system message is prepended to the last user
# message; an assistant turn ends with the end-of-sequence token.
MISTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.last and system_message is defined %}
            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + '[/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] | trim + eos_token }}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""


@dataclass(frozen=True)
class Family:
    """A model family's chat format."""

    name: str
    template: str
    markers: tuple[str, ...]  # turn markers: all single tokens in the family's vocabularies
    model_types: tuple[str, ...]  # ``config.model_type`` prefixes of the family


FAMILIES: tuple[Family, ...] = (
    Family("gemma", GEMMA, ("<start_of_turn>", "<end_of_turn>"), ("gemma",)),
    Family(
        "llama3", LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), ("llama",)
    ),
    Family("chatml", CHATML, ("<|im_start|>", "<|im_end|>"), ("qwen",)),
    Family("phi3", PHI3, ("<|user|>", "<|assistant|>", "<|end|>"), ("phi",)),
    Family("mistral", MISTRAL, ("[INST]", "[/INST]"), ("mistral", "mixtral")),
)
# Tokens that end a turn in the templates above (and in most templates models ship).
END_OF_TURN = ("<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>")


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """The id of ``token`` when the vocabulary has it as one token, else None."""
    try:
        ids = tokenizer.encode(token, add_special_tokens=False)
    except Exception:  # a tokenizer that cannot encode it has no such token
        return None
    return int(ids[0]) if len(ids) == 1 and ids[0] != tokenizer.unk_token_id else None


def model_type_of(folder: Path) -> str | None:
    """``model_type`` of the ``config.json`` in ``folder``, if any."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("model_type") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


def family_of(tokenizer: PreTrainedTokenizerBase, model_type: str | None) -> Family | None:
    """The family whose turn markers the vocabulary has (``model_type``'s family tried first);
    without any, ``model_type``'s family; None when neither is known."""
    kind = (model_type or "").lower()
    by_type = next((f for f in FAMILIES if kind.startswith(f.model_types)), None)
    ordered = [by_type, *(f for f in FAMILIES if f is not by_type)] if by_type else FAMILIES
    for family in ordered:
        if family is not None and all(_token_id(tokenizer, m) is not None for m in family.markers):
            return family
    return by_type


def install(
    tokenizer: PreTrainedTokenizerBase, model_type: str | None, override: str | None = None
) -> PreTrainedTokenizerBase:
    """Give ``tokenizer`` its chat template: ``override``, else its own, else its family's."""
    if override:
        tokenizer.chat_template = override
    elif not getattr(tokenizer, "chat_template", None):
        family = family_of(tokenizer, model_type)
        if family is not None:
            tokenizer.chat_template = family.template
    return tokenizer


def end_of_turn_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The end-of-turn tokens the tokenizer's template writes (single tokens of its vocabulary)."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        return []
    return [t for t in END_OF_TURN if t in template and _token_id(tokenizer, t) is not None]


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids of :func:`end_of_turn_tokens`: generation stops on them as on end-of-sequence."""
    found = (_token_id(tokenizer, t) for t in end_of_turn_tokens(tokenizer))
    return {t for t in found if t is not None}


def render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Any = None,
    add_generation_prompt: bool = False,
) -> str:
    """The templated text of ``messages`` (OpenAI shapes: ``tool_calls``, ``tool`` messages)
    with ``tools`` (OpenAI's list), in the model's :class:`ToolFormat` when there are any."""
    template_messages: list[dict[str, Any]] = [dict(m) for m in messages]
    template_tools = None
    if tools or any(_is_tool_message(m) for m in template_messages):
        fmt = tool_format(tokenizer)
        if fmt.native:
            template_messages = native_messages(template_messages)
            template_tools = list(tools) if tools else None
        else:
            template_messages = fallback_messages(template_messages, tools)
    text = tokenizer.apply_chat_template(
        template_messages,  # type: ignore[arg-type]
        tools=template_tools,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    return str(text)


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of templated text (its special tokens already written by the template)."""
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, Any]], tools: Any = None
) -> list[int]:
    """The served prompt: ``messages`` templated with the generation prompt, then tokenized."""
    return encode(tokenizer, render(tokenizer, messages, tools=tools, add_generation_prompt=True))


# ---------------------------------------------------------------------------------------------
# Tools

# Hermes / Qwen 2.5's instructions, the fallback format's system text (before the tool list).
TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_PROMPT_END = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>\n", "\n</tool_response>"


@dataclass(frozen=True)
class ToolFormat:
    """How a model writes its tool calls: ``prefix``, the calls separated by ``between``, then
    ``suffix``; each call one JSON object ``{name_key: name, args_key: arguments}``, keys in that
    order, written with ``key_separator`` / ``item_separator`` (the arguments too)."""

    native: bool
    prefix: str
    between: str
    suffix: str
    name_key: str = "name"
    args_key: str = "arguments"
    key_separator: str = ":"
    item_separator: str = ","

    def dumps(self, value: Any) -> str:
        """JSON as this format writes it."""
        return json.dumps(
            value, ensure_ascii=False, separators=(self.item_separator, self.key_separator)
        )

    def call_head(self, name: str) -> str:
        """A call's text before its arguments: ``{"name":"f","arguments":``."""
        return (
            "{" + self.dumps(self.name_key) + self.key_separator + self.dumps(name)
            + self.item_separator + self.dumps(self.args_key) + self.key_separator
        )  # fmt: skip

    def call_text(self, name: str, arguments: Any) -> str:
        """One call's JSON: ``arguments`` (an object, or a JSON string of one) written compactly
        in this format's separators; a string that is not JSON is written as it is."""
        args = arguments
        if isinstance(arguments, str):
            try:
                args = json.loads(arguments)
            except ValueError:
                return self.call_head(name) + arguments + "}"
        return self.call_head(name) + self.dumps(args) + "}"

    def calls_text(self, calls: Sequence[tuple[str, Any]]) -> str:
        """The text of an assistant turn that makes ``calls`` ((name, arguments) pairs)."""
        return self.prefix + self.between.join(self.call_text(n, a) for n, a in calls) + self.suffix


FALLBACK = ToolFormat(
    native=False,
    prefix="<tool_call>\n",
    between="\n</tool_call>\n<tool_call>\n",
    suffix="\n</tool_call>",
)
_FORMATS: dict[str, ToolFormat] = {}
_FORMATS_LOCK = threading.Lock()


def _is_tool_message(message: Mapping[str, Any]) -> bool:
    return message.get("role") in ("tool", "function") or bool(message.get("tool_calls"))


def _calls_of(message: Mapping[str, Any]) -> list[tuple[str, Any]]:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {} if isinstance(call, Mapping) else {}
        calls.append((str(function.get("name", "")), function.get("arguments", "{}")))
    return calls


def fallback_messages(messages: Sequence[Mapping[str, Any]], tools: Any) -> list[dict[str, Any]]:
    """``messages`` with tools, calls and results written as text (the fallback format)."""
    out: list[dict[str, Any]] = []
    merge_user = False  # the last turn holds tool results: a user message joins it
    for message in messages:
        role = message.get("role")
        if role in ("tool", "function"):
            block = TOOL_RESPONSE_OPEN + content_text(message.get("content")) + TOOL_RESPONSE_CLOSE
            if merge_user:
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
            merge_user = True
            continue
        if role == "user" and merge_user:
            out[-1]["content"] += "\n\n" + content_text(message.get("content"))
            merge_user = False
            continue
        merge_user = False
        if role == "assistant" and message.get("tool_calls"):
            content = content_text(message.get("content"))
            calls = FALLBACK.calls_text(_calls_of(message))
            out.append(
                {"role": "assistant", "content": f"{content}\n{calls}" if content else calls}
            )
            continue
        out.append({"role": str(role), "content": content_text(message.get("content"))})
    if tools:
        listing = "\n".join(json.dumps(t, ensure_ascii=False, separators=(",", ":")) for t in tools)
        block = TOOLS_PROMPT + listing + TOOLS_PROMPT_END
        if out and out[0]["role"] == "system":
            system = out[0]["content"]
            out[0] = {"role": "system", "content": f"{system}\n\n{block}" if system else block}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def native_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` in transformers' tool convention: call arguments as objects (when they are
    JSON), tool results carrying the name of the function they answer."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        item = dict(message)
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call.get("function") or {})
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    with contextlib.suppress(ValueError):
                        function["arguments"] = json.loads(arguments)
                names[str(call.get("id"))] = str(function.get("name", ""))
                calls.append({**call, "type": "function", "function": function})
            item["tool_calls"] = calls
            item["content"] = content_text(message.get("content"))
        elif message.get("role") in ("tool", "function"):
            item["role"] = "tool"
            item["content"] = content_text(message.get("content"))
            name = names.get(str(message.get("tool_call_id")), message.get("name"))
            if name:
                item["name"] = name
        out.append(item)
    return out


def tool_format(tokenizer: PreTrainedTokenizerBase) -> ToolFormat:
    """The tool format of the tokenizer's template: native when a probe call renders in a form
    that can be generated and parsed back, :data:`FALLBACK` otherwise."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or "tool" not in template:
        return FALLBACK
    with _FORMATS_LOCK:
        known = _FORMATS.get(template)
    if known is None:
        known = _probe(tokenizer) or FALLBACK
        with _FORMATS_LOCK:
            _FORMATS[template] = known
    return known


_PROBE_NAMES = ("probe_lookup", "probe_other")
_PROBE_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": "Look something up.",
            "parameters": {
                "type": "object",
                "properties": {"probe_arg": {"type": "integer"}, "probe_text": {"type": "string"}},
            },
        },
    }
    for name in _PROBE_NAMES
]
_PROBE_ARGS = ({"probe_arg": 1, "probe_text": "x"}, {"probe_arg": 2, "probe_text": "y"})
_SEPARATORS = ((", ", ": "), (",", ":"), (", ", ":"), (",", ": "))


def _probe(tokenizer: PreTrainedTokenizerBase) -> ToolFormat | None:
    """Read the tool format off the template: render one and two probe calls after a probe
    prompt and find the calls' JSON objects in the answer. None when the template does not
    render the tools, or writes calls in a way this module cannot generate exactly."""
    user = {"role": "user", "content": "Probe question"}

    def assistant(count: int) -> dict[str, Any]:
        calls = [
            {
                "id": f"call_probe{i}",
                "type": "function",
                "function": {"name": _PROBE_NAMES[i], "arguments": _PROBE_ARGS[i]},
            }
            for i in range(count)
        ]
        return {"role": "assistant", "content": "", "tool_calls": calls}

    def apply(messages: list[dict[str, Any]], generation: bool = False) -> str:
        return str(
            tokenizer.apply_chat_template(
                messages,  # type: ignore[arg-type]
                tools=_PROBE_TOOLS,  # type: ignore[arg-type]
                tokenize=False,
                add_generation_prompt=generation,
            )
        )

    try:
        prompt = apply([user], generation=True)
        one, two = apply([user, assistant(1)]), apply([user, assistant(2)])
    except Exception:  # a template that cannot render tool calls: the fallback format
        return None
    if _PROBE_NAMES[0] not in prompt or not (one.startswith(prompt) and two.startswith(prompt)):
        return None
    answers = [_answer(tokenizer, text, len(prompt)) for text in (one, two)]
    fmt = _format_of(answers[0], answers[1])
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
    if fmt is None or any(t in p for t in specials for p in (fmt.prefix, fmt.between, fmt.suffix)):
        return None  # decoding drops special tokens: such markers could not be parsed back
    return fmt


def _format_of(one: str, two: str) -> ToolFormat | None:
    """The format that writes ``one`` (the first probe call) and ``two`` (both) exactly."""
    found = [_json_objects(one), _json_objects(two)]
    if [len(f) for f in found] != [1, 2]:
        return None
    ((start, end, obj),) = found[0]
    keys = list(obj)
    if len(keys) != 2 or obj[keys[0]] != _PROBE_NAMES[0] or obj[keys[1]] != _PROBE_ARGS[0]:
        return None
    (_, first_end, _), (second_start, _, _) = found[1]
    for item, key in _SEPARATORS:
        fmt = ToolFormat(
            native=True,
            prefix=one[:start],
            between=two[first_end:second_start],
            suffix=one[end:],
            name_key=keys[0],
            args_key=keys[1],
            key_separator=key,
            item_separator=item,
        )
        both = list(zip(_PROBE_NAMES, _PROBE_ARGS, strict=True))
        if fmt.calls_text(both[:1]) == one and fmt.calls_text(both) == two:
            return fmt
    return None


def _answer(tokenizer: PreTrainedTokenizerBase, text: str, start: int) -> str:
    """The assistant's text from ``start`` to its end-of-turn (or end-of-sequence) token."""
    markers = end_of_turn_tokens(tokenizer)
    eos = getattr(tokenizer, "eos_token", None)
    if isinstance(eos, str) and eos:
        markers.append(eos)
    ends = [i for m in markers if (i := text.find(m, start)) >= 0]
    return text[start : min(ends, default=len(text))]


def _json_objects(text: str) -> list[tuple[int, int, dict[str, Any]]]:
    """The outermost JSON objects in ``text`` that hold a probe name: (start, end, object)."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, int, dict[str, Any]]] = []
    i = text.find("{")
    while i >= 0:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict) and any(v in _PROBE_NAMES for v in obj.values()):
            found.append((i, end, obj))
            i = text.find("{", end)
        else:
            i = text.find("{", i + 1)
    return found
