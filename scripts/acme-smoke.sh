#!/usr/bin/env bash
# ACME end to end on one machine, with no network: Debian's pebble (a local ACME CA) issues a
# certificate to certbot over HTTP-01 through the edge nginx (deploy/nginx, rendered by its
# own entrypoint with TLS on, run as the image's UID 10002), certbot renews it, and its deploy
# hook installs the new certificate and reloads nginx. After each step the certificate nginx
# serves is checked against pebble's root, with TLS 1.2 and 1.3, HSTS and the HTTP redirect.
#
# Everything listens on 127.0.0.1 inside a private network namespace (`unshare --net`), so
# nothing can leave the machine.
#
# Usage: sudo scripts/acme-smoke.sh        (root; about 10 s; scripts/install-tls-tools.sh first)
#   ACME_SMOKE_OUT=DIR    keep the evidence there: pebble's root, the chains served after
#                         issuance and after renewal, the HTTPS headers
#   ACME_SMOKE_DOMAIN     the name certified [ctafleet.test]
#   ACME_SMOKE_KEEP=1     keep the working directory (logs, certbot's state) for inspection
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
entrypoint=$(dirname "$here")/deploy/nginx/entrypoint.sh
domain=${ACME_SMOKE_DOMAIN:-ctafleet.test}
edge_uid=10002
say() { printf 'acme-smoke: %s\n' "$*"; }
fail() { printf 'acme-smoke: FAILED: %s\n' "$*" >&2; exit 1; }

if [ "${ACME_SMOKE_NETNS:-}" != 1 ]; then
  [ "$(id -u)" -eq 0 ] || fail "run as root: it needs a private network namespace (unshare --net)"
  for tool in unshare setpriv ip pebble pebble-challtestsrv certbot nginx envsubst openssl curl; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found: run scripts/install-tls-tools.sh"
  done
  exec unshare --net env ACME_SMOKE_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
t0=$SECONDS

D=$(mktemp -d /tmp/ctafleet-acme.XXXXXX)
chmod 755 "$D"
mkdir -p "$D/pebble" "$D/certbot" "$D/logs" "$D/out"
install -d -m 0700 -o "$edge_uid" -g "$edge_uid" "$D/tls"
install -d -m 0755 -o "$edge_uid" -g "$edge_uid" "$D/run"
install -d -m 0755 "$D/acme"
# The edge's standard streams, owned by its user as a container runtime arranges (nginx opens
# /dev/stdout again for its access log).
for f in edge.out edge.err reload.log; do install -m 0644 -o "$edge_uid" /dev/null "$D/logs/$f"; done

pids=()
edge_pid=
cleanup() {
  status=$?
  [ -n "$edge_pid" ] && kill "$edge_pid" 2>/dev/null
  [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  if [ "$status" -ne 0 ]; then
    for log in logs/edge.err logs/reload.log pebble/pebble.log certbot/logs/letsencrypt.log; do
      [ -s "$D/$log" ] && { echo "--- $log (last lines)"; tail -n 15 "$D/$log"; } >&2
    done
  fi
  if [ "${ACME_SMOKE_KEEP:-}" = 1 ]; then say "kept $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT

as_edge() { setpriv --reuid="$edge_uid" --regid="$edge_uid" --clear-groups --inh-caps=-all "$@"; }
edge_env=(
  CTAFLEET_EDGE_TLS=on
  CTAFLEET_EDGE_UPSTREAM=127.0.0.1:8000 # no API needed: /edge/healthz is nginx's own
  CTAFLEET_EDGE_HTTP_LISTEN=127.0.0.1:5002 # pebble's httpPort: where it sends HTTP-01
  CTAFLEET_EDGE_HTTPS_LISTEN=127.0.0.1:8443
  CTAFLEET_EDGE_PUBLIC_HTTPS_PORT=8443
  CTAFLEET_EDGE_TLS_DIR="$D/tls"
  CTAFLEET_EDGE_ACME_ROOT="$D/acme"
  CTAFLEET_EDGE_RUN_DIR="$D/run"
  CTAFLEET_EDGE_WORKERS=1
)

# 1. pebble: its API's own certificate (clients must trust it), a fake DNS answering
#    127.0.0.1 for every name, then the CA. A fresh authorization for every order, so the
#    renewal goes through HTTP-01 again.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$D/pebble/api.key" -out "$D/pebble/api.pem" 2>/dev/null
cat >"$D/pebble/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
 "certificate": "$D/pebble/api.pem", "privateKey": "$D/pebble/api.key",
 "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
 "externalAccountBindingRequired": false}}
