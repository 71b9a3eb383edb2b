#!/usr/bin/env bash
# Prepares a compose host: the secret files and a first TLS certificate, each made only when
# missing (so a re-run never rotates a password under a running stack).
#
#   PUBLIC_HOST=fleet.example.org deploy/compose/init.sh        (root)
#
# The directories are compose.yaml's own variables, with the same defaults:
# CTAFLEET_SECRETS_DIR (deploy/compose/secrets), CTAFLEET_TLS_DIR (deploy/compose/tls) and
# CTAFLEET_ACME_DIR (deploy/compose/acme, the HTTP-01 webroot the edge serves).
#
# Each secret file belongs to the one container user that reads it (the app 10001, PostgreSQL
# 999, the edge 10002) with mode 0400: compose mounts file secrets as they are on the host.
# The certificate is self-signed for PUBLIC_HOST (default localhost, and 127.0.0.1): replace it
# with a real one (docs/tls.md: certbot with the edge's webroot) before users arrive.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
secrets=${CTAFLEET_SECRETS_DIR:-$here/secrets}
tls=${CTAFLEET_TLS_DIR:-$here/tls}
acme=${CTAFLEET_ACME_DIR:-$here/acme}
host=${PUBLIC_HOST:-localhost}
umask 077
mkdir -p "$secrets" "$tls" "$acme"
chmod 0755 "$acme"
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(36))'; }
make() { # make NAME UID CONTENT-COMMAND...: the file, once, owned by UID, read-only
  local name=$1 uid=$2; shift 2
  if [ ! -s "$secrets/$name" ]; then
    "$@" > "$secrets/$name.tmp" && mv "$secrets/$name.tmp" "$secrets/$name"
    echo "made $secrets/$name"
  fi
  chown "$uid:$uid" "$secrets/$name" && chmod 0400 "$secrets/$name"
}
make postgres_password 999 random
make db_owner_password 999 random
make db_app_password 999 random
make secret_key 10001 random
# The application's URLs carry the same passwords as the roles the init script creates.
owner=$(cat "$secrets/db_owner_password") app=$(cat "$secrets/db_app_password")
make database_admin_url 10001 echo "postgresql://ctafleet_owner:$owner@postgres:5432/ctafleet"
make database_url 10001 echo "postgresql://ctafleet_app:$app@postgres:5432/ctafleet"
if [ ! -s "$tls/tls.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=$host" -addext "subjectAltName=DNS:$host,IP:127.0.0.1" \
    -keyout "$tls/tls.key" -out "$tls/tls.crt" 2>/dev/null
  echo "made a self-signed certificate for $host in $tls (replace it: docs/tls.md)"
fi
chown 10002:10002 "$tls" "$tls/tls.crt" "$tls/tls.key"
chmod 0400 "$tls/tls.key"; chmod 0444 "$tls/tls.crt"; chmod 0755 "$tls"
chmod 0711 "$secrets"
