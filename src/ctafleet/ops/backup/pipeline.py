"""Streams between the database tools and object storage: compress, encrypt; decrypt, decompress.

Backup: source (pg_dump's stdout or a SQLite snapshot) -> zstd -> age -> pipe -> storage.put.
The compression and encryption run in a thread writing into an OS pipe that `put` reads, so
the dump never touches local disk and memory stays bounded. `put` fails, rather than commits,
when the source ended badly: the reader raises at end of stream if the producer failed or
`source_done` (e.g. pg_dump's exit status) says so.

Restore: storage reader -> age -> zstd -> sink (pg_restore's stdin or a file).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import threading
from collections.abc import Callable, Sequence
from typing import BinaryIO, cast

import zstandard
from pyrage import x25519

from ctafleet.ops.backup import crypto
from ctafleet.ops.backup.errors import BackupError

PIPE_SIZE = 1024 * 1024
READ_SIZE = 1024 * 1024


class CountingReader(io.RawIOBase):
    """Counts the bytes read through it (the uncompressed dump size of the manifest)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


class CountingWriter(io.RawIOBase):
    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._raw.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):
        # Fewer wake-ups between the producer thread and the uploader.
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return read_fd, write_fd


class EncryptingReader(io.RawIOBase):
    """The compressed and encrypted form of `source`, produced by a thread, read by `put`."""

    def __init__(
        self,
        source: BinaryIO,
        recipients: Sequence[x25519.Recipient],
        *,
        level: int,
        source_done: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._source = CountingReader(source)
        self._recipients = list(recipients)
        self._level = level
        self._source_done = source_done
        read_fd, write_fd = _pipe()
        self._read = open(read_fd, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._write = open(write_fd, "wb", buffering=PIPE_SIZE)  # noqa: SIM115
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._produce, name="backup-encrypt", daemon=True)
        self._thread.start()

    @property
    def plain_bytes(self) -> int:
        return self._source.count

    def _produce(self) -> None:
        try:
            compressor = zstandard.ZstdCompressor(level=self._level)
            with compressor.stream_reader(
                cast(BinaryIO, self._source), read_size=READ_SIZE, closefd=False
            ) as compressed:
                crypto.encrypt(cast(BinaryIO, compressed), self._write, self._recipients)
            self._write.flush()
            if self._source_done is not None:
                self._source_done()
        except BaseException as exc:  # reported to the reading side
            self._error = exc
        finally:
            with contextlib.suppress(OSError):
                self._write.close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = self._read.readinto(buffer)
        if not n:
            self._thread.join()
            if self._error is not None:
                if isinstance(self._error, BackupError):
                    raise self._error
                raise BackupError(
                    f"compressing/encrypting the dump failed: {type(self._error).__name__}: "
                    f"{self._error}"
                ) from self._error
        return n or 0

    def close(self) -> None:
        if self.closed:
            return
        # Closing the read end first makes a producer still writing fail fast (EPIPE).
        with contextlib.suppress(OSError):
            self._read.close()
        self._thread.join(timeout=30)
        super().close()


def decrypt_into(source: BinaryIO, sink: BinaryIO, identities: Sequence[x25519.Identity]) -> int:
    """Decrypt and decompress `source` into `sink`; the number of plain bytes written."""
    counter = CountingWriter(sink)
    decompressor = zstandard.ZstdDecompressor()
    with decompressor.stream_writer(
        cast(BinaryIO, counter), closefd=False, write_size=READ_SIZE
    ) as plain:
        crypto.decrypt(source, cast(BinaryIO, plain), identities)
    counter.flush()
    return counter.count
