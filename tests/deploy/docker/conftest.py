"""Fixtures for the image tests: the images built from this tree, and a hardened app run."""

from __future__ import annotations

import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.kit.app import PgDatabase
from tests.kit.net import free_port
from tests.kit.podman import PODMAN, build_images, podman, remove

# What a production pod gets: nothing writable but a tmpfs, no capabilities, no privilege gain.
LOCKED_DOWN = ["--network=host", "--read-only", "--cap-drop=ALL"]
LOCKED_DOWN += ["--security-opt", "no-new-privileges"]
HARDENED = [*LOCKED_DOWN, "--user", "10001:10001", "--tmpfs", "/data:rw,size=64m,mode=0750,U"]


@pytest.fixture(scope="session")
def app_image() -> str:
    return build_images("app")["app"]


@dataclass
class AppContainers:
    """Containers of one test, run hardened on the host network against real services."""

    image: str
    env: dict[str, str]
    names: list[str] = field(default_factory=list)

    def _env_args(self, extra: dict[str, str] | None = None) -> list[str]:
        args: list[str] = []
        for key, value in {**self.env, **(extra or {})}.items():
            args += ["-e", f"{key}={value}"]
        return args

    def run(self, *command: str, stdin: str | None = None, timeout: float = 120) -> str:
        """A one-off command (migration job, CLI) in a hardened container; its stdout."""
        result = subprocess.run(
            [
                PODMAN,
                "run",
                "--rm",
                "-i",
                *HARDENED,
                *self._env_args(),
                self.image,
                *command,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"ctafleet {' '.join(command)}: {result.stderr[-2000:]}"
        return result.stdout

    def start(
        self,
        *command: str,
        health_url: str | None = None,
        env: dict[str, str] | None = None,
        stop_timeout: int = 30,
    ) -> str:
        name = f"ctafleet-test-{uuid.uuid4().hex[:8]}"
        args = ["run", "-d", "--name", name, *HARDENED, f"--stop-timeout={stop_timeout}"]
        if health_url:
            # The image's HEALTHCHECK targets port 8000; on the host network each test has its
            # own port, so the same program is pointed at it.
            args += ["--health-cmd", f'["healthcheck", "{health_url}"]', "--health-retries", "1"]
        podman(*args, *self._env_args(env), self.image, *command)
        self.names.append(name)
        return name


@pytest.fixture
def containers(app_image: str, fresh_pg: Callable[[], PgDatabase]) -> Iterator[AppContainers]:
    db = fresh_pg()
    env = {
        "CTAFLEET_ENVIRONMENT": "production",
        "CTAFLEET_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
        "CTAFLEET_DATABASE__URL": db.app_url,
        "CTAFLEET_DATABASE__ADMIN_URL": db.owner_url,
        "CTAFLEET_DATABASE__APP_ROLE": db.app_role,
        "CTAFLEET_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }
    box = AppContainers(app_image, env)
    yield box
    remove(*box.names)


def wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{base}/readyz never answered 200 (last: {last!r})")


@pytest.fixture
def port() -> int:
    return free_port()
