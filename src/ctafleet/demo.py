"""The demo tenant: users of every role and a fleet of ~50 vehicles with drivers and devices."""

from __future__ import annotations

import json
import os
import random
import secrets
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth.schemas import UserCreate
from ctafleet.auth.users import create_user
from ctafleet.config import Settings
from ctafleet.db import toolkit
from ctafleet.db.engine import Database
from ctafleet.fleet.assignments.models import Assignment
from ctafleet.fleet.drivers.models import Driver
from ctafleet.fleet.drivers.schemas import DriverCreate
from ctafleet.fleet.vehicles.models import MeterReading, Vehicle
from ctafleet.fleet.vehicles.schemas import VehicleCreate
from ctafleet.fleet.vehicles.vin import check_digit
from ctafleet.kernel.clock import Clock
from ctafleet.kernel.context import Actor
from ctafleet.kernel.roles import Role
from ctafleet.telematics.models import Device
from ctafleet.telematics.service import new_credential
from ctafleet.telematics.simulate import DEVICES_FILE
from ctafleet.tenants.service import create_tenant, find_tenant

DEMO_SLUG = "demo"
DEMO_DOMAIN = "demo.example.org"
CREDENTIALS_FILE = "demo-credentials.json"

_MODELS = [
    ("Ford", "F-150", "pickup", "gasoline", 98.0),
    ("Ford", "Transit", "van", "gasoline", 95.0),
    ("Chevrolet", "Silverado 2500", "pickup", "diesel", 136.0),
    ("Ram", "ProMaster", "van", "gasoline", 91.0),
    ("Toyota", "Prius", "car", "hybrid", 43.0),
    ("Chevrolet", "Bolt EV", "car", "electric", None),
    ("Freightliner", "M2 106", "heavy_truck", "diesel", 378.0),
    ("International", "HV607", "heavy_truck", "diesel", 265.0),
    ("John Deere", "310L", "heavy_equipment", "diesel", 151.0),
    ("Ford", "Explorer", "suv", "gasoline", 68.0),
]
_DEPARTMENTS = ["Public Works", "Parks", "Water", "Police", "Fire", "Sanitation", "Transit"]
_FIRST = [
    "Alex",
    "Sam",
    "Jordan",
    "Taylor",
    "Morgan",
    "Casey",
    "Riley",
    "Jamie",
    "Avery",
    "Quinn",
    "Drew",
    "Reese",
    "Rowan",
    "Skyler",
    "Emerson",
]
_LAST = [
    "Garcia",
    "Smith",
    "Johnson",
    "Lee",
    "Brown",
    "Nguyen",
    "Patel",
    "Kowalski",
    "Okafor",
    "Martin",
    "Rossi",
    "Haddad",
    "Silva",
    "Novak",
    "Lindqvist",
]
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def make_vin(rng: random.Random) -> str:
    body = [rng.choice(_VIN_CHARS) for _ in range(17)]
    body[8] = "0"
    vin = "".join(body)
    return vin[:8] + check_digit(vin) + vin[9:]


def _write_private(path: Path, data: Any) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)


