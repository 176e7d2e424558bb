"""Eval data sources: the eval's ``data_source_config`` and a run's ``data_source``.

An eval's config says what its items look like:
- ``custom``: ``item_schema`` (JSON Schema), ``include_sample_schema``; returned as ``schema``;
- ``logs`` (and its deprecated alias ``stored_completions``): stored completions, optionally
  narrowed by ``metadata``; a run over stored completions inherits that filter.

A run's data source says where the items come from (``datasource_item_id`` is their index):
- ``jsonl``: ``source`` ``file_content`` (``[{item, sample?}]``) or ``file_id`` (an uploaded JSONL
  file, one ``{"item": {...}, "sample"?: {...}}`` or one bare item object per line);
- ``completions``: ``source`` ``file_content`` | ``file_id`` | ``stored_completions`` (filters
  ``model``, ``metadata``, ``created_after``, ``created_before``, ``limit``), and, to generate,
  ``model``, ``input_messages`` (``template`` with ``{{item.x}}`` or ``item_reference``) and
  ``sampling_params``;
- ``responses``: ``source`` ``file_content`` | ``file_id`` | ``responses`` (stored Responses API
  exchanges, filtered by ``model``, ``metadata``, ``created_after``, ``created_before``, ``limit``,
  ``users``, ``instructions_search``, ``temperature``, ``top_p``), and the same ``model``,
  ``input_messages`` and ``sampling_params`` (plus ``text.format``, sent as ``response_format``);
  its items are stored completions' (a stored response is one);
- ``distillery_dataset``: ``dataset_id`` (id or name), ``version`` (default latest), ``split``
  (default every split), with the same optional ``model``/``input_messages``/``sampling_params``.

Items: a stored completion is ``{"input": messages, "reference": its answer, "completion_id",
"model", "metadata"}`` (without generation its stored answer is the sample); a dataset row is
``{"messages": the prompt, "reference": the last assistant message, "completion_id"}``.
The set of stored completions is frozen when a run starts (their ids are kept in the run), so a
resumed run grades the same items.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from distillery.errors import InvalidRequestError, NotFoundError
from distillery.evals.graders.base import GradeInput
from distillery.evals.graders.messages import InputMessage, render_message
from distillery.evals.graders.templating import lookup
from distillery.store.completions import CompletionsRepo
from distillery.store.evals import EvalsRepo
from distillery.store.records import StoredCompletion
from distillery.wire.chat import validate_metadata
from distillery.wire.content import message_text
from distillery.wire.params import INT64_MAX, invalid_request
from distillery.wire.responses import chat_tools, response_format

CONFIG_TYPES = ("custom", "logs", "stored_completions")
RUN_TYPES = ("jsonl", "completions", "responses", "distillery_dataset")
STORED_SOURCES = ("stored_completions", "responses")  # sources read from the store
SAMPLING_KEYS = (
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "response_format",
    "tools",
    "reasoning_effort",
)

SAMPLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array"},
        "output_text": {"type": "string"},
        "output_json": {"type": "object"},
        "output_tools": {"type": "array"},
    },
    "required": ["model", "choices"],
}


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_value")


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _bad(f"'{param}' must be an object.", param)
    return dict(value)


def _known_keys(obj: Mapping[str, Any], allowed: set[str], param: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise _bad(f"Unknown parameter: '{param}.{unknown[0]}'.", f"{param}.{unknown[0]}")


# --- the eval's data_source_config -------------------------------------------------------------


def eval_config(value: Any) -> dict[str, Any]:
    """Validate a create-eval ``data_source_config`` and return the object the API answers."""
    param = "data_source_config"
    cfg = _object(value, param)
    kind = cfg.get("type")
    if kind == "custom":
        _known_keys(cfg, {"type", "item_schema", "include_sample_schema"}, param)
        schema = _object(cfg.get("item_schema"), f"{param}.item_schema")
        try:
            from jsonschema.exceptions import SchemaError
            from jsonschema.validators import validator_for

            validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise _bad(f"Invalid item_schema: {exc.message}", f"{param}.item_schema") from exc
        properties: dict[str, Any] = {"item": schema}
        required = ["item"]
        if cfg.get("include_sample_schema"):
            properties["sample"] = SAMPLE_SCHEMA
            required.append("sample")
        return {
            "type": "custom",
            "schema": {"type": "object", "properties": properties, "required": required},
        }
    if kind in ("logs", "stored_completions"):
        _known_keys(cfg, {"type", "metadata"}, param)
        metadata = validate_metadata(cfg.get("metadata"), param=f"{param}.metadata")
        return {
            "type": kind,
            "metadata": metadata or {},
            "schema": {
                "type": "object",
                "properties": {"item": {"type": "object"}, "sample": SAMPLE_SCHEMA},
                "required": ["item", "sample"],
            },
        }
    raise _bad(
        f"Invalid value for '{param}.type': expected one of {', '.join(CONFIG_TYPES)}.",
        f"{param}.type",
    )


def item_schema(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The item JSON Schema of a ``custom`` config (None for logs)."""
    if config.get("type") != "custom":
        return None
    schema = (config.get("schema") or {}).get("properties", {}).get("item")
    return dict(schema) if isinstance(schema, Mapping) else None


