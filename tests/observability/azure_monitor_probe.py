"""Run inside an empty network namespace by test_tracing.py: an app exporting to Azure Monitor
through the distro, pointed at a local stand-in ingestion endpoint (a fake; the real one is
in Azure). Prints what the endpoint received as JSON on the last line."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import os
import sys
import threading
from typing import Any

received: list[dict[str, Any]] = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        for line in body.decode().splitlines() or [body.decode()]:
            data = json.loads(line)
            received.extend(data if isinstance(data, list) else [data])
        answer = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        pass


async def main() -> None:
    import httpx

    from ctafleet.app import create_app
    from ctafleet.config import Settings

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
    settings = Settings(
        environment="test",
        data_dir=sys.argv[1],
        observability={
            "traces_enabled": True,
            "trace_sample_ratio": 1.0,
            "azure_monitor_connection_string": "InstrumentationKey="
            "00000000-0000-0000-0000-000000000000;IngestionEndpoint=" + endpoint,
            "log_level": "WARNING",
        },
    )
    app = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        assert (await client.get("/healthz")).status_code == 200
    app.state.tracer_provider.shutdown()
    server.shutdown()
    print(json.dumps(received))


if __name__ == "__main__":
    os.environ.setdefault("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    asyncio.run(main())
