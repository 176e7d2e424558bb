"""Token usage as every endpoint reports it, read in one place.

Chat and legacy completions report ``prompt_tokens``/``completion_tokens`` (cached input under
``prompt_tokens_details.cached_tokens``); the Responses API reports ``input_tokens``/
``output_tokens`` (``input_tokens_details.cached_tokens``). ``Usage.of`` reads either from an
answer. A count that is not a count (a string, a bool, a negative number, or one the database's
integer columns cannot hold, such as a hostile upstream's 2**63) is ``None``: kept as sent in the
stored answer, but counted as nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_TOKENS = 2**31  # PostgreSQL's integer columns; SQLite's go to 2**63


def token_count(value: object) -> int | None:
    """A token count the integer columns hold, or None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_TOKENS:
        return value
    return None


@dataclass(frozen=True)
class Usage:
    prompt: int | None = None
    completion: int | None = None
    cached: int = 0

    @classmethod
    def of(cls, answer: Mapping[str, Any] | None) -> Usage:
        """The usage an answer reports, in either shape (no usage: nothing counted)."""
        usage = answer.get("usage") if isinstance(answer, Mapping) else None
        if not isinstance(usage, Mapping):
            return cls()
        if "input_tokens" in usage or "output_tokens" in usage:
            prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
            details = usage.get("input_tokens_details")
        else:
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
        return cls(token_count(prompt), token_count(completion), token_count(cached) or 0)

    @property
    def known(self) -> bool:
        """Whether the answer said how many tokens it took (both directions)."""
        return self.prompt is not None and self.completion is not None
