#!/bin/bash
# `healthcheck [PORT]`: exit 0 when nginx answers GET /edge/healthz with 200 on 127.0.0.1:PORT
# (default 8080). The edge image has neither curl nor Python: bash's /dev/tcp does the request.
set -u
port=${1:-8080}
exec 3<>"/dev/tcp/127.0.0.1/$port" || { echo "unhealthy: nothing listens on $port" >&2; exit 1; }
printf 'GET /edge/healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r -t 2 status <&3 || { echo "unhealthy: no answer on $port" >&2; exit 1; }
case $status in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "unhealthy: ${status%$'\r'}" >&2; exit 1 ;;
esac
