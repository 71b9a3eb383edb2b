"""Alembic environment: always handed a live connection by ctafleet.db.migrate."""

from alembic import context

from ctafleet.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded: use `ctafleet db upgrade`
    raise RuntimeError("run migrations with `ctafleet db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
