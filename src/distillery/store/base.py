"""``Store``: engine, sessions, the single-writer rule on SQLite, and migrations on open."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from distillery.errors import ConfigError
from distillery.store.engine import is_sqlite, make_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


class Store:
    """A migrated database. Thread-safe; share one per process."""

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self.sqlite = is_sqlite(url)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # SQLite allows one writer at a time; serialising writers in-process avoids busy waits.
        self._write_lock = threading.Lock() if self.sqlite else None

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        engine = make_engine(url)
        store = cls(url, engine)
        if migrate:
            store.upgrade()
        else:
            store.check_schema()
        return store

    def upgrade(self) -> None:
        """Apply pending migrations (no-op when current)."""
        with self.engine.begin() as conn:
            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def check_schema(self) -> None:
        head = ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()
        current = self.current_revision()
        if current != head:
            raise ConfigError(
                f"the database schema is at {current}, this distillery expects {head}: "
                "run `distillery db upgrade`"
            )

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success; one writer at a time on SQLite."""
        if self._write_lock is not None:
            with self._write_lock, self._sessions() as session, session.begin():
                yield session
        else:
            with self._sessions() as session, session.begin():
                yield session

    def close(self) -> None:
        self.engine.dispose()
