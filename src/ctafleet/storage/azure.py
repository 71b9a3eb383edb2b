"""Object storage in Azure Blob Storage (azure-storage-blob).

`put` stages the stream as blocks (each with a transactional MD5 the service checks) and
commits the block list once, with the whole object's Content-MD5 and SHA-256: until the
commit nothing is visible under the key, so a failed upload leaves no object (Azure discards
uncommitted blocks by itself). The container is never created here: a missing container is a
configuration error to report, not something to paper over (it may carry an immutability
policy that only the provisioning sets).
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings

from ctafleet.storage.base import (
    SHA256_KEY,
    ContainerNotFoundError,
    Hasher,
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectReader,
    ObjectStore,
    StorageAuthError,
    StorageError,
    StorageUnavailableError,
    check_key,
    check_metadata,
    read_full,
)

if TYPE_CHECKING:
    from azure.storage.blob import BlobProperties

# The SDK logs every request at INFO; a backup run should print only what matters.
logging.getLogger("azure").setLevel(logging.WARNING)

BLOCK_SIZE = 8 * 1024 * 1024
CONCURRENCY = 4
_AUTH_CODES = {
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "AuthorizationResourceTypeMismatch",
    "AuthorizationServiceMismatch",
    "AuthorizationSourceIPMismatch",
    "AuthorizationProtocolMismatch",
    "InvalidAuthenticationInfo",
}


class _ChunkStream:
    """A file-like view of the SDK's chunk iterator, translating its errors."""

    def __init__(self, chunks: Iterator[bytes], store: AzureBlobStore, key: str) -> None:
        self._chunks = chunks
        self._store = store
        self._key = key
        self._buffer = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        if not self._buffer:
            try:
                self._buffer = memoryview(next(self._chunks, b""))
            except AzureError as exc:
                self._store._raise(exc, self._key)
        if size < 0 or size >= len(self._buffer):
            data, self._buffer = bytes(self._buffer), memoryview(b"")
            return data
        data, self._buffer = bytes(self._buffer[:size]), self._buffer[size:]
        return data

    def close(self) -> None:
        self._chunks = iter(())


