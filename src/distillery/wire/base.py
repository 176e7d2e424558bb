"""The base of the wire objects distillery builds: pydantic models named as in ``openai.types``.

The SDKs tell two kinds of empty field apart, and so do their strict TypeScript types:

- a field declared ``X | None`` without a default is *required and nullable*: it is always sent,
  as ``null`` when there is no value (``ChatCompletionMessage.refusal``, ``content``);
- a field declared ``X | None = None`` is *optional*: it is left out when there is no value, never
  sent as ``null`` (``FileObject.status_details``, ``ChatCompletionMessage.tool_calls``).

:class:`WireModel` serializes by that rule, in nested models too, so a model only has to declare
its fields as the SDK does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class WireModel(BaseModel):
    """A wire object: optional fields without a value are absent from :meth:`to_wire`."""

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, info in type(self).model_fields.items():
            key = info.serialization_alias or info.alias or name
            if not info.is_required() and info.default is None and data.get(key, 0) is None:
                del data[key]
        return data

    def to_wire(self) -> dict[str, Any]:
        """The JSON object to send (aliases applied, absent optional fields left out)."""
        return self.model_dump(mode="json", by_alias=True)


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's cursor list: ``{"object": "list", "data", "first_id", "last_id", "has_more"}``.

    Every paginated list distillery answers (stored completions and their messages, files, jobs,
    evals, its own resources) is this envelope, built here and nowhere else.
    """
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
