"""External command-line tools the deploy tests run (podman, checkov, nginx, ...).

The project's install scripts put pinned Python tools into virtual environments under the
machine cache (`CTAFLEET_CACHE_DIR`, default /var/cache/ctafleet), which outlives a clean
clone so CI does not reinstall half a gigabyte each run. A missing tool skips, or fails
under CTAFLEET_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import service_unavailable

CACHE_DIR = Path(os.environ.get("CTAFLEET_CACHE_DIR", "/var/cache/ctafleet"))


def find_tool(name: str) -> str | None:
    """The tool on PATH, or in one of the cache's virtual environments."""
    found = shutil.which(name)
    if found:
        return found
    venvs = CACHE_DIR / "venvs"
    if venvs.is_dir():
        for venv in sorted(venvs.iterdir()):
            candidate = venv / "bin" / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def tool(name: str) -> str:
    """The tool's path, or a skip (a failure in CI) naming the script that installs it."""
    found = find_tool(name)
    if found is None:
        service_unavailable(f"{name} is not installed: run scripts/install-test-deps.sh")
    return found
