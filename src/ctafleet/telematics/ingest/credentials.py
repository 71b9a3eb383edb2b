"""Who sent a message: a device credential (or a tenant's ingest key for id-only devices),
resolved to the device, its tenant and its vehicle.

A phone reports every few seconds, so the answer is cached for `ttl_s` (default 5 s): a
rotated or revoked credential, a deactivated device or a new vehicle binding takes effect
within that time on every replica, and a wrong credential is remembered as wrong just as long
(a flood of bad ones costs one query each per period, not one per request).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from sqlalchemy import select

from ctafleet.auth.tokens import digest
from ctafleet.db.engine import Database
from ctafleet.kernel.clock import Clock
from ctafleet.telematics.models import Device, TelemetrySettings

# What `new_secret` puts before its `_`: a device credential, a tenant ingest key.
DEVICE_SECRET_PREFIX = "ctd"  # noqa: S105 - a prefix, not a secret
TENANT_KEY_SECRET_PREFIX = "cti"  # noqa: S105 - a prefix, not a secret
DEVICE_PREFIX = f"{DEVICE_SECRET_PREFIX}_"
TENANT_KEY_PREFIX = f"{TENANT_KEY_SECRET_PREFIX}_"


@dataclass(frozen=True, slots=True)
class DeviceAuth:
    device_id: uuid.UUID
    tenant_id: uuid.UUID
    vehicle_id: uuid.UUID | None
    unique_id: str


_MISSING: Any = object()


class DeviceAuthenticator:
    def __init__(
        self, db: Database, clock: Clock, *, ttl_s: float = 5.0, maxsize: int = 200_000
    ) -> None:
        self.db = db
        timer = lambda: clock.now().timestamp()  # noqa: E731 - the cache's clock
        self._devices: TTLCache[str, DeviceAuth | None] = TTLCache(maxsize, ttl_s, timer=timer)
        self._tenant_keys: TTLCache[str, uuid.UUID | None] = TTLCache(
            maxsize // 100 or 1, ttl_s, timer=timer
        )
        self._legacy: TTLCache[tuple[uuid.UUID, str], DeviceAuth | None] = TTLCache(
            maxsize, ttl_s, timer=timer
        )

    async def device(self, credential: str, unique_id: str | None) -> DeviceAuth | None:
        """The active device holding `credential`; None for a wrong or revoked one, or when
        the message names another device than the credential's."""
        hashed = digest(credential)
        found = self._devices.get(hashed, _MISSING)
        if found is _MISSING:
            # Found by the SHA-256 of a 256-bit secret: an index lookup's timing tells nothing
            # usable about a guess.
            found = await self._load_device(Device.credential_hash == hashed)
            self._devices[hashed] = found
        if found is None or (unique_id is not None and found.unique_id != unique_id):
            return None
        return found  # type: ignore[no-any-return]

    async def legacy_device(self, tenant_key: str, unique_id: str) -> DeviceAuth | None:
        """An id-only device of the tenant whose ingest key this is (off unless the device
        allows it)."""
        hashed = digest(tenant_key)
        tenant = self._tenant_keys.get(hashed, _MISSING)
        if tenant is _MISSING:
            async with self.db.system_session() as session:
                tenant = await session.scalar(
                    select(TelemetrySettings.tenant_id).where(
                        TelemetrySettings.ingest_key_hash == hashed
                    )
                )
            self._tenant_keys[hashed] = tenant
        if tenant is None:
            return None
        key = (tenant, unique_id)
        found = self._legacy.get(key, _MISSING)
        if found is _MISSING:
            found = await self._load_device(
                Device.tenant_id == tenant,
                Device.unique_id == unique_id,
                Device.allow_id_only.is_(True),
            )
            self._legacy[key] = found
        return found  # type: ignore[no-any-return]

    async def _load_device(self, *where: Any) -> DeviceAuth | None:
        async with self.db.system_session() as session:
            row = (
                await session.execute(
                    select(Device.id, Device.tenant_id, Device.vehicle_id, Device.unique_id).where(
                        *where, Device.is_active.is_(True)
                    )
                )
            ).first()
        return DeviceAuth(row[0], row[1], row[2], row[3]) if row is not None else None

    def forget(self) -> None:
        self._devices.clear()
        self._tenant_keys.clear()
        self._legacy.clear()
