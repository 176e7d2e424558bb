"""What refuses or flags a selection before a dataset version is built from it.

- Mixed prompt versions: when the selected completions carry more than one value of the
  ``prompt_version_key`` metadata key (``prompt_version`` by default), a student would be trained
  on two prompts and learn neither. The version gets a warning, or, with ``strict``, the request
  is refused with a 409 (``mixed_prompt_versions``) and nothing is stored.
- Teachers' terms: when some selected completions come from models whose terms restrict training
  on their outputs (``settings.TERMS_FORBID_TRAINING``), the request is a 409 (``teacher_terms``)
  naming the models and counts unless it says ``acknowledge_terms: true``; either way the version
  records each teacher's terms and count, and whether the restriction was acknowledged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from distillery.errors import ConflictError
from distillery.settings import TERMS_FORBID_TRAINING
from distillery.store.records import StoredCompletion

TermsOf = Callable[[str], str | None]  # a teacher model's terms (None: none configured)


def check_prompt_versions(
    chosen: list[StoredCompletion], key: str, *, strict: bool
) -> tuple[Counter[Any], list[str]]:
    """The prompt versions of the selection (value -> count) and the warnings they give."""
    warnings: list[str] = []
    versions = Counter(c.metadata.get(key) for c in chosen if c.metadata.get(key) is not None)
    if len(versions) > 1:
        listed = ", ".join(f"{v} ({n})" for v, n in versions.most_common())
        message = (
            f"The selection mixes {len(versions)} values of metadata "
            f"'{key}': {listed}. A student trained on mixed prompt "
            "versions learns neither; filter on one value."
        )
        if strict:
            raise ConflictError(message, param=key, code="mixed_prompt_versions")
        warnings.append(message)
    return versions, warnings


def check_terms(
    chosen: list[StoredCompletion], terms_of: TermsOf | None, acknowledged: bool
) -> dict[str, Any]:
    """The teachers' terms of a selection: 409 when some forbid training and the request
    does not say ``acknowledge_terms: true``; otherwise what the version records."""
    return check_model_terms(Counter(c.model for c in chosen), terms_of, acknowledged)


def check_model_terms(
    counts: Counter[str], terms_of: TermsOf | None, acknowledged: bool
) -> dict[str, Any]:
    """:func:`check_terms` for outputs counted by model (a synthesis checks its teacher's
    terms this way before it asks for anything)."""
    chosen = range(sum(counts.values()))
    terms = {m: terms_of(m) if terms_of is not None else None for m in counts}
    restricted: dict[str, dict[str, Any]] = {
        m: {"terms": t, "count": counts[m]}
        for m, t in sorted(terms.items())
        if t in TERMS_FORBID_TRAINING
    }
    if restricted and not acknowledged:
        n = sum(r["count"] for r in restricted.values())
        listed = ", ".join(f"{m} ({r['terms']}, {r['count']})" for m, r in restricted.items())
        raise ConflictError(
            f"{n} of the {len(chosen)} selected completions come from models whose terms "
            f"restrict training on their outputs: {listed}. Send acknowledge_terms: true to "
            "build the dataset anyway (recorded with the version).",
            param="acknowledge_terms",
            code="teacher_terms",
        )
    return {
        "models": {m: {"terms": terms[m], "count": n} for m, n in sorted(counts.items())},
        "restricted": restricted,
        "acknowledged": bool(restricted) and acknowledged,
    }
