"""The ``local`` provider kind: how a ``[providers.NAME]`` table of kind ``local`` is built.

Kept apart from :mod:`distillery.serving.local_provider` so that loading the kind imports no
engine: the provider (and with it the engine, and torch on the first request) is imported when a
``local`` provider is built. Its table, ``LocalProviderConfig``, is in ``providers/local.py``
(the local trainer reads it too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distillery.providers.base import ProviderContext, ProviderKind
from distillery.providers.local import LocalProviderConfig

if TYPE_CHECKING:
    from distillery.serving.adapters import AdapterRef
    from distillery.serving.local_provider import LocalProvider


def _build(name: str, config: LocalProviderConfig, context: ProviderContext) -> LocalProvider:
    from distillery.serving.adapters import AdapterRef
    from distillery.serving.local_provider import LocalProvider

    lookup = context.fine_tunes
    known: dict[str, AdapterRef] = {}  # registered models never change: cache the hits

    def resolve(model_id: str) -> AdapterRef | None:
        ref = known.get(model_id)
        if ref is None and lookup is not None:
            found = lookup(model_id)
            if found is None or found.adapter_path is None:
                return None
            ref = AdapterRef(found.id, found.base_model, found.adapter_path, found.created_at)
            known[model_id] = ref
        return ref

    return LocalProvider(name, config, adapter_resolver=resolve if lookup else None)


LOCAL = ProviderKind(
    kind="local",
    config=LocalProviderConfig,
    build=_build,
    summary="The students served in-process: batched generation, LoRA adapters, tools.",
)
