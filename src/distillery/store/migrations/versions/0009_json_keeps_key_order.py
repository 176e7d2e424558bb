"""PostgreSQL: every JSON column becomes ``json`` (the text as sent) instead of ``jsonb``

``jsonb`` stores objects with their keys sorted (shorter keys first), so a stored request's
``response_format`` schema came back with its properties reordered, and a student evaluated or
served with it wrote its fields in that order, not the application's. SQLite always kept the
text. Rows stored before this migration keep the order ``jsonb`` gave them.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS_OF_TYPE = sa.text(
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND data_type = :kind "
    "AND table_name <> 'alembic_version' ORDER BY table_name, ordinal_position"
)


def _convert(source: str, target: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite stores JSON as text already
    for table, column in bind.execute(_COLUMNS_OF_TYPE, {"kind": source}).all():
        op.alter_column(
            table,
            column,
            type_=sa.JSON() if target == "json" else postgresql.JSONB(),
            postgresql_using=f'"{column}"::{target}',
        )


def upgrade() -> None:
    _convert("jsonb", "json")


def downgrade() -> None:
    _convert("json", "jsonb")