class AzureBlobStore(ObjectStore):
    def __init__(
        self,
        connection_string: str,
        container: str,
        *,
        block_size: int = BLOCK_SIZE,
        concurrency: int = CONCURRENCY,
    ) -> None:
        try:
            # The SDK's default back-off waits over a minute before reporting an unreachable
            # endpoint; a scheduled job should fail within seconds and let the next run retry.
            self._service = BlobServiceClient.from_connection_string(
                connection_string,
                connection_timeout=20,
                read_timeout=120,
                retry_total=4,
                initial_backoff=2,
                increment_base=2,
            )
        except (ValueError, AzureError) as exc:
            # The SDK's message may quote the string; only its kind is safe to show.
            raise StorageError(
                "CTAFLEET_STORAGE__AZURE_CONNECTION_STRING is not a valid Azure Storage "
                f"connection string ({type(exc).__name__})"
            ) from None
        self._container = self._service.get_container_client(container)
        self.container = container
        self.endpoint = self._service.url.split("?", 1)[0].rstrip("/")
        self.description = f"Azure Blob container {container!r} at {self.endpoint}"
        self._block_size = block_size
        self._concurrency = max(1, concurrency)

    def _raise(self, exc: AzureError, key: str | None = None) -> NoReturn:
        where = f"{key} in {self.description}" if key else self.description
        raw_code = getattr(exc, "error_code", None) or ""
        code = str(getattr(raw_code, "value", raw_code))
        status = getattr(exc, "status_code", None)
        if code == "ContainerNotFound":
            raise ContainerNotFoundError(
                f"Azure Blob container {self.container!r} does not exist at {self.endpoint}: "
                "create it (Terraform, or `az storage container create`), or fix "
                "CTAFLEET_STORAGE__AZURE_CONTAINER"
            ) from None
        if isinstance(exc, ResourceNotFoundError) or code == "BlobNotFound":
            raise ObjectNotFoundError(f"{where}: not found") from None
        if isinstance(exc, ClientAuthenticationError) or code in _AUTH_CODES or status == 403:
            raise StorageAuthError(
                f"Azure Blob Storage refused the credentials for {self.description} "
                f"({code or status}): the account key or SAS token in "
                "CTAFLEET_STORAGE__AZURE_CONNECTION_STRING is wrong, expired or lacks "
                "permission (read, write, list, delete)"
            ) from None
        if isinstance(exc, ResourceExistsError | ResourceModifiedError):
            raise ObjectExistsError(f"{where}: already exists") from None
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            raise StorageUnavailableError(
                f"cannot reach Azure Blob Storage at {self.endpoint}: {type(exc).__name__}"
            ) from None
        if isinstance(exc, HttpResponseError):
            raise StorageError(
                f"Azure Blob Storage error for {where}: HTTP {status} {code}".rstrip()
            ) from None
        raise StorageError(f"Azure Blob Storage error for {where}: {type(exc).__name__}") from None

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except AzureError as exc:
            self._raise(exc, key)

    def check(self) -> None:
        with self._errors():
            next(iter(self._container.list_blobs(results_per_page=1)), None)

    def put(
        self,
        key: str,
        stream: BinaryIO,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
        overwrite: bool = False,
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        blob = self._container.get_blob_client(key)
        hasher = Hasher()
        blocks: list[BlobBlock] = []
        with self._errors(key), ThreadPoolExecutor(self._concurrency) as pool:
            pending: deque[Future[Any]] = deque()
            try:
                while chunk := read_full(stream, self._block_size):
                    hasher.update(chunk)
                    block_id = base64.b64encode(f"{len(blocks):010d}".encode()).decode()
                    blocks.append(BlobBlock(block_id=block_id))
                    pending.append(
                        pool.submit(blob.stage_block, block_id, chunk, validate_content=True)
                    )
                    # Bounded: at most `concurrency` blocks in memory and in flight.
                    while len(pending) >= self._concurrency:
                        pending.popleft().result()
                while pending:
                    pending.popleft().result()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
            conditions: dict[str, Any] = (
                {} if overwrite else {"match_condition": MatchConditions.IfMissing}
            )
            blob.commit_block_list(
                blocks,
                content_settings=ContentSettings(
                    content_type=content_type, content_md5=bytearray(hasher.md5_bytes)
                ),
                metadata={**meta, SHA256_KEY: hasher.sha256},
                **conditions,
            )
        return self.stat(key)

    def _info(self, key: str, props: BlobProperties) -> ObjectInfo:
        md5 = props.content_settings.content_md5 if props.content_settings else None
        metadata = dict(props.metadata or {})
        modified = props.last_modified or datetime.fromtimestamp(0, UTC)
        return ObjectInfo(
            key=key,
            size=int(props.size or 0),
            sha256=metadata.get(SHA256_KEY),
            md5=bytes(md5).hex() if md5 else None,
            modified=modified,
            metadata=metadata,
        )

    def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        with self._errors(key):
            props = self._container.get_blob_client(key).get_blob_properties()
        return self._info(key, props)

    def get(self, key: str) -> ObjectReader:
        check_key(key)
        blob = self._container.get_blob_client(key)
        with self._errors(key):
            props = blob.get_blob_properties()
            # Pinned to the version whose checksums were just read.
            downloader = blob.download_blob(
                max_concurrency=self._concurrency,
                etag=props.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        stream = _ChunkStream(downloader.chunks(), self, key)
        return ObjectReader(stream, self._info(key, props))  # type: ignore[arg-type]

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._errors():
            for props in self._container.list_blobs(
                name_starts_with=prefix or None, include=["metadata"]
            ):
                yield self._info(props.name, props)

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            self._container.get_blob_client(key).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                self._raise(exc, key)
        except AzureError as exc:
            self._raise(exc, key)
