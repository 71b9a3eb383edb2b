"""Long-running commands (`ctafleet worker`, `ctafleet mqtt`) stop on SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


def run_until_signalled(serve: Callable[[asyncio.Event], Awaitable[object]]) -> None:
    """Run `serve(stop)`; SIGTERM (Kubernetes, systemd) or SIGINT sets `stop`, and `serve`
    finishes what it has in hand before it returns."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    asyncio.run(main())
