"""Object storage in a local directory (the embedded default).

An object is a file under the root; its checksums and metadata live in a hidden sidecar
(`.<name>.meta.json`) next to it. `put` writes to a hidden partial file and renames it into
place only when complete and flushed to disk, so a crash or a full disk never leaves a
truncated object under its key.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

from ctafleet.storage.base import (
    CHUNK,
    SHA256_KEY,
    Hasher,
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectReader,
    ObjectStore,
    StorageError,
    check_key,
    check_metadata,
)


def _os_error(exc: OSError, where: Path) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"no space left on the device holding {where}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"cannot write to {where}: {exc.strerror}")
    return StorageError(f"{where}: {exc.strerror or exc}")


class _SourceFailedError(Exception):
    """Reading the caller's stream failed: its error, not a storage error."""


def _read(stream: BinaryIO) -> bytes:
    try:
        return stream.read(CHUNK)
    except Exception as exc:
        raise _SourceFailedError from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.description = f"local directory {self.root}"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta.json")

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, self.root) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"cannot write to {self.root}: permission denied")

    def put(
        self,
        key: str,
        stream: BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
        overwrite: bool = False,
    ) -> ObjectInfo:
        path = self._path(key)
        meta = check_metadata(metadata)
        if path.exists() and not overwrite:
            raise ObjectExistsError(f"{key} already exists in {self.description}")
        token = secrets.token_hex(6)
        partial = path.with_name(f".{path.name}.partial-{token}")
        partial_meta = path.with_name(f".{path.name}.meta-{token}")
        hasher = Hasher()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "xb") as out:
                while chunk := _read(stream):
                    out.write(chunk)
                    hasher.update(chunk)
                out.flush()
                os.fsync(out.fileno())
            record = {
                "sha256": hasher.sha256,
                "md5": hasher.md5,
                "size": hasher.size,
                "content_type": content_type,
                "metadata": {**meta, SHA256_KEY: hasher.sha256},
            }
            with open(partial_meta, "x") as out_meta:
                json.dump(record, out_meta)
                out_meta.flush()
                os.fsync(out_meta.fileno())
            # Sidecar first: an object without its record would be untrusted; a record
            # without its object is ignored by list() and replaced by the next put.
            os.replace(partial_meta, self._sidecar(path))
            os.replace(partial, path)
            _fsync_dir(path.parent)
        except _SourceFailedError as failed:
            raise (failed.__cause__ or failed) from None
        except OSError as exc:
            raise _os_error(exc, path.parent) from None
        finally:
            for leftover in (partial, partial_meta):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
        return self.stat(key)

    def _record(self, path: Path) -> dict[str, object]:
        try:
            return cast(dict[str, object], json.loads(self._sidecar(path).read_text()))
        except (OSError, ValueError):
            return {}

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{key} not found in {self.description}") from None
        except OSError as exc:
            raise _os_error(exc, path) from None
        record = self._record(path)
        metadata = record.get("metadata")
        sha256, md5 = record.get("sha256"), record.get("md5")
        return ObjectInfo(
            key=key,
            size=st.st_size,
            sha256=sha256 if isinstance(sha256, str) else None,
            md5=md5 if isinstance(md5, str) else None,
            modified=datetime.fromtimestamp(st.st_mtime, UTC),
            metadata=dict(metadata) if isinstance(metadata, dict) else {},
        )

    def get(self, key: str) -> ObjectReader:
        info = self.stat(key)
        try:
            raw = open(self._path(key), "rb")  # noqa: SIM115 - closed by the ObjectReader
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{key} not found in {self.description}") from None
        except OSError as exc:
            raise _os_error(exc, self._path(key)) from None
        return ObjectReader(raw, info)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        # Walk only below the deepest directory the prefix names.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*head.split("/")) if head else self.root
        if not start.is_dir():
            return
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root)
            for name in filenames:
                if name.startswith("."):
                    continue
                key = "/".join((*rel.parts, name))
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):
            with contextlib.suppress(ObjectNotFoundError):
                yield self.stat(key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            self._sidecar(path).unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error(exc, path) from None
