"""Deterministic, leakage-safe train/validation/test assignment.

The split of an example is decided by the SHA-256 of its *group key*: the normalized first user
message (NFKC, case-folded, whitespace collapsed), or the whole normalized conversation when it
has no user message. The key does not depend on the completion id, the dataset, the version or
the order of the rows, so:

- the same item lands in the same split in every version built with the same ratios;
- every turn of one conversation, and every stored completion of the same question (teacher
  re-runs, retries), shares one key and so one side of the split: no question is both trained
  on and held out;
- near-duplicates kept with ``keep_duplicates`` take the key of the example they duplicate
  (see :mod:`distillery.datasets.dedupe`).

The hash maps the key to a number in [0, 1); the ratios cut that interval in the fixed order
train, validation, test. Changing the ratios moves only the items near the cut points.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from distillery.errors import InvalidRequestError
from distillery.text.normalize import collapse_whitespace, nfkc
from distillery.wire.content import message_text

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_RATIOS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}


def parse_ratios(ratios: Mapping[str, Any] | None) -> dict[str, float]:
    """Ratios per split, each in [0, 1], summing to 1 (else a 400 with ``param="split"``)."""
    if ratios is None:
        return dict(DEFAULT_RATIOS)
    if not isinstance(ratios, Mapping) or not ratios:
        raise InvalidRequestError(
            '\'split\' must be an object of ratios, e.g. {"train": 0.9, "validation": 0.1}.',
            param="split",
        )
    out = dict.fromkeys(SPLITS, 0.0)
    for name, value in ratios.items():
        if name not in SPLITS:
            raise InvalidRequestError(
                f"Unknown split {name!r}: use {', '.join(SPLITS)}.", param="split"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequestError(f"The ratio of {name!r} must be a number.", param="split")
        if not 0 <= value <= 1 or math.isnan(value):
            raise InvalidRequestError(
                f"The ratio of {name!r} must be between 0 and 1, got {value}.", param="split"
            )
        out[name] = float(value)
    total = sum(out.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise InvalidRequestError(
            f"The split ratios must sum to 1, but {' + '.join(f'{v:g}' for v in out.values())} "
            f"= {total:g}.",
            param="split",
            code="invalid_split",
        )
    return out


def normalize(text: str) -> str:
    return collapse_whitespace(nfkc(text)).casefold()


def group_key(example: Mapping[str, Any]) -> str:
    """The normalized first user message (or whole conversation) that decides the split."""
    messages = [m for m in example.get("messages") or [] if isinstance(m, Mapping)]
    for message in messages:
        if message.get("role") == "user":
            return "user:" + normalize(message_text(message))
    return "all:" + normalize("\n".join(f"{m.get('role')}: {message_text(m)}" for m in messages))


def position(key: str) -> float:
    """A uniform number in [0, 1) from SHA-256 of the key."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(key: str, ratios: Mapping[str, float]) -> str:
    """The split of ``key`` under ``ratios`` (as returned by :func:`parse_ratios`)."""
    x = position(key)
    edge = 0.0
    last = SPLITS[0]
    for name in SPLITS:
        share = ratios.get(name, 0.0)
        if share <= 0:
            continue
        last = name
        edge += share
        if x < edge:
            return name
    return last
