"""The object-storage interface, run identically against both implementations: a local
directory and Azure Blob Storage (Azurite)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from ctafleet.storage import (
    IntegrityError,
    LocalStore,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStore,
    StorageError,
)
from ctafleet.storage.azure import AzureBlobStore
from tests.ops.backup.conftest import Azurite


@pytest.fixture(params=["local", "azure"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "objects")
    azurite: Azurite = request.getfixturevalue("azurite")
    # Small blocks, so that a multi-block upload happens with little data.
    return AzureBlobStore(
        azurite.connection_string(), azurite.new_container(), block_size=256 * 1024
    )


class FailingStream(io.RawIOBase):
    """Yields some data, then fails like a dump that dies half-way."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise OSError("the producer died")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_put_get_list_delete(store: ObjectStore) -> None:
    store.check()
    data = os.urandom(700_000)  # several Azure blocks
    info = store.put("backups/a.bin", io.BytesIO(data), metadata={"backup_id": "a"})
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert info.metadata["backup_id"] == "a"
    store.put_bytes("backups/b.json", b"{}", content_type="application/json")
    store.put_bytes("other/c.bin", b"c")

    assert [i.key for i in store.list("backups/")] == ["backups/a.bin", "backups/b.json"]
    assert [i.key for i in store.list("backups/a")] == ["backups/a.bin"]
    assert [i.key for i in store.list()] == ["backups/a.bin", "backups/b.json", "other/c.bin"]
    assert list(store.list("nothing/")) == []

    with store.get("backups/a.bin") as reader:
        assert reader.read() == data
        reader.verify(sha256=info.sha256, size=len(data))
    assert store.exists("backups/a.bin")
    assert not store.exists("backups/zzz")

    store.delete("backups/a.bin")
    store.delete("backups/a.bin")  # idempotent
    assert not store.exists("backups/a.bin")
    with pytest.raises(ObjectNotFoundError):
        store.get("backups/a.bin")
    with pytest.raises(ObjectNotFoundError):
        store.stat("backups/a.bin")


def test_existing_key_is_refused_unless_overwrite(store: ObjectStore) -> None:
    store.put_bytes("k", b"one")
    with pytest.raises(ObjectExistsError):
        store.put_bytes("k", b"two")
    assert store.get_bytes("k") == b"one"
    store.put_bytes("k", b"two", overwrite=True)
    assert store.get_bytes("k") == b"two"


def test_failed_put_leaves_no_object(store: ObjectStore) -> None:
    with pytest.raises(OSError, match="the producer died"):
        store.put("backups/partial.bin", FailingStream(600_000))  # type: ignore[arg-type]
    assert not store.exists("backups/partial.bin")
    assert list(store.list()) == []


def test_reader_detects_a_different_expected_checksum(store: ObjectStore) -> None:
    store.put_bytes("k", b"payload")
    with store.get("k") as reader, pytest.raises(IntegrityError, match="checksum mismatch"):
        reader.verify(sha256="0" * 64)


def test_invalid_keys_are_refused(store: ObjectStore) -> None:
    for key in ("../etc/passwd", "/abs", "a//b", "", "a/.hidden", "sp ace"):
        with pytest.raises(StorageError, match="invalid object key"):
            store.put_bytes(key, b"x")


def test_local_tamper_is_detected(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("k", b"payload")
    (tmp_path / "k").write_bytes(b"paYload")
    with pytest.raises(IntegrityError, match="altered or corrupted"):
        store.get_bytes("k")


def test_local_full_disk_is_a_clear_error(tiny_disk: Path) -> None:
    store = LocalStore(tiny_disk)
    with pytest.raises(StorageError, match="no space left on the device"):
        store.put("big", io.BytesIO(b"x" * 2_000_000))
    assert [p.name for p in tiny_disk.iterdir()] == []