async def _fleet(
    session: AsyncSession,
    actor: Actor,
    rng: random.Random,
    count: int,
    driver_user: uuid.UUID,
    now: datetime,
) -> list[dict[str, str]]:
    """Vehicles, drivers, assignments and devices, made in bulk (one flush each, with their
    audit events): seeding thousands takes seconds, not one round of checks per object."""
    vehicles, drivers, assignments, devices, creds = [], [], [], [], []
    for i in range(count):
        make, model, vtype, fuel, tank = _MODELS[i % len(_MODELS)]
        data = VehicleCreate(
            unit_number=f"U-{100 + i}",
            vin=make_vin(rng),
            plate=f"DEM{1000 + i}",
            plate_jurisdiction="US-IL",
            make=make,
            model=model,
            year=rng.randint(2012, 2025),
            vehicle_type=vtype,
            fuel_type=fuel,
            tank_capacity_l=tank,
            department=rng.choice(_DEPARTMENTS),
            status="in_shop" if i % 17 == 5 else "active",
            odometer_m=rng.randint(5_000, 250_000) * 1000,
            engine_hours_s=rng.randint(200, 9000) * 3600,
            purchase_date=date(2020, 1, 1) + timedelta(days=rng.randint(0, 1800)),
            purchase_cost_minor=rng.randint(25_000, 180_000) * 100,
            purchase_currency="USD",
            home_name="Central Yard",
            home_lat=41.8781 + rng.uniform(-0.05, 0.05),
            home_lon=-87.6298 + rng.uniform(-0.05, 0.05),
        )
        vehicle = Vehicle(id=uuid.uuid4(), **data.model_dump())
        driver = Driver(
            id=uuid.uuid4(),
            **DriverCreate(
                first_name=rng.choice(_FIRST),
                last_name=rng.choice(_LAST),
                employee_number=f"E{5000 + i}",
                licence_number=f"D{rng.randint(10**8, 10**9 - 1)}",
                licence_class="CDL-B" if vtype == "heavy_truck" else "D",
                licence_jurisdiction="US-IL",
                licence_expiry=date.today() + timedelta(days=rng.randint(-20, 1500)),
                user_id=driver_user if i == 0 else None,
            ).model_dump(),
        )
        vehicles.append(vehicle)
        drivers.append(driver)
        assignments.append(
            Assignment(
                vehicle_id=vehicle.id,
                driver_id=driver.id,
                starts_at=now - timedelta(days=rng.randint(1, 90)),
            )
        )
        secret, hashed, prefix = new_credential()
        devices.append(
            Device(
                unique_id=f"demo-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
                name=f"Tracker {vehicle.unit_number}",
                protocol="osmand",
                vehicle_id=vehicle.id,
                credential_hash=hashed,
                credential_prefix=prefix,
                credential_rotated_at=now,
            )
        )
        creds.append(
            {
                "unique_id": devices[-1].unique_id,
                "credential": secret,
                "vehicle_id": str(vehicle.id),
            }
        )
    await toolkit.create_many(session, actor, vehicles, entity="vehicle")
    await toolkit.create_many(session, actor, drivers, entity="driver")
    await toolkit.create_many(session, actor, assignments, entity="assignment")
    await toolkit.create_many(session, actor, devices, entity="device")
    session.add_all(
        MeterReading(
            vehicle_id=v.id,
            read_at=now,
            odometer_m=v.odometer_m,
            engine_hours_s=v.engine_hours_s,
            source="manual",
            note="at registration",
        )
        for v in vehicles
    )
    return creds


async def seed(
    db: Database, settings: Settings, clock: Clock, *, vehicles: int = 50, seed_value: int = 7
) -> dict[str, Any]:
    """Creates the demo tenant once; returns the login credentials (read back on later runs)."""
    cred_path = settings.data_dir / CREDENTIALS_FILE
    async with db.system_session() as session:
        existing = await find_tenant(session=session, slug=DEMO_SLUG)
        if existing is not None:
            if cred_path.exists():
                return dict(json.loads(cred_path.read_text()))
            return {"tenant": DEMO_SLUG, "users": []}
        tenant = await create_tenant(
            session=session,
            slug=DEMO_SLUG,
            name="City of Demo Public Works",
            display_units="imperial",
            timezone="America/Chicago",
            currency="USD",
        )
    rng = random.Random(seed_value)  # noqa: S311 - demo data, not security
    now = clock.now()
    users: list[dict[str, str]] = []
    system_actor = Actor.system(tenant.id, clock=clock)
    async with db.session(system_actor) as session:
        created = {}
        for role in Role:
            password = secrets.token_urlsafe(12)
            email = f"{role.value.replace('_', '.')}@{DEMO_DOMAIN}"
            user = await create_user(
                session=session,
                actor=system_actor,
                settings=settings.auth,
                data=UserCreate(
                    email=email,
                    full_name=f"Demo {role.value.replace('_', ' ').title()}",
                    role=role.value,
                    password=password,
                ),
            )
            created[role] = user
            users.append({"role": role.value, "email": email, "password": password})
        admin = created[Role.admin]
        actor = Actor(tenant_id=tenant.id, user_id=admin.id, role=Role.admin.value, clock=clock)
        device_creds = await _fleet(session, actor, rng, vehicles, created[Role.driver].id, now)
        await toolkit.commit(session, what="the demo fleet")
    result = {"tenant": DEMO_SLUG, "users": users}
    _write_private(cred_path, result)
    _write_private(settings.data_dir / DEVICES_FILE, device_creds)
    return result


async def drive_fleet(settings: Settings, *, url: str, every_s: float = 5.0) -> None:
    """Drive the demo fleet through the OsmAnd endpoint at `url`, each vehicle reporting about
    every `every_s` seconds, until cancelled."""
    from ctafleet.telematics.simulate import Options, load_devices, simulate

    devices = load_devices(path=settings.data_dir / DEVICES_FILE)
    options = Options(url=url, rate=len(devices) / every_s, report_every_s=0)
    await simulate(options=options, devices=devices, echo=lambda _line: None)
