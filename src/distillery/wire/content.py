"""A message's ``content`` as text: the one set of rules, for every reader of messages.

OpenAI's messages carry ``content`` as a string, ``null`` (an assistant turn that only calls
tools), or a list of parts. Chat Completions writes text parts as ``{"type": "text"}``, the
Responses API as ``input_text``/``output_text``; an assistant may answer with a ``refusal`` part.
Those are the *text* parts, and their text is joined without a separator (as the SDKs'
``output_text`` does). Every other part (``image_url``, ``input_audio``, ``file``...) has no text:

- readers that only need the words (graders, dedupe, splits, routes, stored messages) skip it;
- a page shows it as ``[image_url]``, so that a reader sees something was there;
- a local model or the trainer cannot use it: :func:`first_non_text` finds it, and the caller
  raises its own error naming the part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


def part_text(part: Any) -> str | None:
    """The text of a text or refusal part; ``None`` for any other part."""
    if not isinstance(part, Mapping):
        return None
    kind = part.get("type")
    if kind in TEXT_PART_TYPES and isinstance(part.get("text"), str):
        return str(part["text"])
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return str(part["refusal"])
    return None


def content_text(content: Any, *, mark_other: bool = False, sep: str = "") -> str:
    """``content`` as text: a string as it is, ``None`` as ``""``, parts joined by ``sep``.

    Parts without text are left out, or written ``[type]`` with ``mark_other`` (for pages).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return str(content)
    texts: list[str] = []
    for part in content:
        text = part_text(part)
        if text is not None:
            texts.append(text)
        elif mark_other:
            kind = part.get("type", "part") if isinstance(part, Mapping) else "part"
            texts.append(f"[{kind}]")
    return sep.join(texts)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one message (``""`` for a message that only calls tools)."""
    return content_text(message.get("content"))


def first_non_text(content: Any) -> tuple[int, str] | None:
    """``(index, type)`` of the first part of ``content`` that has no text, or ``None``.

    A part that is not an object reports its Python type's name.
    """
    if not isinstance(content, list):
        return None
    for index, part in enumerate(content):
        if part_text(part) is None:
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            return index, str(kind)
    return None
