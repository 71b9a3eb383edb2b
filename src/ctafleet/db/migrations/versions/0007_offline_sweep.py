"""device_states.offline_at: when the offline sweep reported the device silent

Revision ID: 0007
Revises: 0006

Expand only: a new nullable column, which the previous release neither reads nor writes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("device_states") as batch:
        batch.add_column(sa.Column("offline_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_states") as batch:
        batch.drop_column("offline_at")
