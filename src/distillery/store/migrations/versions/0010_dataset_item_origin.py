"""Dataset items record where they came from when it was not captured traffic

``origin`` is ``"synthetic"`` for a row the teacher answered for an input it generated
(``distillery.curation.synthesize``) and ``"relabel"`` for a stored input answered again by another
teacher. Rows stored before this migration, captured or imported, keep ``NULL``.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_items") as batch:
        batch.add_column(sa.Column("origin", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_items") as batch:
        batch.drop_column("origin")
