"""Podman for the container tests: the project's own wrapper (scripts/podman-local.sh: a
private store under the machine cache, settings for a host without systemd) and the image
builds (scripts/build-images.sh), serialised across xdist workers by a file lock so one build
runs and the others reuse its layers.

Healthchecks are never scheduled here (podman needs systemd for that): tests drive them with
`podman healthcheck run`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.tools import CACHE_DIR, tool

ROOT = Path(__file__).resolve().parents[2]
# The marks of every test that runs containers: slow, and all on one xdist worker (`make test`
# runs `--dist loadgroup`): image builds would fight for the two cores, and podman 4.3's
# aardvark-dns restarts while another test removes its network, losing names for a moment.
PODMAN_TESTS = [pytest.mark.slow, pytest.mark.xdist_group("podman")]
PODMAN = str(ROOT / "scripts" / "podman-local.sh")
BUILD = str(ROOT / "scripts" / "build-images.sh")
# podman prints these on every run without systemd or syslog; they say nothing about the test.
NOISE = re.compile(
    r"systemd connection|connect to syslog|Removing timer|from database: no such container"
)


def quiet(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not NOISE.search(line))


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    tool("podman")
    result = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    result.stderr = quiet(result.stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / "image-build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_images(*names: str, tag: str = "test") -> dict[str, str]:
    """Build the named images from the working tree on the local base; {name: reference}."""
    for needed in ("podman", "buildah", "mmdebstrap"):
        tool(needed)
    with _build_lock():
        result = subprocess.run(
            [BUILD, "--local-base", "--tag", tag, *names],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    if result.returncode != 0:
        raise AssertionError(f"image build failed:\n{quiet(result.stderr)[-4000:]}")
    return {name: f"localhost/ctafleet/{name}:{tag}" for name in names}


def inspect(ref: str, kind: str = "image") -> dict[str, Any]:
    out = podman(kind, "inspect", ref).stdout
    data = json.loads(out)
    return dict(data[0])


def healthy(container: str) -> bool:
    return podman("healthcheck", "run", container, check=False, timeout=30).returncode == 0


def wait_healthy(container: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(container):
            return
        state = inspect(container, "container")["State"]
        if not state.get("Running"):
            break
        time.sleep(0.5)
    logs = podman("logs", "--tail", "30", container, check=False)
    raise AssertionError(f"{container} never became healthy:\n{logs.stdout}{logs.stderr}")


def remove(*containers: str) -> None:
    if containers:
        podman("rm", "-f", "-t", "5", *containers, check=False, timeout=60)


def main_pid(container: str) -> int:
    return int(inspect(container, "container")["State"]["Pid"])


def podman_env() -> dict[str, str]:
    """The environment under which plain `podman` (as podman-compose calls it) uses the same
    private store and settings as scripts/podman-local.sh."""
    out = subprocess.run(
        [PODMAN, "--env"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    env: dict[str, str] = {}
    for word in out.split()[1:]:  # export A=... B=... C=...
        key, _, value = word.partition("=")
        env[key] = value
    return env
