"""The ``input`` messages of ``label_model`` / ``score_model`` graders, rendered for a chat model.

OpenAI's grader messages are ``{role, content, type?: "message"}`` where ``content`` is a string
or content items: ``input_text`` / ``output_text`` (``text``), ``input_image`` (``image_url``,
``detail``) and ``input_audio``. They become Chat Completions messages: text is templated with
``{{item.x}}`` / ``{{sample.output_text}}``, a lone text item collapses to a string, images become
``image_url`` parts, and the ``developer`` role is sent as ``system`` (which every
OpenAI-compatible server accepts, local chat templates included).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from distillery.evals.graders.base import GradeInput
from distillery.evals.graders.templating import render

TEXT_ITEMS = frozenset({"input_text", "output_text", "text"})
CONTENT_ITEMS = TEXT_ITEMS | {"input_image", "input_audio"}


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant", "system", "developer"]
    content: str | dict[str, Any] | list[dict[str, Any]]
    type: Literal["message"] | None = None

    @field_validator("content")
    @classmethod
    def _known_items(
        cls, content: str | dict[str, Any] | list[dict[str, Any]]
    ) -> str | dict[str, Any] | list[dict[str, Any]]:
        items = (
            [content] if isinstance(content, dict) else [] if isinstance(content, str) else content
        )
        for item in items:
            kind = item.get("type")
            if kind not in CONTENT_ITEMS:
                raise ValueError(f"unsupported content type {kind!r}; use {sorted(CONTENT_ITEMS)}")
            if kind in TEXT_ITEMS and not isinstance(item.get("text"), str):
                raise ValueError(f"{kind} content needs a string 'text'")
        return content


def _part(item: dict[str, Any], inp: GradeInput) -> dict[str, Any]:
    kind = item["type"]
    if kind in TEXT_ITEMS:
        return {"type": "text", "text": render(item["text"], inp)}
    if kind == "input_image":
        image: dict[str, Any] = {"url": render(str(item.get("image_url", "")), inp)}
        if item.get("detail"):
            image["detail"] = item["detail"]
        return {"type": "image_url", "image_url": image}
    return {"type": "input_audio", "input_audio": item.get("input_audio", {})}


def render_message(message: InputMessage, inp: GradeInput) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    content = message.content
    if isinstance(content, str):
        return {"role": role, "content": render(content, inp)}
    parts = [_part(item, inp) for item in ([content] if isinstance(content, dict) else content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}
    return {"role": role, "content": parts}


def render_messages(messages: list[InputMessage], inp: GradeInput) -> list[dict[str, Any]]:
    return [render_message(m, inp) for m in messages]


def with_instruction(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """Append the answer-format ``instruction`` to the last user message (or add one)."""
    result = [dict(m) for m in messages]
    last = result[-1] if result else None
    if last is None or last["role"] != "user":
        return [*result, {"role": "user", "content": instruction}]
    if isinstance(last["content"], str):
        last["content"] = f"{last['content']}\n\n{instruction}"
    else:
        last["content"] = [*last["content"], {"type": "text", "text": instruction}]
    return result
