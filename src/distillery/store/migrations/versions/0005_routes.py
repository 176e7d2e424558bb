"""routes: shadow, canary and fallback; their events and outcomes; the response cache;
the requested model and route of a stored completion

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "response_cache",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("route_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column(
            "response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_response_cache")),
    )
    with op.batch_alter_table("response_cache", schema=None) as batch_op:
        batch_op.create_index("ix_response_cache_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "routes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_routes")),
        sa.UniqueConstraint("id", name=op.f("uq_routes_id")),
        sa.UniqueConstraint("name", name=op.f("uq_routes_name")),
    )
    op.create_table(
        "route_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("route_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["routes.id"],
            name=op.f("fk_route_events_route_id_routes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_route_events")),
        sa.UniqueConstraint("id", name=op.f("uq_route_events_id")),
    )
    with op.batch_alter_table("route_events", schema=None) as batch_op:
        batch_op.create_index("ix_route_events_route_seq", ["route_id", "seq"], unique=False)

    op.create_table(
        "route_outcomes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("route_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("served_by", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("completion_id", sa.String(length=64), nullable=True),
        sa.Column("student_completion_id", sa.String(length=64), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("saved_usd", sa.Float(), nullable=True),
        sa.Column(
            "grades",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["route_id"],
            ["routes.id"],
            name=op.f("fk_route_outcomes_route_id_routes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_route_outcomes")),
    )
    with op.batch_alter_table("route_outcomes", schema=None) as batch_op:
        batch_op.create_index("ix_route_outcomes_route_seq", ["route_id", "seq"], unique=False)

    with op.batch_alter_table("completions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_model", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("route_id", sa.String(length=64), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("completions", schema=None) as batch_op:
        batch_op.drop_column("route_id")
        batch_op.drop_column("requested_model")

    with op.batch_alter_table("route_outcomes", schema=None) as batch_op:
        batch_op.drop_index("ix_route_outcomes_route_seq")

    op.drop_table("route_outcomes")
    with op.batch_alter_table("route_events", schema=None) as batch_op:
        batch_op.drop_index("ix_route_events_route_seq")

    op.drop_table("route_events")
    op.drop_table("routes")
    with op.batch_alter_table("response_cache", schema=None) as batch_op:
        batch_op.drop_index("ix_response_cache_expires_at")

    op.drop_table("response_cache")
