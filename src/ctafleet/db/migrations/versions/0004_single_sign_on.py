"""single sign-on: each tenant's OpenID provider, users' provider identities, sign-ins on their
way through the provider; row-level security on all three

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from ctafleet.db import rls

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ["sso_configs", "sso_identities", "sso_login_states"]


def _tenant_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id"], ["tenants.id"], name=op.f(f"fk_{table}_tenant_id_tenants"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "sso_configs",
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("client_secret", sa.String(length=500), nullable=True),
        sa.Column("entra_tenant_id", sa.String(length=64), nullable=True),
        sa.Column("allow_signup", sa.Boolean(), nullable=False),
        sa.Column("default_role", sa.String(length=32), nullable=False),
        sa.Column("role_mappings", sa.JSON(), nullable=False),
        sa.Column("sync_roles", sa.Boolean(), nullable=False),
        sa.Column("require_sso", sa.Boolean(), nullable=False),
        sa.Column("break_glass_user_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["break_glass_user_id"],
            ["users.id"],
            name=op.f("fk_sso_configs_break_glass_user_id_users"),
            ondelete="SET NULL",
        ),
        _tenant_fk("sso_configs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sso_configs")),
        sa.UniqueConstraint("tenant_id", name=op.f("uq_sso_configs_tenant_id")),
    )
    with op.batch_alter_table("sso_configs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sso_configs_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "sso_identities",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        _tenant_fk("sso_identities"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_sso_identities_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sso_identities")),
        sa.UniqueConstraint(
            "tenant_id", "issuer", "subject", name=op.f("uq_sso_identities_tenant_id_issuer_subject")
        ),
    )
    with op.batch_alter_table("sso_identities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sso_identities_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_sso_identities_user_id"), ["user_id"], unique=False)

    op.create_table(
        "sso_login_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("browser_hash", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("link_user_id", sa.Uuid(), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_user_id"],
            ["users.id"],
            name=op.f("fk_sso_login_states_link_user_id_users"),
            ondelete="CASCADE",
        ),
        _tenant_fk("sso_login_states"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sso_login_states")),
        sa.UniqueConstraint("state_hash", name=op.f("uq_sso_login_states_state_hash")),
    )
    with op.batch_alter_table("sso_login_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sso_login_states_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sso_login_states_tenant_id"), ["tenant_id"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            for statement in rls.enable_sql(table):
                op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TENANT_TABLES:
            for statement in rls.disable_sql(table):
                op.execute(statement)
    with op.batch_alter_table("sso_login_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sso_login_states_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_sso_login_states_expires_at"))
    op.drop_table("sso_login_states")
    with op.batch_alter_table("sso_identities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sso_identities_user_id"))
        batch_op.drop_index(batch_op.f("ix_sso_identities_tenant_id"))
    op.drop_table("sso_identities")
    with op.batch_alter_table("sso_configs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sso_configs_tenant_id"))
    op.drop_table("sso_configs")
