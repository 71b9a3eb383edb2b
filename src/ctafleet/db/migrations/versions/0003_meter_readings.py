"""meter readings: each odometer / engine-hour reading kept with its time and source;
indexes for every sortable list field

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ctafleet.db import rls

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ["meter_readings"]
# (tenant_id, column) for each field a list may be sorted by: keyset pages stay index scans.
SORT_INDEXES = {'vehicles': ['unit_number', 'make', 'model', 'year', 'vehicle_type', 'department', 'fuel_type', 'odometer_m', 'engine_hours_s', 'created_at', 'updated_at'], 'drivers': ['last_name', 'first_name', 'licence_expiry', 'status', 'created_at'], 'assignments': ['starts_at', 'created_at'], 'devices': ['name', 'created_at'], 'users': ['role', 'created_at']}


def upgrade() -> None:
    op.create_table(
        "meter_readings",
        sa.Column("vehicle_id", sa.Uuid(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("odometer_m", sa.BigInteger(), nullable=True),
        sa.Column("engine_hours_s", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("corrects_id", sa.Uuid(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["corrects_id"],
            ["meter_readings.id"],
            name=op.f("fk_meter_readings_corrects_id_meter_readings"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_meter_readings_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vehicle_id"],
            ["vehicles.id"],
            name=op.f("fk_meter_readings_vehicle_id_vehicles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_readings")),
    )
    with op.batch_alter_table("meter_readings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_meter_readings_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(
            "ix_meter_readings_vehicle_time", ["vehicle_id", "read_at"], unique=False
        )
    for table, columns in SORT_INDEXES.items():
        for column in columns:
            op.create_index(f"ix_{table}_tenant_{column}", table, ["tenant_id", column])
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            for statement in rls.enable_sql(table):
                op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            for statement in rls.disable_sql(table):
                op.execute(statement)
    for table, columns in SORT_INDEXES.items():
        for column in columns:
            op.drop_index(f"ix_{table}_tenant_{column}", table_name=table)
    with op.batch_alter_table("meter_readings", schema=None) as batch_op:
        batch_op.drop_index("ix_meter_readings_vehicle_time")
        batch_op.drop_index(batch_op.f("ix_meter_readings_tenant_id"))
    op.drop_table("meter_readings")
