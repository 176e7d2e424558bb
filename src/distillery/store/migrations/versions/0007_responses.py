"""responses: the stored completions that are Responses API exchanges (POST /v1/responses)

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column(
            "completion_seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("previous_response_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["completion_seq"],
            ["completions.seq"],
            name=op.f("fk_responses_completion_seq_completions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("completion_seq", name=op.f("pk_responses")),
    )


def downgrade() -> None:
    op.drop_table("responses")
