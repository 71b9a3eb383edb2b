"""Row-level security on PostgreSQL: the second wall behind the service layer's tenant filter.

Each transaction sets `ctafleet.tenant_id` (or `ctafleet.scope = 'system'` for the few
deliberately cross-tenant reads: login, token refresh, device authentication). Tables are
FORCE ROW LEVEL SECURITY so even their owner is filtered; superusers still bypass RLS, so the
application must connect as a plain role (see `database.app_role`).
"""

from __future__ import annotations

POLICY = "tenant_isolation"


def predicate(column: str) -> str:
    return (
        "current_setting('ctafleet.scope', true) = 'system' OR "
        f"{column} = NULLIF(current_setting('ctafleet.tenant_id', true), '')::uuid"
    )


def enable_sql(table: str, column: str = "tenant_id") -> list[str]:
    predicate_sql = predicate(column)
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS {POLICY} ON {table}",
        f"CREATE POLICY {POLICY} ON {table} USING ({predicate_sql}) WITH CHECK ({predicate_sql})",
    ]


def disable_sql(table: str) -> list[str]:
    return [
        f"DROP POLICY IF EXISTS {POLICY} ON {table}",
        f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
    ]


def grant_sql(role: str, append_only: tuple[str, ...] = ("audit_events",)) -> list[str]:
    """Privileges of the application role: DML everywhere, insert/select only on the audit log."""
    statements = [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        f"REVOKE ALL ON alembic_version FROM {role}",
        f"GRANT SELECT ON alembic_version TO {role}",
    ]
    for table in append_only:
        statements.append(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {role}")
    return statements
