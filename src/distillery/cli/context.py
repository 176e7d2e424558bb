"""The CLI's services, built once per command."""

from __future__ import annotations

from functools import lru_cache

from distillery.services import Services, build_services


@lru_cache(maxsize=1)
def services() -> Services:
    return build_services()
