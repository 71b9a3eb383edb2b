"""device ids are unique per tenant, not platform-wide

A platform-wide unique id let one tenant learn that another registered an id (its 409) and
claim an id first. Ingest names a device by its credential (unique platform-wide), so the id
the device reports needs to be unique only within its tenant.

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
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_constraint("uq_devices_unique_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_devices_tenant_id_unique_id", ["tenant_id", "unique_id"]
        )


def downgrade() -> None:
    # Fails if two tenants registered the same id since: that is the data the upgrade allows.
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_constraint("uq_devices_tenant_id_unique_id", type_="unique")
        batch_op.create_unique_constraint("uq_devices_unique_id", ["unique_id"])
