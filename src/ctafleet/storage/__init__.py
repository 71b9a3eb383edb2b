"""Object storage for backups, screenshots and reports: a local directory or Azure Blob Storage.

`open_store(settings)` returns the configured backend; everything else uses only the
`ObjectStore` interface and never asks which backend it has.
"""

from __future__ import annotations

from pathlib import Path

from ctafleet.config import Settings
from ctafleet.storage.base import (
    ContainerNotFoundError,
    IntegrityError,
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectReader,
    ObjectStore,
    StorageAuthError,
    StorageError,
    StorageUnavailableError,
)
from ctafleet.storage.local import LocalStore

__all__ = [
    "ContainerNotFoundError",
    "IntegrityError",
    "LocalStore",
    "ObjectExistsError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectReader",
    "ObjectStore",
    "StorageAuthError",
    "StorageError",
    "StorageUnavailableError",
    "open_store",
]


def open_store(settings: Settings) -> ObjectStore:
    storage = settings.storage
    if storage.backend == "azure":
        from ctafleet.storage.azure import AzureBlobStore

        connection_string = storage.azure_connection_string.get_secret_value()
        if not connection_string:
            raise StorageError(
                "CTAFLEET_STORAGE__BACKEND is azure but CTAFLEET_STORAGE__AZURE_CONNECTION_STRING "
                "is empty"
            )
        return AzureBlobStore(connection_string, storage.azure_container)
    root = Path(storage.local_path) if storage.local_path else settings.data_dir / "objects"
    return LocalStore(root)
