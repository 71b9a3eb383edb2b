#!/opt/venv/bin/python
"""`healthcheck [URL]`: exit 0 when URL answers 2xx within 2 s, else print why and exit 1.

The image has no curl. Used by HEALTHCHECK and by exec probes; keep its argument free of
spaces (podman kube play re-splits exec arguments on them)."""

import sys
import urllib.request

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/healthz"
try:
    with urllib.request.urlopen(URL, timeout=2) as response:  # noqa: S310 - a fixed local URL
        sys.exit(0 if response.status < 300 else 1)
except Exception as exc:  # any failure means unhealthy
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
