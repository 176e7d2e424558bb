"""Retention: stored completions older than ``gateway.retention_days`` are deleted for real."""

from __future__ import annotations

import logging
import time

from distillery.store.completions import CompletionsRepo

log = logging.getLogger("distillery.capture")

PURGE_INTERVAL_S = 3600.0  # the server purges at start, then this often (``retention`` component)


def purge_expired(repo: CompletionsRepo, retention_days: float, *, now: float | None = None) -> int:
    """Delete what is past retention; 0 days keeps everything."""
    if retention_days <= 0:
        return 0
    cutoff = int((now if now is not None else time.time()) - retention_days * 86_400)
    deleted = repo.purge_before(cutoff)
    if deleted:
        log.info(
            "retention: deleted %d stored completions older than %s days", deleted, retention_days
        )
    return deleted
