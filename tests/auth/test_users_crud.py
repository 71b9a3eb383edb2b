"""Users as a REST resource: the declarative CRUD checks of the test kit."""

from __future__ import annotations

from tests.kit.crud import CrudCase
from tests.kit.factories import user_body


class TestUsers(CrudCase):
    path = "/api/v1/users"
    entity = "user"
    body = staticmethod(user_body)
    change = {"full_name": "Grace B. Operator", "role": "auditor"}
    readers = {"admin", "fleet_manager", "auditor"}
    writers = {"admin"}
    sort_fields = ("email", "created_at", "role")
