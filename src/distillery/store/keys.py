"""API keys (hashes only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from distillery import ids
from distillery.errors import InvalidRequestError, NotFoundError
from distillery.security.keys import SCOPES, display_prefix, generate_key, hash_key
from distillery.store.base import Store
from distillery.store.tables import ApiKeyRow


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str | None
    prefix: str
    scope: str
    created_at: int
    revoked_at: int | None
    last_used_at: int | None


def _record(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scope=row.scope,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


class KeysRepo:
    def __init__(self, store: Store) -> None:
        self.store = store
        # called with the hash of each key revoked through this repository, once committed:
        # the caches of this process (API key cache, dashboard sessions) drop it at once
        self._on_revoke: list[Callable[[str], None]] = []

    def on_revoke(self, listener: Callable[[str], None]) -> None:
        self._on_revoke.append(listener)

    def create(self, *, scope: str, name: str | None = None) -> tuple[ApiKey, str]:
        """Create a key; returns the record and the only copy of the secret."""
        if scope not in SCOPES:
            raise InvalidRequestError(
                f"unknown scope {scope!r}; use one of {SCOPES}", param="scope"
            )
        secret = generate_key()
        row = ApiKeyRow(
            id=ids.new_id(ids.API_KEY, 16),
            name=name,
            prefix=display_prefix(secret),
            key_hash=hash_key(secret),
            scope=scope,
            created_at=int(time.time()),
        )
        with self.store.write() as session:
            session.add(row)
            session.flush()
            return _record(row), secret

    def list(self) -> list[ApiKey]:
        with self.store.read() as session:
            return [_record(r) for r in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.seq))]

    def revoke(self, key_id: str) -> ApiKey:
        with self.store.write() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.id == key_id))
            if row is None:
                raise NotFoundError(f"no API key {key_id!r}", param="id")
            row.revoked_at = row.revoked_at or int(time.time())
            session.flush()
            record, key_hash = _record(row), row.key_hash
        for listener in list(self._on_revoke):
            listener(key_hash)
        return record

    def active_hash(self, key_hash: str) -> ApiKey | None:
        """The active key whose secret has this SHA-256, or None (revoked or deleted)."""
        with self.store.read() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash))
            if row is None or row.revoked_at is not None:
                return None
            return _record(row)

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None."""
        with self.store.read() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(secret)))
            if row is None or row.revoked_at is not None:
                return None
            return _record(row)
