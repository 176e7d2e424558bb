"""files datasets annotations: index of annotation items by completion (corrections lookup)

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("annotation_items", schema=None) as batch_op:
        batch_op.create_index("ix_annotation_items_completion_id", ["completion_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("annotation_items", schema=None) as batch_op:
        batch_op.drop_index("ix_annotation_items_completion_id")
