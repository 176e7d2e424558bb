"""The door for providers and trainers: kinds found by name, built-in or installed.

A *kind* is what ``kind = "..."`` names in ``[providers.NAME]`` or what ``[training] backend``
(or a job's ``distillery.backend``) names: an object that carries the kind's config model and how
to build it (``providers.base.ProviderKind``, ``training.base.TrainerKind``). The built-in kinds
and installed plugins come through the same door: an entry point ``module:attribute``, the
built-ins listed here, plugins declared by their package under the groups

    [project.entry-points."distillery.providers"]
    anthropic = "distillery_anthropic:ANTHROPIC"

    [project.entry-points."distillery.trainers"]
    gpu = "distillery_gpu:GPU_TRAINER"

A kind is imported the first time it is asked for (so a configuration that never names a plugin
never imports it), and a plugin cannot take a built-in's name (it is logged and ignored). This
module is a leaf: it imports the kinds' modules by name only, so ``settings`` can validate a
provider table with its kind's model without the settings layer importing the providers layer.
"""

from __future__ import annotations

import functools
import logging
from importlib.metadata import EntryPoint, entry_points

from distillery.errors import ConfigError

log = logging.getLogger(__name__)

PROVIDERS_GROUP = "distillery.providers"
TRAINERS_GROUP = "distillery.trainers"

BUILTIN: dict[str, dict[str, str]] = {
    PROVIDERS_GROUP: {
        "openai": "distillery.providers.openai_compatible:OPENAI",
        "azure": "distillery.providers.openai_compatible:AZURE",
        "vllm": "distillery.providers.vllm:VLLM",
        "local": "distillery.serving.local:LOCAL",
        "replay": "distillery.providers.replay:REPLAY",
    },
    TRAINERS_GROUP: {
        "local": "distillery.training.local.backend:LOCAL_TRAINER",
        "openai": "distillery.training.openai_ft:OPENAI_TRAINER",
    },
}


@functools.cache
def entries(group: str) -> dict[str, EntryPoint]:
    """Every kind of ``group`` by name: the built-ins, then the installed plugins'."""
    found = {name: EntryPoint(name, value, group) for name, value in BUILTIN[group].items()}
    for entry in entry_points(group=group):
        if entry.name in found:
            if entry.value != found[entry.name].value:
                log.warning(
                    "plugin %s = %r ignored: %r is a built-in %s kind",
                    entry.name,
                    entry.value,
                    entry.name,
                    group,
                )
            continue
        found[entry.name] = entry
    return found


def names(group: str) -> list[str]:
    """The kinds of ``group`` one can name, built-ins first."""
    return list(entries(group))


@functools.cache
def load(group: str, kind: str) -> object:
    """The object entry point ``kind`` of ``group`` names, imported on first use.

    An unknown kind, or a plugin that fails to import, is a ``ConfigError`` that names the kinds
    there are (and the import's own error).
    """
    entry = entries(group).get(kind)
    if entry is None:
        known = ", ".join(names(group))
        raise ConfigError(
            f"unknown {group.removeprefix('distillery.')[:-1]} kind {kind!r} (known: {known}; "
            f"a plugin declares one under the entry-point group {group!r})"
        )
    try:
        return entry.load()
    except Exception as exc:  # a broken plugin: name it, with its own error
        raise ConfigError(f"{group} kind {kind!r} ({entry.value}) cannot be loaded: {exc}") from exc
