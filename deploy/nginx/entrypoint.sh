#!/bin/sh
# Entrypoint of the CTAFleet edge (nginx): renders the templates next to this script from the
# environment, checks the result with `nginx -t`, then runs nginx in the foreground.
#
#   entrypoint.sh [run]    render, check, exec nginx (the container's PID 1)
#   entrypoint.sh render   render and check only
#   entrypoint.sh reload   check the rendered configuration and the certificate it names, then
#                          reload the running nginx (the certificate deploy hook)
#
# Environment [default]; docs/tls.md describes the modes:
#   CTAFLEET_EDGE_TLS               on | off [on]: terminate TLS here (compose), or not
#                                   (Kubernetes, where the ingress controller does)
#   CTAFLEET_EDGE_UPSTREAM          HOST:PORT of the API [api:8000]
#   CTAFLEET_EDGE_UPSTREAM_RESOLVE  start | dynamic [start]: resolve the upstream's name once
#                                   (a Kubernetes Service: one stable address, kept-alive
#                                   connections), or every second with CTAFLEET_EDGE_RESOLVER or
#                                   the container's DNS server (compose: a restarted api
#                                   container comes back with a new address)
#   CTAFLEET_EDGE_HTTP_LISTEN       [ADDR:]PORT of plain HTTP [8080]
#   CTAFLEET_EDGE_HTTPS_LISTEN      [ADDR:]PORT of HTTPS [8443]
#   CTAFLEET_EDGE_PUBLIC_HTTPS_PORT the port clients reach HTTPS on, for the redirect [443]
#   CTAFLEET_EDGE_TLS_DIR           directory of tls.crt (full chain) and tls.key
#                                   [/etc/ctafleet/tls]
#   CTAFLEET_EDGE_ACME_ROOT         ACME HTTP-01 webroot [/var/www/acme]
#   CTAFLEET_EDGE_WORKERS           nginx worker processes: auto (one per CPU of the machine)
#                                   or a number, for a container with a CPU limit [auto]
#   CTAFLEET_HTTP__MAX_BODY_BYTES   largest request body: the API's own setting [1048576]
#   CTAFLEET_TELEMETRY__BATCH_MAX_BODY_BYTES
#                                   largest body of POST /api/v1/telemetry, the API's own
#                                   setting [8388608]
#   CTAFLEET_EDGE_OCSP_STAPLING     on | off [off]; on needs CTAFLEET_EDGE_RESOLVER
#   CTAFLEET_EDGE_RESOLVER          DNS servers nginx asks (ADDR ...): for the OCSP responder,
#                                   and for the upstream in dynamic mode
#   CTAFLEET_EDGE_OCSP_TRUSTED_CA   CA bundle that verifies OCSP answers
#                                   [/etc/ssl/certs/ca-certificates.crt]
#   CTAFLEET_EDGE_RUN_DIR           rendered configuration and pid [/tmp/nginx]
#   CTAFLEET_EDGE_TEMP_DIR          request bodies and responses buffered to disk
#                                   [$CTAFLEET_EDGE_RUN_DIR/tmp; /var/cache/nginx is the other
#                                   writable directory of the image]
#   CTAFLEET_EDGE_TEMPLATE_DIR      [the templates/ directory next to this script]
#   CTAFLEET_EDGE_NGINX             the nginx binary [nginx]
set -eu

die() {
    printf 'ctafleet-edge: %s\n' "$*" >&2
    exit 2
}

NL='
'
# matches VALUE ERE: the whole value is one line matching the extended regular expression.
matches() {
    case $1 in *"$NL"*) return 1 ;; esac
    printf '%s' "$1" | grep -Eqx -- "$2"
}

# Labels may hold `_` (compose service names do).
NAME_RE='[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*'
IPV4_RE='([0-9]{1,3}\.){3}[0-9]{1,3}'
IPV6_RE='\[[0-9A-Fa-f:.]+\]'
PORT_RE='[1-9][0-9]{0,4}'
# Paths go into the configuration verbatim: no spaces, quotes, `;`, braces or `$`.
PATH_RE='/[A-Za-z0-9._/+@-]*'

is_port() {
    matches "$1" "$PORT_RE" && [ "$1" -le 65535 ]
}

