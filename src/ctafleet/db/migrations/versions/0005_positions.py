"""telemetry: positions (range-partitioned by month on PostgreSQL), each device's last position
and derive state, per-tenant telemetry settings (retention, ingest key), id-only devices

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ctafleet.db import rls

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ["positions", "last_positions", "telemetry_settings"]
ATTRIBUTES = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# The application role owns no table, so it cannot create or drop partitions itself: these two
# functions run as their owner (the migration's role) and do only that.
# Each partition gets the parent's row-level security too: the parent's policy covers queries
# through `positions`, this one any query naming a partition directly.
_PREDICATE = rls.predicate("tenant_id").replace("'", "''")
PARTITION_FUNCTIONS = [
    f"""
CREATE OR REPLACE FUNCTION ctafleet_positions_partition(month timestamptz) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    lower timestamptz := date_trunc('month', month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    name text := 'positions_p' || to_char(month AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(name) IS NULL THEN
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF positions FOR VALUES FROM (%L) TO (%L)',
                name, lower, lower + interval '1 month');
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
            EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', name);
            EXECUTE format('CREATE POLICY {rls.POLICY} ON %I USING (%s) WITH CHECK (%s)',
                name, '{_PREDICATE}', '{_PREDICATE}');
        EXCEPTION WHEN duplicate_table THEN
            NULL;  -- another worker made it first
        END;
    END IF;
    RETURN name;
END $$
""",
    """
CREATE OR REPLACE FUNCTION ctafleet_positions_drop_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part text;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'positions'::regclass AND c.relname ~ '^positions_p[0-9]{6}$'
        ORDER BY c.relname
    LOOP
        -- The partition holds one month: dropped only when all of it is older than the cutoff.
        IF (to_timestamp(substr(part, 12) || '01', 'YYYYMMDD') AT TIME ZONE 'UTC')
                AT TIME ZONE 'UTC' + interval '1 month' <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part);
            RETURN NEXT part;
        END IF;
    END LOOP;
END $$
""",
]


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("allow_id_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.alter_column("allow_id_only", server_default=None)

    op.create_table(
        "telemetry_settings",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("ingest_key_hash", sa.String(length=64), nullable=True),
        sa.Column("ingest_key_prefix", sa.String(length=12), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_telemetry_settings_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_telemetry_settings")),
        sa.UniqueConstraint("ingest_key_hash", name=op.f("uq_telemetry_settings_ingest_key_hash")),
    )

    op.create_table(
        "positions",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("fix_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("vehicle_id", sa.Uuid(), nullable=True),
        sa.Column("lat", sa.Float(precision=53), nullable=True),
        sa.Column("lon", sa.Float(precision=53), nullable=True),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("server_time", sa.Boolean(), nullable=False),
        sa.Column("speed_mps", sa.Float(), nullable=True),
        sa.Column("course_deg", sa.Float(), nullable=True),
        sa.Column("altitude_m", sa.Float(), nullable=True),
        sa.Column("accuracy_m", sa.Float(), nullable=True),
        sa.Column("hdop", sa.Float(), nullable=True),
        sa.Column("battery_pct", sa.Float(), nullable=True),
        sa.Column("charging", sa.Boolean(), nullable=True),
        sa.Column("ignition", sa.Boolean(), nullable=True),
        sa.Column("odometer_m", sa.Float(precision=53), nullable=True),
        sa.Column("driver_unique_id", sa.String(length=64), nullable=True),
        sa.Column("attributes", ATTRIBUTES, nullable=True),
        sa.PrimaryKeyConstraint("device_id", "fix_time", name=op.f("pk_positions")),
        postgresql_partition_by="RANGE (fix_time)",
    )
    op.create_index(
        "ix_positions_vehicle_id_fix_time", "positions", ["vehicle_id", "fix_time"], unique=False
    )

    op.create_table(
        "last_positions",
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("vehicle_id", sa.Uuid(), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fix_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lat", sa.Float(precision=53), nullable=True),
        sa.Column("lon", sa.Float(precision=53), nullable=True),
        sa.Column("speed_mps", sa.Float(), nullable=True),
        sa.Column("course_deg", sa.Float(), nullable=True),
        sa.Column("altitude_m", sa.Float(), nullable=True),
        sa.Column("accuracy_m", sa.Float(), nullable=True),
        sa.Column("battery_pct", sa.Float(), nullable=True),
        sa.Column("ignition", sa.Boolean(), nullable=True),
        sa.Column("odometer_m", sa.Float(precision=53), nullable=True),
        sa.Column("derive_state", ATTRIBUTES, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_last_positions_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_last_positions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_last_positions")),
    )
    with op.batch_alter_table("last_positions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_last_positions_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_last_positions_vehicle_id"), ["vehicle_id"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        for statement in PARTITION_FUNCTIONS:
            op.execute(statement)
        # The months around now exist from the start; the worker creates the rest as needed.
        now = datetime.now(UTC)
        for offset in (-1, 0, 1, 2):
            year, month = divmod(now.year * 12 + now.month - 1 + offset, 12)
            start = datetime(year, month + 1, 1, tzinfo=UTC).isoformat()
            op.execute(f"SELECT ctafleet_positions_partition('{start}'::timestamptz)")
        for table in TENANT_TABLES:
            for statement in rls.enable_sql(table):
                op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            for statement in rls.disable_sql(table):
                op.execute(statement)
    op.drop_table("last_positions")
    op.drop_table("positions")  # its partitions go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ctafleet_positions_partition(timestamptz)")
        op.execute("DROP FUNCTION IF EXISTS ctafleet_positions_drop_before(timestamptz)")
    op.drop_table("telemetry_settings")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("allow_id_only")
