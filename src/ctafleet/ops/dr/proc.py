"""Running the PostgreSQL and pgBackRest tools, as their owner when invoked as root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class DrError(Exception):
    """A failure the operator must act on; the message says what happened and what to do."""


@dataclass(frozen=True)
class OsUser:
    """The account that owns the data directory: pg_ctl refuses root, and files that
    pgBackRest restores must belong to the server's account."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def named(cls, name: str) -> OsUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise DrError(f"no operating-system user {name!r}; pass --os-user") from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    @classmethod
    def current(cls) -> OsUser:
        entry = pwd.getpwuid(os.getuid())
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    @property
    def switch_needed(self) -> bool:
        return os.geteuid() == 0 and self.uid != 0


def default_os_user(name: str | None) -> OsUser:
    """An explicit name, else `postgres` when running as root, else the caller."""
    if name:
        return OsUser.named(name)
    if os.geteuid() == 0:
        return OsUser.named("postgres")
    return OsUser.current()


def chown_tree(path: Path, user: OsUser) -> None:
    if os.geteuid() != 0:
        return
    os.chown(path, user.uid, user.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    argv: Sequence[str],
    *,
    user: OsUser | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool without a shell; on failure raise DrError with the end of its output."""
    kwargs: dict[str, object] = {}
    full_env = dict(os.environ if env is None else env)
    if user is not None and user.switch_needed:
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
        full_env["HOME"] = user.home
        full_env["USER"] = full_env["LOGNAME"] = user.name
    try:
        result: subprocess.CompletedProcess[str] = subprocess.run(  # noqa: S603 - argv lists built by this package, no shell
            list(argv),
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            # A cwd the server account can read: pg_ctl and pgBackRest resolve it at start.
            cwd="/" if user is not None and user.switch_needed else None,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
    except FileNotFoundError:
        raise DrError(
            f"{argv[0]} is not installed (scripts/install-dr-tools.sh installs the tools)"
        ) from None
    except subprocess.TimeoutExpired:
        raise DrError(f"{what or argv[0]} did not finish within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        output = tail(result.stderr + "\n" + result.stdout)
        raise DrError(f"{what or ' '.join(argv[:2])} failed (exit {result.returncode}):\n{output}")
    return result


def find_pg_bin(tool: str, pg_data: Path | None = None, pg_bin: Path | None = None) -> str:
    """The PostgreSQL tool matching the data directory's major version.

    Debian keeps each version's binaries in /usr/lib/postgresql/N/bin, outside PATH; pg_ctl
    of another major version refuses the data directory.
    """
    if pg_bin is not None:
        return str(pg_bin / tool)
    version_file = pg_data / "PG_VERSION" if pg_data is not None else None
    if version_file is not None and version_file.is_file():
        candidate = Path("/usr/lib/postgresql") / version_file.read_text().strip() / "bin" / tool
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if versions:
        return str(versions[-1])
    raise DrError(f"{tool} not found: install PostgreSQL's server package or pass --pg-bin")
