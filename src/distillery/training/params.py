"""``POST /v1/fine_tuning/jobs`` parameters, checked as OpenAI checks them (400 with ``param``).

Both the deprecated top-level ``hyperparameters`` and ``method`` are accepted; ``n_epochs``,
``batch_size`` and ``learning_rate_multiplier`` are each a number or ``"auto"``. distillery's own
options (for the local trainer: ``max_length``, ``lora_r``...) travel in a ``distillery`` object,
which the openai SDK sends with ``extra_body={"distillery": {...}}``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distillery.errors import InvalidRequestError
from distillery.training.base import Hyperparameters
from distillery.wire.chat import validate_metadata

SUFFIX_MAX = 64
SEED_MAX = 2**31 - 1
METHODS = ("supervised", "dpo", "reinforcement")
KNOWN_PARAMS = frozenset(
    {
        "model",
        "training_file",
        "validation_file",
        "suffix",
        "seed",
        "metadata",
        "method",
        "hyperparameters",
        "integrations",
        "distillery",
    }
)
_LIMITS: dict[str, tuple[float, float]] = {
    "n_epochs": (1, 50),
    "batch_size": (1, 256),
    "learning_rate_multiplier": (1e-6, 100.0),
}


@dataclass(frozen=True)
class CreateRequest:
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    method_type: str
    method: dict[str, Any]  # the client's `method` object (other fields than hyperparameters kept)
    hyperparameters: Hyperparameters
    integrations: list[Any] | None
    extras: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None  # the trainer kind asked for (``distillery.backend``)


def _string(body: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidRequestError(f"Missing required parameter: '{key}'.", param=key)
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"Invalid '{key}': expected a non-empty string.", param=key)
    return value


def _suffix(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequestError("Invalid 'suffix': expected a string.", param="suffix")
    if len(value) > SUFFIX_MAX:
        raise InvalidRequestError(
            f"Invalid 'suffix': string too long. Expected a string with maximum length "
            f"{SUFFIX_MAX}, but got a string with length {len(value)} instead.",
            param="suffix",
            code="string_above_max_length",
        )
    if ":" in value or any(ch.isspace() for ch in value):
        raise InvalidRequestError(
            "Invalid 'suffix': it may not contain ':' or whitespace.", param="suffix"
        )
    return value


def _seed(value: Any) -> int:
    if value is None:
        return secrets.randbelow(SEED_MAX)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise InvalidRequestError(
            f"Invalid 'seed': expected an integer between 0 and {SEED_MAX}.", param="seed"
        )
    return value


def _number(name: str, value: Any, param: str) -> int | float | str:
    if value is None or value == "auto":
        return "auto"
    low, high = _LIMITS[name]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and name != "learning_rate_multiplier":
        ok = float(value).is_integer()
        value = int(value) if ok else value
    if not ok or not low <= value <= high:
        kind = "a number" if name == "learning_rate_multiplier" else "an integer"
        raise InvalidRequestError(
            f"Invalid '{param}': expected \"auto\" or {kind} between {low:g} and {high:g}, "
            f"got {value!r}.",
            param=param,
        )
    return float(value) if name == "learning_rate_multiplier" else value


def parse_hyperparameters(value: Any, prefix: str) -> Hyperparameters:
    if value is None:
        return Hyperparameters()
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"Invalid '{prefix}': expected an object.", param=prefix)
    unknown = sorted(set(value) - set(_LIMITS) - {"beta"})
    if unknown:
        raise InvalidRequestError(
            f"Unrecognized hyperparameter '{unknown[0]}'.", param=f"{prefix}.{unknown[0]}"
        )
    got = {k: _number(k, value.get(k), f"{prefix}.{k}") for k in _LIMITS}
    return Hyperparameters(**got)  # type: ignore[arg-type]


def _method(body: Mapping[str, Any]) -> tuple[str, dict[str, Any], Hyperparameters]:
    top = body.get("hyperparameters")
    method = body.get("method")
    if method is None:
        return "supervised", {}, parse_hyperparameters(top, "hyperparameters")
    if not isinstance(method, Mapping):
        raise InvalidRequestError("Invalid 'method': expected an object.", param="method")
    mtype = method.get("type", "supervised")
    if mtype not in METHODS:
        raise InvalidRequestError(
            f"Invalid 'method.type': expected one of {', '.join(METHODS)}.", param="method.type"
        )
    section = method.get(mtype) or {}
    if not isinstance(section, Mapping):
        raise InvalidRequestError(f"Invalid 'method.{mtype}'.", param=f"method.{mtype}")
    prefix = f"method.{mtype}.hyperparameters"
    hyper = parse_hyperparameters(section.get("hyperparameters"), prefix)
    if top:
        legacy = parse_hyperparameters(top, "hyperparameters")
        if section.get("hyperparameters") and legacy != hyper:
            raise InvalidRequestError(
                "Specify hyperparameters either in 'method' or in the deprecated top-level "
                "'hyperparameters', not both.",
                param="hyperparameters",
            )
        hyper = legacy
    return str(mtype), dict(section), hyper


def parse_create(body: Any) -> CreateRequest:
    if not isinstance(body, Mapping):
        raise InvalidRequestError("The request body must be a JSON object.")
    unknown = sorted(set(body) - KNOWN_PARAMS)
    if unknown:
        raise InvalidRequestError(
            f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0]
        )
    model = _string(body, "model", required=True)
    training_file = _string(body, "training_file", required=True)
    assert model is not None and training_file is not None
    mtype, section, hyper = _method(body)
    integrations = body.get("integrations")
    if integrations is not None and not isinstance(integrations, list):
        raise InvalidRequestError("Invalid 'integrations': expected a list.", param="integrations")
    raw_extras = body.get("distillery") or {}
    if not isinstance(raw_extras, Mapping):
        raise InvalidRequestError("Invalid 'distillery': expected an object.", param="distillery")
    extras = dict(raw_extras)
    backend = extras.pop("backend", None)
    if backend is not None and not (isinstance(backend, str) and backend):
        raise InvalidRequestError(
            "Invalid 'distillery.backend': expected the name of a trainer kind.",
            param="distillery.backend",
        )
    return CreateRequest(
        model=model,
        training_file=training_file,
        validation_file=_string(body, "validation_file", required=False),
        suffix=_suffix(body.get("suffix")),
        seed=_seed(body.get("seed")),
        metadata=validate_metadata(body.get("metadata")),
        method_type=mtype,
        method=section,
        hyperparameters=hyper,
        integrations=integrations,
        extras=extras,
        backend=backend,
    )
