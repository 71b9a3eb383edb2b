"""Telematics devices: register, bind to vehicles, rotate credentials, authenticate ingest."""

from __future__ import annotations

import secrets
import uuid

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth.tokens import digest, new_secret
from ctafleet.db import toolkit
from ctafleet.db.toolkit import IfMatch
from ctafleet.fleet.vehicles.service import get_vehicle
from ctafleet.kernel.context import Actor
from ctafleet.kernel.errors import Conflict, Invalid
from ctafleet.telematics.ingest.credentials import DEVICE_SECRET_PREFIX
from ctafleet.telematics.models import Device
from ctafleet.telematics.schemas import DeviceCreate, DeviceUpdate

ENTITY = "device"


def devices_query(
    *,
    vehicle_id: uuid.UUID | None = None,
    is_active: bool | None = None,
    protocol: str | None = None,
) -> Select[Device]:
    stmt = select(Device)
    if vehicle_id:
        stmt = stmt.where(Device.vehicle_id == vehicle_id)
    if is_active is not None:
        stmt = stmt.where(Device.is_active == is_active)
    if protocol:
        stmt = stmt.where(Device.protocol == protocol)
    return stmt


def new_credential() -> tuple[str, str, str]:
    """(the secret, its digest, its shown prefix): the secret is known only now."""
    secret = new_secret(DEVICE_SECRET_PREFIX)
    return secret, digest(secret), secret[:10]


async def _unique(session: AsyncSession, unique_id: str, exclude: uuid.UUID | None = None) -> None:
    # Within the tenant only (the session's scope): another tenant's ids are none of its
    # business, and answering "taken" would tell it that they exist.
    stmt = select(Device.id).where(Device.unique_id == unique_id)
    if exclude is not None:
        stmt = stmt.where(Device.id != exclude)
    if (await session.scalars(stmt)).first():
        raise Conflict("duplicate-device", f"a device with id {unique_id} is already registered")


async def _feeds_meters(
    session: AsyncSession,
    actor: Actor,
    vehicle_id: uuid.UUID | None,
    wanted: bool | None,
    device_id: uuid.UUID | None = None,
) -> bool:
    """Whether a device bound to `vehicle_id` feeds its meters: as `wanted`, or (None) if no
    other device of the vehicle does. Two feeding devices would count every kilometre twice:
    wanting it while another feeds is a 409. The vehicle is locked, so bindings made at once
    choose one after the other."""
    if vehicle_id is None:
        return True if wanted is None else wanted
    vehicle = await get_vehicle(session=session, actor=actor, vehicle_id=vehicle_id)
    if wanted is False:
        return False
    await toolkit.lock(session, vehicle)
    stmt = select(Device.unique_id).where(
        Device.vehicle_id == vehicle_id, Device.feeds_meters.is_(True)
    )
    if device_id is not None:
        stmt = stmt.where(Device.id != device_id)
    other = (await session.scalars(stmt)).first()
    if other is None:
        return True
    if wanted:
        raise Conflict(
            "meters-fed-by-another-device",
            f"device {other} already feeds this vehicle's meters: set its feeds_meters to "
            "false first",
        )
    return False


async def create_device(
    *, session: AsyncSession, actor: Actor, data: DeviceCreate
) -> tuple[Device, str]:
    """A new device and its credential (the only time the credential is known)."""

    async def recheck() -> None:
        await _unique(session, data.unique_id)

    await recheck()
    feeds = await _feeds_meters(session, actor, data.vehicle_id, data.feeds_meters)
    secret, hashed, prefix = new_credential()
    device = Device(
        credential_hash=hashed,
        credential_prefix=prefix,
        credential_rotated_at=actor.now(),
        feeds_meters=feeds,
        **data.model_dump(exclude={"feeds_meters"}),
    )
    await toolkit.create(session, actor, device, entity=ENTITY, recheck=recheck)
    return device, secret


async def get_device(*, session: AsyncSession, actor: Actor, device_id: uuid.UUID) -> Device:
    return await toolkit.get(session, actor, Device, device_id, entity=ENTITY)


async def update_device(
    *,
    session: AsyncSession,
    actor: Actor,
    device_id: uuid.UUID,
    data: DeviceUpdate,
    if_match: IfMatch | None,
) -> Device:
    device = await toolkit.get(session, actor, Device, device_id, entity=ENTITY)
    changes = data.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key != "vehicle_id":
            raise Invalid(key, f"{key} cannot be null")
    if "vehicle_id" in changes or "feeds_meters" in changes:
        changes["feeds_meters"] = await _feeds_meters(
            session,
            actor,
            changes.get("vehicle_id", device.vehicle_id),
            changes.get("feeds_meters"),  # rebinding without it: chosen again
            device.id,
        )
    await toolkit.lock(session, device)
    return await toolkit.update(session, actor, device, changes, entity=ENTITY, if_match=if_match)


async def rotate_credential(
    *, session: AsyncSession, actor: Actor, device_id: uuid.UUID
) -> tuple[Device, str]:
    device = await toolkit.get(session, actor, Device, device_id, entity=ENTITY, for_update=True)
    secret, hashed, prefix = new_credential()
    await toolkit.update(
        session,
        actor,
        device,
        {
            "credential_hash": hashed,
            "credential_prefix": prefix,
            "credential_rotated_at": actor.now(),
        },
        entity=ENTITY,
        action="rotate_credential",
    )
    return device, secret


async def authenticate_device(
    *, session: AsyncSession, credential: str, unique_id: str | None = None
) -> Device | None:
    """For ingest: the active device holding this credential (and, when given, this id).

    `session` is a system session: a position arrives before its tenant is known, and the
    credential (256 random bits, unique platform-wide) is what names the device.
    """
    hashed = digest(credential)
    device = (await session.scalars(select(Device).where(Device.credential_hash == hashed))).first()
    if device is None or not device.is_active:
        return None
    if not secrets.compare_digest(device.credential_hash, hashed):
        return None
    if unique_id is not None and device.unique_id != unique_id:
        return None
    return device
