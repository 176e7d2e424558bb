"""Opening the store migrates it; the tables and the migrations agree (SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from distillery.store import Store
from distillery.store.base import alembic_config
from distillery.store.tables import Base


def test_open_applies_migrations_and_models_match(db_url: str) -> None:
    store = Store.open(db_url)
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert store.current_revision() == head
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"tables.py and the migrations disagree: {diff}"
    # opening again is a no-op
    Store.open(db_url).close()
    store.close()


def test_check_schema_refuses_unmigrated(db_url: str) -> None:
    import pytest

    from distillery.errors import ConfigError
    from distillery.store.engine import make_engine

    engine = make_engine(db_url)
    unmigrated = Store(db_url, engine)
    with pytest.raises(ConfigError, match="db upgrade"):
        unmigrated.check_schema()
    engine.dispose()
