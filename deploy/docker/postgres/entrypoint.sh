#!/bin/sh
# First start: initdb with POSTGRES_USER and its password (POSTGRES_PASSWORD or the file named
# by POSTGRES_PASSWORD_FILE), then POSTGRES_DB and the init scripts. Every start: postgres in
# the foreground as PID 1. The official image's contract, as far as compose uses it.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp); printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    postgres --single -D "$PGDATA" -j postgres >/dev/null <<SQL
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
SQL
  fi
  # As the official image: *.sh in /docker-entrypoint-initdb.d run once, against a server
  # that listens only on its socket, with PGHOST/PGUSER/PGDATABASE set for psql.
  if [ -d /docker-entrypoint-initdb.d ] && ls /docker-entrypoint-initdb.d/*.sh >/dev/null 2>&1; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
    for script in /docker-entrypoint-initdb.d/*.sh; do
      PGHOST=/tmp PGUSER=$POSTGRES_USER PGDATABASE=$POSTGRES_DB sh "$script"
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi
exec postgres -D "$PGDATA" -c listen_addresses="${LISTEN_ADDRESSES:-*}" \
  -c unix_socket_directories=/tmp "$@"