JSON
pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" -dns01 127.0.0.1:8053 -http01 "" \
  -https01 "" -tlsalpn01 "" -management 127.0.0.1:8055 >"$D/pebble/challtestsrv.log" 2>&1 &
pids+=($!)
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
  pebble -config "$D/pebble/pebble.json" -dnsserver 127.0.0.1:8053 >"$D/pebble/pebble.log" 2>&1 &
pids+=($!)

# 2. The edge, bootstrapped as on a new host: a self-signed placeholder until the first
#    certificate is issued (nginx needs one to start its HTTPS server).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=placeholder" -keyout "$D/tls/tls.key" -out "$D/tls/tls.crt" 2>/dev/null
chown "$edge_uid:$edge_uid" "$D/tls/tls.key" "$D/tls/tls.crt"
env "${edge_env[@]}" setpriv --reuid="$edge_uid" --regid="$edge_uid" --clear-groups \
  --inh-caps=-all "$entrypoint" run >>"$D/logs/edge.out" 2>>"$D/logs/edge.err" &
edge_pid=$!

wait_until() { # TRIES COMMAND...: retry every 0.1 s
  local tries=$1
  shift
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
wait_until 100 curl -sS -o /dev/null http://127.0.0.1:8055/ || fail "pebble-challtestsrv did not start"
wait_until 100 curl -fsS --cacert "$D/pebble/api.pem" https://127.0.0.1:14000/dir ||
  fail "pebble did not start"
wait_until 100 curl -fsS http://127.0.0.1:5002/edge/healthz || fail "the edge did not start"

# 3. certbot's deploy hook, as on a compose host: install the lineage where the edge reads
#    it (owned by the edge's user), then `entrypoint.sh reload` as that user (on a host:
#    `podman exec <edge> .../entrypoint.sh reload`). Its output goes to a log the edge user
#    may open; certbot gets it only on failure.
cat >"$D/deploy-hook.sh" <<HOOK
#!/bin/sh
set -eu
install -m 0644 -o $edge_uid -g $edge_uid "\$RENEWED_LINEAGE/fullchain.pem" "$D/tls/tls.crt.new"
install -m 0600 -o $edge_uid -g $edge_uid "\$RENEWED_LINEAGE/privkey.pem" "$D/tls/tls.key.new"
mv "$D/tls/tls.key.new" "$D/tls/tls.key"
mv "$D/tls/tls.crt.new" "$D/tls/tls.crt"
if ! env ${edge_env[*]} setpriv --reuid=$edge_uid --regid=$edge_uid --clear-groups \\
    --inh-caps=-all "$entrypoint" reload >>"$D/logs/reload.log" 2>&1; then
  cat "$D/logs/reload.log" >&2
  exit 1
fi
HOOK
chmod 0755 "$D/deploy-hook.sh"
certbot=(certbot --non-interactive --config-dir "$D/certbot/config" --work-dir "$D/certbot/work"
  --logs-dir "$D/certbot/logs")
export REQUESTS_CA_BUNDLE="$D/pebble/api.pem"

served_chain() { # FILE: the chain nginx serves for the domain, as PEM
  openssl s_client -connect 127.0.0.1:8443 -servername "$domain" -showcerts </dev/null 2>/dev/null |
    sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' >"$1"
}
serial() { openssl x509 -noout -serial -in "$1" | cut -d= -f2; }
served_serial() { served_chain "$D/probe.pem" && serial "$D/probe.pem"; }
# A function, so wait_until asks nginx again on every try (arguments are expanded only once).
serving() { [ "$(served_serial)" = "$1" ]; }
lineage_serial() { serial "$D/certbot/config/live/$domain/cert.pem"; }

check_edge() { # LABEL: what a client of the edge gets, against pebble's root
  local label=$1 version out
  for version in -tls1_2 -tls1_3; do
    out=$(openssl s_client -connect 127.0.0.1:8443 -servername "$domain" "$version" \
      -CAfile "$D/out/pebble-root.pem" -verify_return_error -verify_hostname "$domain" \
      </dev/null 2>&1) || fail "$label: $version handshake or verification failed: $out"
    grep -q 'Verify return code: 0 (ok)' <<<"$out" || fail "$label: $version not verified"
  done
  for version in -tls1 -tls1_1; do
    out=$(openssl s_client -connect 127.0.0.1:8443 -servername "$domain" "$version" \
      -cipher 'DEFAULT@SECLEVEL=0' </dev/null 2>&1) && fail "$label: $version accepted"
    grep -q 'alert protocol version' <<<"$out" || fail "$label: $version not refused by the server"
  done
  curl -fsS --cacert "$D/out/pebble-root.pem" --resolve "$domain:8443:127.0.0.1" \
    -D "$D/out/headers-$label.txt" -o /dev/null "https://$domain:8443/edge/healthz" ||
    fail "$label: HTTPS request failed"
  grep -qi '^strict-transport-security: max-age=63072000; includeSubDomains' \
    "$D/out/headers-$label.txt" || fail "$label: no HSTS header"
  served_chain "$D/out/served-$label.pem"
  [ "$(serial "$D/out/served-$label.pem")" = "$(lineage_serial)" ] ||
    fail "$label: nginx serves $(serial "$D/out/served-$label.pem"), certbot has $(lineage_serial)"
}

# 4. Issue through the edge's webroot; the deploy hook puts it in place.
"${certbot[@]}" certonly --agree-tos --register-unsafely-without-email \
  --server https://127.0.0.1:14000/dir --webroot -w "$D/acme" -d "$domain" --key-type ecdsa \
  --deploy-hook "$D/deploy-hook.sh" >"$D/logs/certbot-issue.log" 2>&1 ||
  fail "certbot certonly: $(tail -n 5 "$D/logs/certbot-issue.log")"
curl -fsS --cacert "$D/pebble/api.pem" https://127.0.0.1:15000/roots/0 >"$D/out/pebble-root.pem"
wait_until 100 serving "$(lineage_serial)" || fail "the issued certificate is not served"
issued=$(lineage_serial)
check_edge issued
validations() { grep -c '"path":"/.well-known/acme-challenge/[^"]*".*"status":200' "$D/logs/edge.out" || true; }
at_issue=$(validations)
[ "$at_issue" -ge 1 ] || fail "pebble's HTTP-01 validation did not come through the edge"
say "issued $domain, serial $issued, served by the edge"

# 5. Force a renewal (without --no-random-sleep-on-renew certbot sleeps up to 8 minutes).
"${certbot[@]}" renew --force-renewal --no-random-sleep-on-renew \
  >"$D/logs/certbot-renew.log" 2>&1 || fail "certbot renew: $(tail -n 5 "$D/logs/certbot-renew.log")"
renewed=$(lineage_serial)
[ "$renewed" != "$issued" ] || fail "certbot renew did not produce a new certificate"
wait_until 100 serving "$renewed" || fail "the renewal was not deployed (no reload?)"
check_edge renewed

# 6. The HTTP port: the renewal's challenge came through it too; the rest is redirected.
[ "$(validations)" -gt "$at_issue" ] || fail "the renewal's HTTP-01 validation did not come through the edge"
location=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' -H "Host: $domain" http://127.0.0.1:5002/fleet?x=1)
[ "$location" = "301 https://$domain:8443/fleet?x=1" ] || fail "HTTP redirect: $location"

if [ -n "${ACME_SMOKE_OUT:-}" ]; then
  mkdir -p "$ACME_SMOKE_OUT"
  cp "$D/out/"* "$ACME_SMOKE_OUT/"
fi
say "OK in $((SECONDS - t0)) s: issued $issued, renewed $renewed and reloaded;" \
  "both HTTP-01 validations through the edge; TLS 1.2/1.3 verified against pebble's" \
  "root, TLS 1.0/1.1 refused, HSTS present, HTTP redirected"
