"""telemetry derived data: each device's derive state, trips, stops, events; geofences

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ctafleet.db import rls

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ["device_states", "trips", "stops", "telemetry_events", "geofences"]
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)


def _tenant(table: str) -> list[Any]:
    return [
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f(f"fk_{table}_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
    ]


def _tenant_index(table: str) -> None:
    op.create_index(op.f(f"ix_{table}_tenant_id"), table, ["tenant_id"], unique=False)


def upgrade() -> None:
    op.create_table(
        "device_states",
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("state", JSON, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        *_tenant("device_states"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_states_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_states")),
    )
    _tenant_index("device_states")

    op.create_table(
        "trips",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("vehicle_id", sa.Uuid(), nullable=True),
        sa.Column("start_time", TS, nullable=False),
        sa.Column("end_time", TS, nullable=False),
        sa.Column("start_lat", sa.Float(precision=53), nullable=False),
        sa.Column("start_lon", sa.Float(precision=53), nullable=False),
        sa.Column("end_lat", sa.Float(precision=53), nullable=False),
        sa.Column("end_lon", sa.Float(precision=53), nullable=False),
        sa.Column("distance_m", sa.Float(precision=53), nullable=False),
        sa.Column("duration_s", sa.Float(precision=53), nullable=False),
        sa.Column("driving_s", sa.Float(precision=53), nullable=False),
        sa.Column("idle_s", sa.Float(precision=53), nullable=False),
        sa.Column("max_speed_mps", sa.Float(), nullable=False),
        sa.Column("avg_speed_mps", sa.Float(), nullable=False),
        sa.Column("start_odometer_m", sa.Float(precision=53), nullable=False),
        sa.Column("end_odometer_m", sa.Float(precision=53), nullable=False),
        sa.Column("state_after", JSON, nullable=False),
        sa.Column("checkpoint_at", TS, nullable=False),
        *_tenant("trips"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trips")),
        sa.UniqueConstraint("device_id", "start_time", name=op.f("uq_trips_device_id_start_time")),
    )
    _tenant_index("trips")
    op.create_index("ix_trips_vehicle_id_start_time", "trips", ["vehicle_id", "start_time"])
    op.create_index("ix_trips_device_id_checkpoint_at", "trips", ["device_id", "checkpoint_at"])

    op.create_table(
        "stops",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("vehicle_id", sa.Uuid(), nullable=True),
        sa.Column("start_time", TS, nullable=False),
        sa.Column("end_time", TS, nullable=False),
        sa.Column("lat", sa.Float(precision=53), nullable=False),
        sa.Column("lon", sa.Float(precision=53), nullable=False),
        sa.Column("duration_s", sa.Float(precision=53), nullable=False),
        *_tenant("stops"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stops")),
        sa.UniqueConstraint("device_id", "start_time", name=op.f("uq_stops_device_id_start_time")),
    )
    _tenant_index("stops")
    op.create_index("ix_stops_vehicle_id_start_time", "stops", ["vehicle_id", "start_time"])

    op.create_table(
        "telemetry_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("vehicle_id", sa.Uuid(), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("time", TS, nullable=False),
        sa.Column("lat", sa.Float(precision=53), nullable=True),
        sa.Column("lon", sa.Float(precision=53), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("duration_s", sa.Float(precision=53), nullable=True),
        sa.Column("limit", sa.Float(), nullable=True),
        sa.Column("geofence_id", sa.Uuid(), nullable=True),
        sa.Column("key", sa.String(length=200), nullable=False),
        *_tenant("telemetry_events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_events")),
        sa.UniqueConstraint("device_id", "key", name=op.f("uq_telemetry_events_device_id_key")),
    )
    _tenant_index("telemetry_events")
    op.create_index(
        "ix_telemetry_events_tenant_id_time", "telemetry_events", ["tenant_id", "time"]
    )
    op.create_index(
        "ix_telemetry_events_vehicle_id_time", "telemetry_events", ["vehicle_id", "time"]
    )

    op.create_table(
        "geofences",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("geometry", JSON, nullable=False),
        sa.Column("radius_m", sa.Float(), nullable=True),
        sa.Column("speed_limit_mps", sa.Float(), nullable=True),
        sa.Column("schedule", JSON, nullable=True),
        sa.Column("dwell_s", sa.Float(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *_tenant("geofences"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_geofences")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_geofences_tenant_id_name")),
    )
    _tenant_index("geofences")
    op.create_index("ix_geofences_tenant_updated_at", "geofences", ["tenant_id", "updated_at"])
    op.create_index("ix_geofences_tenant_created_at", "geofences", ["tenant_id", "created_at"])

    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            for statement in rls.enable_sql(table):
                op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            for statement in rls.disable_sql(table):
                op.execute(statement)
    for table in reversed(TENANT_TABLES):
        op.drop_table(table)
