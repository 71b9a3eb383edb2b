"""The object-storage interface and what every backend shares.

A backend stores opaque objects under `/`-separated keys. `put` consumes a stream once and
records its SHA-256 (and MD5, which Azure also keeps as Content-MD5) as it goes, so the
checksums always describe the bytes that were stored. `get` returns a reader that hashes what
it reads; `verify()` after the last byte says whether the object is still what was stored.
"""

from __future__ import annotations

import hashlib
import io
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import BinaryIO

CHUNK = 1024 * 1024
# Keys are portable across backends: Azure blob names and file names on any filesystem.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,200}$")
# Azure metadata names must be C# identifiers; local sidecars follow the same rule.
_META_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SHA256_KEY = "sha256"


class StorageError(Exception):
    """A storage operation failed. The message is safe to show: it never holds a secret."""


class ObjectNotFoundError(StorageError):
    pass


class ObjectExistsError(StorageError):
    pass


class ContainerNotFoundError(StorageError):
    pass


class StorageAuthError(StorageError):
    pass


class StorageUnavailableError(StorageError):
    pass


class IntegrityError(StorageError):
    """The bytes read are not the bytes that were stored."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None  # hex; None when the object was not written through this interface
    md5: str | None  # hex
    modified: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)


def check_key(key: str) -> str:
    segments = key.split("/")
    if not key or not all(_SEGMENT.match(s) for s in segments):
        raise StorageError(
            f"invalid object key {key!r}: use `/`-separated names of letters, digits and ._=+-"
        )
    return key


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        if not _META_NAME.match(name) or not value.isascii():
            raise StorageError(f"invalid metadata {name!r}: names are identifiers, values ASCII")
        out[name] = value
    return out


class Hasher:
    """SHA-256 and MD5 of a stream, fed chunk by chunk."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha256.update(data)
        self._md5.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def md5_bytes(self) -> bytes:
        return self._md5.digest()


def read_full(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes; fewer only at the end of the stream (pipes return short reads)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


class ObjectReader(io.RawIOBase):
    """A stored object being read: hashes every byte; `verify()` compares with the record."""

    def __init__(self, raw: BinaryIO, info: ObjectInfo) -> None:
        super().__init__()
        self._raw = raw
        self.info = info
        self.hasher = Hasher()
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        if n == 0:
            self._eof = True
            return 0
        buffer[:n] = data
        self.hasher.update(data)
        return n

    def drain(self) -> None:
        """Read to the end, so the checksums cover the whole object."""
        while self.read(CHUNK):
            pass

    def verify(self, *, sha256: str | None = None, size: int | None = None) -> None:
        """Raise IntegrityError unless what was read matches the stored record (and the
        caller's own expectation, e.g. a manifest's). Reads what is left first."""
        self.drain()
        got = self.hasher
        expected = [
            ("SHA-256 recorded by the storage", self.info.sha256, got.sha256),
            ("MD5 (Content-MD5) recorded by the storage", self.info.md5, got.md5),
            ("SHA-256 expected by the caller", sha256, got.sha256),
        ]
        if self.info.sha256 is None and sha256 is None:
            raise IntegrityError(f"{self.info.key}: no checksum recorded; cannot be trusted")
        for what, want, have in expected:
            if want is not None and want.lower() != have:
                raise IntegrityError(
                    f"{self.info.key}: checksum mismatch ({what} {want}, read {have}): "
                    "the stored object was altered or corrupted"
                )
        for want_size in (self.info.size, size):
            if want_size is not None and want_size != got.size:
                raise IntegrityError(
                    f"{self.info.key}: size mismatch (expected {want_size} bytes, read "
                    f"{got.size}): the stored object was altered or truncated"
                )

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ObjectStore(ABC):
    """Object storage. Code outside this package uses only this interface."""

    #: Where the objects are, for messages ("local directory /srv/objects"); no secrets.
    description: str

    @abstractmethod
    def check(self) -> None:
        """Fail now, with a clear error, if the store cannot be listed (missing container,
        bad credentials, unreachable)."""

    @abstractmethod
    def put(
        self,
        key: str,
        stream: BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
        overwrite: bool = False,
    ) -> ObjectInfo:
        """Store everything `stream` yields. Atomic: on any error no object is left under
        `key`. Refuses an existing key unless `overwrite`."""

    @abstractmethod
    def get(self, key: str) -> ObjectReader:
        """A reader of the object; call `verify()` after reading to check its checksums."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
        overwrite: bool = False,
    ) -> ObjectInfo:
        return self.put(
            key,
            io.BytesIO(data),
            metadata=metadata,
            content_type=content_type,
            overwrite=overwrite,
        )

    def get_bytes(self, key: str) -> bytes:
        """The whole object, checked against its recorded checksums."""
        with self.get(key) as reader:
            data = reader.read()
            reader.verify()
        return data
