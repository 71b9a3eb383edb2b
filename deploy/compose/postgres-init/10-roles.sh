#!/bin/sh
# Runs once, at the database's first start: the owner of the schema (migrations) and the role
# the application connects as, neither a superuser, so row-level security binds both.
set -eu
owner=$(cat /run/secrets/db_owner_password)
app=$(cat /run/secrets/db_app_password)
psql -v ON_ERROR_STOP=1 -q -v owner="$owner" -v app="$app" <<'SQL'
CREATE ROLE ctafleet_owner LOGIN PASSWORD :'owner';
CREATE ROLE ctafleet_app LOGIN PASSWORD :'app' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
ALTER DATABASE ctafleet OWNER TO ctafleet_owner;
ALTER SCHEMA public OWNER TO ctafleet_owner;
SQL
