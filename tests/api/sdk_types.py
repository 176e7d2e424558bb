"""Checking our JSON against the openai SDK's own types, and the absent-vs-null rule.

The SDK declares a field ``Optional[X]`` without a default when it is required and nullable (it
must be sent, maybe as ``null``) and ``Optional[X] = None`` when it is optional: then it must be
left out rather than sent as ``null`` (strict TypeScript types reject the ``null``).
``check`` validates with ``model_validate`` and then walks the validated objects: a ``null``
given for an optional field, or a field the SDK does not declare (unless allowed), fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# Required and nullable in the SDKs' TypeScript types (``content: string | null``,
# ``refusal: string | null``) though the Python types give them a default: always sent.
REQUIRED_NULLABLE = frozenset({"content", "refusal"})


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        for name in value.model_fields_set:
            info = fields.get(name)
            if info is None:
                continue
            item = getattr(value, name)
            if item is None and not info.is_required() and name not in REQUIRED_NULLABLE:
                yield "null", f"{path}.{name}"
            else:
                yield from _walk(item, f"{path}.{name}")
        for extra in value.model_extra or {}:
            yield "extra", f"{path}.{extra}"
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")


def check(sdk_type: type[M], data: Any, *, extra: Iterable[str] = (), nulls: bool = True) -> M:
    """``data`` validated as ``sdk_type``; fails on an optional field sent as null (unless
    ``nulls`` is false: an upstream's answer passed through as OpenAI sent it) and on fields the
    SDK does not declare (``extra``: allowed ones, by name)."""
    obj = sdk_type.model_validate(data)
    allowed = set(extra)
    problems = [
        f"{kind} {path}"
        for kind, path in _walk(obj, "$")
        if not (kind == "extra" and path.rsplit(".", 1)[-1] in allowed)
        and (nulls or kind != "null")
    ]
    assert not problems, f"{sdk_type.__name__}: {problems}"
    return obj
