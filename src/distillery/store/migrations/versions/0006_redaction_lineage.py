"""redaction: what [capture.redaction] replaced in a stored completion (kinds and counts);
lineage: the dataset version a file was exported from, dataset items by completion;
judge calibrations

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("completions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "redaction",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    with op.batch_alter_table("dataset_items", schema=None) as batch_op:
        batch_op.create_index("ix_dataset_items_completion_id", ["completion_id"], unique=False)
    op.create_table(
        "dataset_files",
        sa.Column("file_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["dataset_versions.id"],
            name=op.f("fk_dataset_files_version_id_dataset_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", name=op.f("pk_dataset_files")),
    )
    with op.batch_alter_table("dataset_files", schema=None) as batch_op:
        batch_op.create_index("ix_dataset_files_version_id", ["version_id"], unique=False)
    op.create_table(
        "judge_calibrations",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("grader_key", sa.String(length=64), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_judge_calibrations")),
        sa.UniqueConstraint("id", name=op.f("uq_judge_calibrations_id")),
    )
    with op.batch_alter_table("judge_calibrations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_judge_calibrations_grader_key_seq", ["grader_key", "seq"], unique=False
        )


def downgrade() -> None:
    op.drop_table("judge_calibrations")
    with op.batch_alter_table("dataset_files", schema=None) as batch_op:
        batch_op.drop_index("ix_dataset_files_version_id")
    op.drop_table("dataset_files")
    with op.batch_alter_table("dataset_items", schema=None) as batch_op:
        batch_op.drop_index("ix_dataset_items_completion_id")
    with op.batch_alter_table("completions", schema=None) as batch_op:
        batch_op.drop_column("redaction")
