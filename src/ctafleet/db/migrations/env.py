"""Alembic environment: always handed a live connection by ctafleet.db.migrate.

Migrations are written by hand (or drafted with autogenerate against
`ctafleet.domains.metadata()` and reviewed); running them needs no models, so this environment
imports none.
"""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded: use `ctafleet db upgrade`
    raise RuntimeError("run migrations with `ctafleet db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
