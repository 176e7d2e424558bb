"""Opening the store migrates it; the tables and the migrations agree (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

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


def test_upgrade_to_json_text_keeps_the_rows(db_url: str) -> None:
    """Migration 0009 turns PostgreSQL's jsonb columns into json; rows stored before it keep
    their content (with the key order jsonb gave them), new rows keep the order sent."""
    import sqlalchemy as sa
    from alembic import command

    from distillery.store.engine import make_engine

    cfg = alembic_config(db_url)
    command.upgrade(cfg, "0008")
    engine = make_engine(db_url)
    insert = sa.text(
        "INSERT INTO evals (id, created_at, updated_at, body) VALUES (:id, 1, 1, :body)"
    )
    body = '{"name": "評価", "b": {"zz": 1, "a": [1, 2]}}'
    with engine.begin() as conn:
        conn.execute(insert, {"id": "eval_old", "body": body})
    command.upgrade(cfg, "head")
    with engine.begin() as conn:
        conn.execute(insert, {"id": "eval_new", "body": body})
        rows = dict(conn.execute(sa.text("SELECT id, body FROM evals")).all())
        if engine.dialect.name == "postgresql":
            kinds = conn.execute(
                sa.text(
                    "SELECT DISTINCT data_type FROM information_schema.columns WHERE "
                    "table_schema = current_schema() AND data_type IN ('json', 'jsonb')"
                )
            ).scalars()
            assert set(kinds) == {"json"}
    engine.dispose()
    old, new = (
        rows[k] if isinstance(rows[k], dict) else json.loads(rows[k])
        for k in ("eval_old", "eval_new")
    )
    assert old == new == {"name": "評価", "b": {"zz": 1, "a": [1, 2]}}
    assert list(new["b"]) == ["zz", "a"]
    store = Store.open(db_url)
    assert store.current_revision() == ScriptDirectory.from_config(cfg).get_current_head()
    store.close()