check_upstream() {
    value=$CTAFLEET_EDGE_UPSTREAM
    host=${value%:*}
    port=${value##*:}
    if [ "$host" = "$value" ] || ! is_port "$port" ||
        ! { matches "$host" "$NAME_RE" || matches "$host" "$IPV6_RE"; }; then
        die "CTAFLEET_EDGE_UPSTREAM='$value' is not HOST:PORT of the API" \
            "(a name or address and a port 1-65535, e.g. api:8000 or [fd00::5]:8000)"
    fi
}

check_listen() { # NAME VALUE
    is_port "$2" && return 0
    addr=${2%:*}
    port=${2##*:}
    if [ "$addr" != "$2" ] && is_port "$port" &&
        { matches "$addr" "$IPV4_RE" || matches "$addr" "$IPV6_RE"; }; then
        return 0
    fi
    die "$1='$2' is not [ADDR:]PORT (e.g. 8080, 127.0.0.1:8080 or [::]:8080)"
}

check_path() { # NAME VALUE
    matches "$2" "$PATH_RE" ||
        die "$1='$2' is not an absolute path of letters, digits and ._/+@-"
}

check_on_off() { # NAME VALUE
    case $2 in
    on | off) ;;
    *) die "$1='$2' must be on or off" ;;
    esac
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
: "${CTAFLEET_EDGE_TLS:=on}"
: "${CTAFLEET_EDGE_UPSTREAM:=api:8000}"
: "${CTAFLEET_EDGE_HTTP_LISTEN:=8080}"
: "${CTAFLEET_EDGE_HTTPS_LISTEN:=8443}"
: "${CTAFLEET_EDGE_PUBLIC_HTTPS_PORT:=443}"
: "${CTAFLEET_EDGE_TLS_DIR:=/etc/ctafleet/tls}"
: "${CTAFLEET_EDGE_ACME_ROOT:=/var/www/acme}"
: "${CTAFLEET_EDGE_WORKERS:=auto}"
: "${CTAFLEET_HTTP__MAX_BODY_BYTES:=1048576}"
: "${CTAFLEET_TELEMETRY__BATCH_MAX_BODY_BYTES:=8388608}"
: "${CTAFLEET_EDGE_OCSP_STAPLING:=off}"
: "${CTAFLEET_EDGE_RESOLVER:=}"
: "${CTAFLEET_EDGE_UPSTREAM_RESOLVE:=start}"
: "${CTAFLEET_EDGE_OCSP_TRUSTED_CA:=/etc/ssl/certs/ca-certificates.crt}"
: "${CTAFLEET_EDGE_RUN_DIR:=/tmp/nginx}"
: "${CTAFLEET_EDGE_TEMP_DIR:=$CTAFLEET_EDGE_RUN_DIR/tmp}"
: "${CTAFLEET_EDGE_TEMPLATE_DIR:=$here/templates}"
: "${CTAFLEET_EDGE_NGINX:=nginx}"

RUN=$CTAFLEET_EDGE_RUN_DIR
NGINX=$CTAFLEET_EDGE_NGINX

nginx_test() {
    "$NGINX" -t -q -c "$RUN/nginx.conf" ||
        die "nginx -t refused the configuration rendered in $RUN (its message is above)"
}

validate() {
    check_on_off CTAFLEET_EDGE_TLS "$CTAFLEET_EDGE_TLS"
    check_on_off CTAFLEET_EDGE_OCSP_STAPLING "$CTAFLEET_EDGE_OCSP_STAPLING"
    check_upstream
    check_listen CTAFLEET_EDGE_HTTP_LISTEN "$CTAFLEET_EDGE_HTTP_LISTEN"
    check_path CTAFLEET_EDGE_RUN_DIR "$RUN"
    check_path CTAFLEET_EDGE_TEMP_DIR "$CTAFLEET_EDGE_TEMP_DIR"
    check_path CTAFLEET_EDGE_TEMPLATE_DIR "$CTAFLEET_EDGE_TEMPLATE_DIR"
    [ "$CTAFLEET_EDGE_WORKERS" = auto ] || matches "$CTAFLEET_EDGE_WORKERS" '[1-9][0-9]?' ||
        die "CTAFLEET_EDGE_WORKERS='$CTAFLEET_EDGE_WORKERS' must be auto or a number from 1 to 99"
    for name in CTAFLEET_HTTP__MAX_BODY_BYTES CTAFLEET_TELEMETRY__BATCH_MAX_BODY_BYTES; do
        eval "size=\$$name"
        if ! matches "$size" '[1-9][0-9]{3,8}' || [ "$size" -lt 1024 ] || [ "$size" -gt 104857600 ]; then
            die "$name='$size' must be bytes from 1024 to 104857600, as the API's setting"
        fi
    done
    [ -f "$CTAFLEET_EDGE_TEMPLATE_DIR/nginx.conf" ] ||
        die "no templates in CTAFLEET_EDGE_TEMPLATE_DIR=$CTAFLEET_EDGE_TEMPLATE_DIR"
    command -v envsubst >/dev/null 2>&1 || die "envsubst not found (Debian: gettext-base)"

    CTAFLEET_EDGE_REDIRECT_PORT=
    if [ "$CTAFLEET_EDGE_TLS" = on ]; then
        check_listen CTAFLEET_EDGE_HTTPS_LISTEN "$CTAFLEET_EDGE_HTTPS_LISTEN"
        is_port "$CTAFLEET_EDGE_PUBLIC_HTTPS_PORT" ||
            die "CTAFLEET_EDGE_PUBLIC_HTTPS_PORT='$CTAFLEET_EDGE_PUBLIC_HTTPS_PORT' is not a port"
        [ "$CTAFLEET_EDGE_PUBLIC_HTTPS_PORT" = 443 ] ||
            CTAFLEET_EDGE_REDIRECT_PORT=":$CTAFLEET_EDGE_PUBLIC_HTTPS_PORT"
        check_path CTAFLEET_EDGE_TLS_DIR "$CTAFLEET_EDGE_TLS_DIR"
        check_path CTAFLEET_EDGE_ACME_ROOT "$CTAFLEET_EDGE_ACME_ROOT"
        for file in tls.crt tls.key; do
            [ -r "$CTAFLEET_EDGE_TLS_DIR/$file" ] ||
                die "CTAFLEET_EDGE_TLS=on but $CTAFLEET_EDGE_TLS_DIR/$file is missing or" \
                    "unreadable by uid $(id -u): mount the certificate there (docs/tls.md)," \
                    "or set CTAFLEET_EDGE_TLS=off where an ingress terminates TLS"
        done
        [ -d "$CTAFLEET_EDGE_ACME_ROOT" ] ||
            printf 'ctafleet-edge: warning: no ACME webroot at %s: HTTP-01 challenges get 404\n' \
                "$CTAFLEET_EDGE_ACME_ROOT" >&2
    fi
    case $CTAFLEET_EDGE_UPSTREAM_RESOLVE in
    start) ;;
    dynamic)
        if [ -z "$CTAFLEET_EDGE_RESOLVER" ]; then
            CTAFLEET_EDGE_RESOLVER=$(awk '$1 == "nameserver" && $2 ~ /^[0-9.]+$/ { print $2; exit }' \
                /etc/resolv.conf 2>/dev/null) || true
            [ -n "$CTAFLEET_EDGE_RESOLVER" ] ||
                die "CTAFLEET_EDGE_UPSTREAM_RESOLVE=dynamic needs CTAFLEET_EDGE_RESOLVER: no IPv4" \
                    "nameserver in /etc/resolv.conf"
        fi
        ;;
    *) die "CTAFLEET_EDGE_UPSTREAM_RESOLVE='$CTAFLEET_EDGE_UPSTREAM_RESOLVE' must be start or dynamic" ;;
    esac
    if [ -n "$CTAFLEET_EDGE_RESOLVER" ]; then
        for server in $CTAFLEET_EDGE_RESOLVER; do
            matches "$server" "($IPV4_RE|$IPV6_RE)(:$PORT_RE)?" ||
                die "CTAFLEET_EDGE_RESOLVER: '$server' is not an IP address[:port]"
        done
    fi
    if [ "$CTAFLEET_EDGE_OCSP_STAPLING" = on ]; then
        [ "$CTAFLEET_EDGE_TLS" = on ] ||
            die "CTAFLEET_EDGE_OCSP_STAPLING=on needs CTAFLEET_EDGE_TLS=on"
        [ -n "$CTAFLEET_EDGE_RESOLVER" ] ||
            die "CTAFLEET_EDGE_OCSP_STAPLING=on needs CTAFLEET_EDGE_RESOLVER (DNS servers nginx" \
                "asks for the CA's OCSP responder, e.g. 10.96.0.10)"
        check_path CTAFLEET_EDGE_OCSP_TRUSTED_CA "$CTAFLEET_EDGE_OCSP_TRUSTED_CA"
        [ -r "$CTAFLEET_EDGE_OCSP_TRUSTED_CA" ] ||
            die "CTAFLEET_EDGE_OCSP_TRUSTED_CA=$CTAFLEET_EDGE_OCSP_TRUSTED_CA is not readable"
    fi
    export CTAFLEET_EDGE_UPSTREAM CTAFLEET_EDGE_UPSTREAM_RESOLVE CTAFLEET_EDGE_HTTP_LISTEN CTAFLEET_EDGE_HTTPS_LISTEN \
        CTAFLEET_EDGE_REDIRECT_PORT CTAFLEET_EDGE_TLS_DIR CTAFLEET_EDGE_ACME_ROOT \
        CTAFLEET_HTTP__MAX_BODY_BYTES CTAFLEET_TELEMETRY__BATCH_MAX_BODY_BYTES \
        CTAFLEET_EDGE_RESOLVER CTAFLEET_EDGE_OCSP_TRUSTED_CA CTAFLEET_EDGE_RUN_DIR \
        CTAFLEET_EDGE_TEMP_DIR CTAFLEET_EDGE_WORKERS
}

