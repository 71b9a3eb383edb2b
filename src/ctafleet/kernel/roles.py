"""The roles a user can have: the vocabulary. What each may do is auth's permission matrix."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    admin = "admin"
    fleet_manager = "fleet_manager"
    dispatcher = "dispatcher"
    mechanic = "mechanic"
    driver = "driver"
    viewer = "viewer"
    auditor = "auditor"


RoleName = Literal[
    "admin", "fleet_manager", "dispatcher", "mechanic", "driver", "viewer", "auditor"
]
assert set(RoleName.__args__) == {r.value for r in Role}  # type: ignore[attr-defined]