def check_item(schema: Mapping[str, Any] | None, item: Any) -> str | None:
    """Why ``item`` does not match the eval's item schema, or None."""
    if not isinstance(item, Mapping):
        return "an item must be a JSON object"
    if schema is None:
        return None
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    error = best_match(validator_for(schema)(schema).iter_errors(dict(item)))
    return None if error is None else f"{error.json_path}: {error.message}"


# --- a run's data_source -----------------------------------------------------------------------


def _message_list(template: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(template, list) or not template:
        raise _bad(f"'{param}' must be a non-empty array of messages.", param)
    out = []
    for i, message in enumerate(template):
        msg = _object(message, f"{param}[{i}]")
        try:
            InputMessage.model_validate(msg)
        except ValidationError as exc:
            raise invalid_request(exc, prefix=f"{param}[{i}]", what="message") from exc
        out.append(msg)
    return out


def _input_messages(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _object(value, param)
    kind = obj.get("type")
    if kind == "template":
        _known_keys(obj, {"type", "template"}, param)
        return {
            "type": "template",
            "template": _message_list(obj.get("template"), f"{param}.template"),
        }
    if kind == "item_reference":
        _known_keys(obj, {"type", "item_reference"}, param)
        ref = obj.get("item_reference")
        if not isinstance(ref, str) or not ref.startswith("item.") or len(ref) <= 5:
            raise _bad("item_reference must look like 'item.messages'.", f"{param}.item_reference")
        return {"type": "item_reference", "item_reference": ref}
    raise _bad(
        f"Invalid value for '{param}.type': expected 'template' or 'item_reference'.",
        f"{param}.type",
    )


def _sampling(value: Any, param: str, kind: str = "completions") -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _object(value, param)
    _known_keys(obj, set(SAMPLING_KEYS) | ({"text"} if kind == "responses" else set()), param)
    if obj.get("text") is not None:
        text = _object(obj["text"], f"{param}.text")
        _known_keys(text, {"format"}, f"{param}.text")
        response_format(text.get("format"), param=f"{param}.text.format")
    for key in ("temperature", "top_p"):
        if obj.get(key) is not None and not isinstance(obj[key], int | float):
            raise _bad(f"'{param}.{key}' must be a number.", f"{param}.{key}")
    for key in ("max_completion_tokens", "seed"):
        if obj.get(key) is not None and (
            not isinstance(obj[key], int) or isinstance(obj[key], bool)
        ):
            raise _bad(f"'{param}.{key}' must be an integer.", f"{param}.{key}")
    return obj


def _file_content(obj: Mapping[str, Any], param: str, schema: Mapping[str, Any] | None) -> None:
    content = obj.get("content")
    if not isinstance(content, list):
        raise _bad(
            f"'{param}.content' must be an array of {{item, sample?}} rows.", f"{param}.content"
        )
    for i, row in enumerate(content):
        where = f"{param}.content[{i}]"
        if not isinstance(row, Mapping) or "item" not in row:
            raise _bad(f"'{where}' must be an object with an 'item'.", where)
        _known_keys(row, {"item", "sample"}, where)
        why = check_item(schema, row["item"])
        if why is not None:
            raise _bad(f"Item does not match the eval's item_schema: {why}", f"{where}.item")
        if row.get("sample") is not None and not isinstance(row["sample"], Mapping):
            raise _bad(f"'{where}.sample' must be an object.", f"{where}.sample")


class DataSources:
    """Validates run data sources and yields their items."""

    def __init__(self, repo: EvalsRepo, completions: CompletionsRepo, home: Path) -> None:
        self.repo = repo
        self.completions = completions
        self.home = home

    # -- validation ------------------------------------------------------------------------------

    def _source(self, value: Any, kind: str, schema: Mapping[str, Any] | None) -> dict[str, Any]:
        param = "data_source.source"
        src = _object(value, param)
        stype = src.get("type")
        if stype == "file_content":
            _known_keys(src, {"type", "content"}, param)
            _file_content(src, param, schema)
        elif stype == "file_id":
            _known_keys(src, {"type", "id"}, param)
            if not isinstance(src.get("id"), str):
                raise _bad(f"'{param}.id' must be a file id.", f"{param}.id")
            self.repo.file_info(src["id"])  # 404 when absent
        elif stype == "responses" and kind == "responses":
            _responses_source(src, param)
        elif stype == "stored_completions" and kind == "completions":
            allowed = {"type", "model", "metadata", "created_after", "created_before", "limit"}
            _known_keys(src, allowed, param)
            validate_metadata(src.get("metadata"), param=f"{param}.metadata")
            for key in ("created_after", "created_before", "limit"):
                if src.get(key) is not None and not _int64(src[key]):
                    raise _bad(f"'{param}.{key}' must be an integer.", f"{param}.{key}")
            if src.get("limit") is not None and src["limit"] < 1:
                raise _bad(f"'{param}.limit' must be at least 1.", f"{param}.limit")
        else:
            stored = {"completions": ", stored_completions", "responses": ", responses"}
            allowed_types = "file_content, file_id" + stored.get(kind, "")
            raise _bad(
                f"Invalid value for '{param}.type': expected one of {allowed_types}.",
                f"{param}.type",
            )
        return src

    def validate(self, value: Any, eval_body: Mapping[str, Any]) -> dict[str, Any]:
        """Check a run's ``data_source`` against the eval; returns it normalized for storage."""
        param = "data_source"
        ds = _object(value, param)
        kind = ds.get("type")
        config = eval_body.get("data_source_config") or {}
        schema = item_schema(config)
        if kind == "jsonl":
            _known_keys(ds, {"type", "source"}, param)
            return {"type": "jsonl", "source": self._source(ds.get("source"), "jsonl", schema)}
        if kind not in ("completions", "responses", "distillery_dataset"):
            raise _bad(
                f"Invalid value for '{param}.type': expected one of {', '.join(RUN_TYPES)}.",
                f"{param}.type",
            )
        common = {"type", "model", "input_messages", "sampling_params"}
        out: dict[str, Any] = {"type": kind}
        if kind in ("completions", "responses"):
            _known_keys(ds, common | {"source"}, param)
            source = self._source(ds.get("source"), kind, schema)
            if source["type"] in STORED_SOURCES and source.get("metadata") is None:
                inherited = config.get("metadata")
                if inherited:
                    source = {**source, "metadata": dict(inherited)}
            out["source"] = source
        else:
            _known_keys(ds, common | {"dataset_id", "version", "split"}, param)
            if not isinstance(ds.get("dataset_id"), str):
                raise _bad(
                    "'data_source.dataset_id' must be a dataset id.", "data_source.dataset_id"
                )
            version = ds.get("version")
            if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
                raise _bad("'data_source.version' must be an integer.", "data_source.version")
            split = ds.get("split")
            if split is not None and not isinstance(split, str):
                raise _bad("'data_source.split' must be a string.", "data_source.split")
            _, number = self.repo.dataset_version_id(ds["dataset_id"], version)
            out.update(dataset_id=ds["dataset_id"], version=number, split=split)
        model = ds.get("model")
        if model is not None and (not isinstance(model, str) or not model):
            raise _bad("'data_source.model' must be a model name.", "data_source.model")
        input_messages = _input_messages(ds.get("input_messages"), f"{param}.input_messages")
        sampling = _sampling(ds.get("sampling_params"), f"{param}.sampling_params", kind)
        if model is None and (input_messages is not None or sampling is not None):
            raise _bad(
                "input_messages and sampling_params need a 'model' to generate with.",
                "data_source.model",
            )
        out.update(model=model, input_messages=input_messages, sampling_params=sampling)
        return out

    # -- items -----------------------------------------------------------------------------------

    def snapshot(self, ds: Mapping[str, Any]) -> dict[str, Any]:
        """What a run freezes when it starts: the number of items (and stored completion ids)."""
        source = ds.get("source") or {}
        if source.get("type") in STORED_SOURCES:
            ids = [c.id for c in self._stored(source)]
            return {"total": len(ids), "completion_ids": ids}
        return {"total": sum(1 for _ in self.items(ds, {}))}

    def _stored(self, source: Mapping[str, Any]) -> Iterator[StoredCompletion]:
        limit = source.get("limit")
        responses = source.get("type") == "responses"
        found = self.completions.iterate(
            model=source.get("model"),
            metadata=source.get("metadata") or None,
            created_after=source.get("created_after"),
            created_before=source.get("created_before"),
            status="completed",
            endpoint="responses" if responses else None,
        )
        n = 0
        for completion in found:
            if limit is not None and n >= limit:
                return
            if responses and not _response_matches(completion, source):
                continue
            n += 1
            yield completion

    def items(self, ds: Mapping[str, Any], state: Mapping[str, Any]) -> Iterator[SourceItem]:
        """The run's items in datasource order (``index`` = ``datasource_item_id``)."""
        if ds["type"] == "distillery_dataset":
            yield from self._dataset_items(ds)
            return
        source = ds["source"]
        if source["type"] == "file_content":
            for i, row in enumerate(source["content"]):
                yield SourceItem(i, dict(row["item"]), sample=row.get("sample"))
        elif source["type"] == "file_id":
            yield from self._file_items(source["id"])
        else:
            yield from self._stored_items(list(state.get("completion_ids") or []))

    def _stored_items(self, ids: list[str]) -> Iterator[SourceItem]:
        batch = 200
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            found = {c.id: c for c in self.completions.get_many(chunk)}
            for offset, cid in enumerate(chunk):
                completion = found.get(cid)
                index = start + offset
                if completion is None:
                    yield SourceItem(
                        index, {"completion_id": cid}, key=cid, missing="stored completion deleted"
                    )
                    continue
                answer = completion.to_chat_completion()
                item = {
                    "input": completion.messages,
                    "reference": _answer_text(answer),
                    "completion_id": completion.id,
                    "model": completion.model,
                    "metadata": completion.metadata,
                }
                yield SourceItem(
                    index, item, key=cid, completion=answer, messages=completion.messages
                )

    def _dataset_items(self, ds: Mapping[str, Any]) -> Iterator[SourceItem]:
        version_id, _ = self.repo.dataset_version_id(ds["dataset_id"], ds.get("version"))
        for i, row in enumerate(self.repo.dataset_examples(version_id, ds.get("split"))):
            messages = list(row.example.get("messages") or [])
            reference = ""
            if messages and messages[-1].get("role") == "assistant":
                reference = message_text(messages[-1])
                messages = messages[:-1]
            item: dict[str, Any] = {"messages": messages, "reference": reference}
            if row.completion_id:
                item["completion_id"] = row.completion_id
            yield SourceItem(i, item, sample={"output_text": reference}, key=row.completion_id)

    def file_bytes(self, file_id: str) -> bytes:
        """The content of an uploaded file (``$DISTILLERY_HOME/files/<id>``)."""
        info = self.repo.file_info(file_id)
        path = self.home / "files" / info.id
        try:
            return path.read_bytes()
        except OSError as exc:
            raise NotFoundError(
                f"The content of file {file_id} is not available ({os.strerror(exc.errno or 2)}).",
                param="file_id",
            ) from exc

    def _file_items(self, file_id: str) -> Iterator[SourceItem]:
        raw = self.file_bytes(file_id)
        index = 0
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidRequestError(
                    f"File {file_id}, line {number}: invalid JSON ({exc}).", param="file_id"
                ) from exc
            if not isinstance(row, dict):
                raise InvalidRequestError(
                    f"File {file_id}, line {number}: expected a JSON object.", param="file_id"
                )
            if isinstance(row.get("item"), dict) and set(row) <= {"item", "sample"}:
                yield SourceItem(index, row["item"], sample=row.get("sample"))
            else:
                yield SourceItem(index, row)
            index += 1


_RESPONSES_FILTERS = {
    "type", "model", "metadata", "created_after", "created_before", "limit", "users",
    "instructions_search", "temperature", "top_p",
}  # fmt: skip


def _int64(value: Any) -> bool:
    """An integer the store can compare with (a bigger one is a 400, not a database error)."""
    return isinstance(value, int) and -INT64_MAX <= value <= INT64_MAX


def _responses_source(src: Mapping[str, Any], param: str) -> None:
    """A ``responses`` source's filters (OpenAI's, less ``tools`` and ``reasoning_effort``)."""
    _known_keys(src, _RESPONSES_FILTERS, param)
    validate_metadata(src.get("metadata"), param=f"{param}.metadata")
    for key in ("created_after", "created_before", "limit"):
        if src.get(key) is not None and (not _int64(src[key]) or isinstance(src[key], bool)):
            raise _bad(f"'{param}.{key}' must be an integer.", f"{param}.{key}")
    if src.get("limit") is not None and src["limit"] < 1:
        raise _bad(f"'{param}.limit' must be at least 1.", f"{param}.limit")
    for key in ("temperature", "top_p"):
        if src.get(key) is not None and not isinstance(src[key], int | float):
            raise _bad(f"'{param}.{key}' must be a number.", f"{param}.{key}")
    users = src.get("users")
    if users is not None and (
        not isinstance(users, list) or not all(isinstance(u, str) for u in users)
    ):
        raise _bad(f"'{param}.users' must be an array of strings.", f"{param}.users")
    for key in ("model", "instructions_search"):
        if src.get(key) is not None and not isinstance(src[key], str):
            raise _bad(f"'{param}.{key}' must be a string.", f"{param}.{key}")


def _response_matches(completion: StoredCompletion, source: Mapping[str, Any]) -> bool:
    """Whether a stored response passes the filters the store does not index."""
    request = completion.request.get("responses")
    request = request if isinstance(request, Mapping) else {}
    users = source.get("users")
    if users is not None and request.get("user") not in users:
        return False
    search = source.get("instructions_search")
    if search and search not in str(request.get("instructions") or ""):
        return False
    for key in ("temperature", "top_p"):
        if source.get(key) is not None and request.get(key) != source[key]:
            return False
    return True


@dataclass(frozen=True)
class SourceItem:
    index: int
    item: dict[str, Any]
    sample: Mapping[str, Any] | None = None  # a sample given with the item (jsonl)
    completion: dict[str, Any] | None = None  # a stored answer (ChatCompletion object)
    messages: list[dict[str, Any]] | None = None  # the messages that produced ``completion``
    key: str | None = None  # identity across runs: the completion id
    missing: str | None = None  # why the item can no longer be read


def _answer_text(completion: Mapping[str, Any]) -> str:
    choices = completion.get("choices") or []
    message = choices[0].get("message") if choices else None
    return message_text(message) if isinstance(message, Mapping) else ""


def generation_messages(ds: Mapping[str, Any], item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chat messages to send for ``item`` (template rendered, or the referenced messages)."""
    spec = ds.get("input_messages")
    if spec is None:
        default = "item.input" if "input" in item and "messages" not in item else "item.messages"
        spec = {"type": "item_reference", "item_reference": default}
    if spec["type"] == "template":
        inp = GradeInput(item=item, sample={})
        return [render_message(InputMessage.model_validate(m), inp) for m in spec["template"]]
    ref = str(spec["item_reference"])
    value = lookup(item, ref.split(".")[1:])
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, Mapping) and isinstance(m.get("role"), str) for m in value)
    ):
        return [dict(m) for m in value]
    raise InvalidRequestError(
        f"item_reference '{ref}' does not name a list of messages in this item.",
        param="data_source.input_messages.item_reference",
    )


def sampling_body(ds: Mapping[str, Any]) -> dict[str, Any]:
    """The chat request's sampling parameters (a ``responses`` source's ``text.format`` as
    ``response_format``, its function tools in the chat shape)."""
    params = ds.get("sampling_params") or {}
    body = {k: params[k] for k in SAMPLING_KEYS if params.get(k) is not None}
    if ds.get("type") == "responses":
        text = params.get("text")
        fmt = response_format(text.get("format")) if isinstance(text, Mapping) else None
        if fmt is not None:
            body["response_format"] = fmt
        tools = chat_tools(body.pop("tools", None), strict=False)
        if tools:
            body["tools"] = tools
    return body
