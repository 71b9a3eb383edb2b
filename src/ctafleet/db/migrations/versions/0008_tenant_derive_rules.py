"""telemetry_settings.rules: a tenant's own derivation thresholds (null: the defaults)

Revision ID: 0008
Revises: 0007

Expand only: a new nullable column, which the previous release neither reads nor writes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("telemetry_settings") as batch:
        batch.add_column(sa.Column("rules", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("telemetry_settings") as batch:
        batch.drop_column("rules")
