"""Gateway API keys: random secrets shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "dk-"
SCOPES = ("admin", "ingest")


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: its key's scope and id (``bootstrap`` for
    ``DISTILLERY_API_KEY``), or neither when auth is off."""

    scope: str | None = None
    key_id: str | None = None

    @property
    def sees_everything(self) -> bool:
        """An admin key (or no auth) reads every key's stored data."""
        return self.scope in (None, "admin")


NOBODY = Caller()  # auth is off


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def same_key(key: str, key_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), key_hash)


def display_prefix(key: str) -> str:
    """The first characters of a key, safe to show in lists."""
    return key[: len(KEY_PREFIX) + 4]
