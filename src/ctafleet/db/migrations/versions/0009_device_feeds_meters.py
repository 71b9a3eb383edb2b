"""devices.feeds_meters: which of a vehicle's devices moves its odometer and engine hours

Revision ID: 0009
Revises: 0008

Expand only: a new column with a server default, which the previous release ignores. Where a
vehicle already has several devices, only the first registered keeps feeding its meters (each
of them added the same distance before).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(
            sa.Column("feeds_meters", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.execute(
        "UPDATE devices SET feeds_meters = false WHERE vehicle_id IS NOT NULL AND EXISTS ("
        " SELECT 1 FROM devices AS first WHERE first.vehicle_id = devices.vehicle_id"
        " AND (first.created_at < devices.created_at"
        "  OR (first.created_at = devices.created_at AND first.id < devices.id)))"
    )


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("feeds_meters")