# Only these are substituted; nginx's own $variables are left alone.
VARS='${CTAFLEET_EDGE_UPSTREAM} ${CTAFLEET_EDGE_HTTP_LISTEN} ${CTAFLEET_EDGE_HTTPS_LISTEN}
${CTAFLEET_EDGE_REDIRECT_PORT} ${CTAFLEET_EDGE_TLS_DIR} ${CTAFLEET_EDGE_ACME_ROOT}
${CTAFLEET_HTTP__MAX_BODY_BYTES} ${CTAFLEET_TELEMETRY__BATCH_MAX_BODY_BYTES}
${CTAFLEET_EDGE_RESOLVER} ${CTAFLEET_EDGE_OCSP_TRUSTED_CA}
${CTAFLEET_EDGE_RUN_DIR} ${CTAFLEET_EDGE_TEMP_DIR} ${CTAFLEET_EDGE_WORKERS}'

subst() { # TEMPLATE OUTPUT
    envsubst "$VARS" <"$CTAFLEET_EDGE_TEMPLATE_DIR/$1" >"$RUN/$2"
}

render() {
    mkdir -p "$RUN" 2>/dev/null && [ -w "$RUN" ] ||
        die "cannot write CTAFLEET_EDGE_RUN_DIR=$RUN as uid $(id -u)"
    rm -rf "$RUN/conf" "$RUN/servers"
    mkdir -p "$RUN/conf" "$RUN/servers"
    mkdir -p "$CTAFLEET_EDGE_TEMP_DIR" 2>/dev/null && [ -w "$CTAFLEET_EDGE_TEMP_DIR" ] ||
        die "cannot write CTAFLEET_EDGE_TEMP_DIR=$CTAFLEET_EDGE_TEMP_DIR as uid $(id -u)"
    subst nginx.conf nginx.conf
    for path in "$CTAFLEET_EDGE_TEMPLATE_DIR"/conf/*.conf; do
        subst "conf/${path##*/}" "conf/${path##*/}"
    done
    if [ "$CTAFLEET_EDGE_TLS" = on ]; then
        subst servers/acme-redirect.conf servers/acme-redirect.conf
        subst servers/https.conf servers/https.conf
    else
        subst servers/plain.conf servers/plain.conf
    fi
    if [ "$CTAFLEET_EDGE_UPSTREAM_RESOLVE" = dynamic ]; then
        subst optional/upstream-dynamic.conf conf/upstream.conf
    else
        subst optional/upstream-start.conf conf/upstream.conf
    fi
    if [ "$CTAFLEET_EDGE_OCSP_STAPLING" = on ]; then
        subst optional/ocsp-stapling.conf conf/ocsp-stapling.conf
    else
        printf '# OCSP stapling off (CTAFLEET_EDGE_OCSP_STAPLING=off)\n' >"$RUN/conf/ocsp-stapling.conf"
    fi
}

command=${1:-run}
case $command in
run)
    validate
    render
    nginx_test
    exec "$NGINX" -c "$RUN/nginx.conf"
    ;;
render)
    validate
    render
    nginx_test
    printf 'ctafleet-edge: configuration rendered in %s (TLS %s)\n' "$RUN" "$CTAFLEET_EDGE_TLS"
    ;;
reload)
    check_path CTAFLEET_EDGE_RUN_DIR "$RUN"
    [ -f "$RUN/nginx.conf" ] || die "nothing rendered in $RUN: the edge is not running here"
    # A renewed certificate that does not load must not reach the running server.
    nginx_test
    out=$("$NGINX" -s reload -c "$RUN/nginx.conf" 2>&1) || {
        printf '%s\n' "$out" >&2
        die "nginx -s reload failed"
    }
    ;;
*)
    die "unknown command '$command' (run, render or reload)"
    ;;
esac
