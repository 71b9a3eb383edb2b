"""A declarative test base for a domain's REST resource: create and read back, list, CSV export,
sorting, ETag/If-Match, the audit trail, another tenant's 404 (audited in the owner's log), an
unknown id, and the role matrix.

A domain joins with a few lines in its test package:

    class TestVehicles(CrudCase):
        path = "/api/v1/vehicles"
        entity = "vehicle"
        body = staticmethod(vehicle_body)
        change = {"notes": "moved to the north yard"}
        readers = {"admin", "fleet_manager", ...}
        writers = {"admin", "fleet_manager"}

Override `new_body` when a resource needs others to exist first (an assignment needs a vehicle
and a driver).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from ctafleet.kernel.roles import Role
from tests.kit.app import Api, TenantUsers
from tests.kit.factories import audit_events
from tests.kit.problems import assert_problem

ALL_ROLES = frozenset(r.value for r in Role)


class CrudCase:
    path: ClassVar[str]
    entity: ClassVar[str]  # the audit log's entity_type
    body: ClassVar[Callable[..., dict[str, Any]]]  # a valid create body
    change: ClassVar[dict[str, Any]]  # a PATCH body that changes something
    readers: ClassVar[set[str]]  # roles that may list and read
    writers: ClassVar[set[str]]  # roles that may create and change
    sort_fields: ClassVar[tuple[str, ...]] = ()
    # Roles that read only their own records (a driver): a list answers 200 but may be empty.
    own_records: ClassVar[set[str]] = set()

    async def new_body(self, api: Api, t: TenantUsers) -> dict[str, Any]:
        """A valid create body in tenant `t` (making what it refers to, if anything)."""
        return self.body()

    async def make(self, api: Api, t: TenantUsers, role: str = "admin") -> dict[str, Any]:
        """Creates one object through the API; returns its representation."""
        body = await self.new_body(api, t)
        r = await api.client.post(self.path, json=body, headers=t.headers(role))
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    def url(self, obj: dict[str, Any] | str) -> str:
        return f"{self.path}/{obj if isinstance(obj, str) else obj['id']}"

    # --- the generated tests ---------------------------------------------------------

    async def test_create_then_read_back(self, api: Api) -> None:
        t = await api.tenant(roles=["admin"])
        r = await api.client.post(self.path, json=await self.new_body(api, t), headers=t.headers())
        assert r.status_code == 201, r.text
        created = r.json()
        assert r.headers["location"] == self.url(created)
        assert r.headers["etag"] == f'"v{created["version"]}"'
        r = await api.client.get(r.headers["location"], headers=t.headers())
        assert r.status_code == 200, r.text
        read = r.json()
        assert {k: v for k, v in read.items() if k in created} == {
            k: v for k, v in created.items() if k in read
        }
        assert r.headers["etag"] == f'"v{read["version"]}"'
        events = await audit_events(api, t, self.entity, created["id"])
        assert [e["action"] for e in events] == ["create"]

    async def test_update_with_if_match(self, api: Api) -> None:
        t = await api.tenant(roles=["admin"])
        obj = await self.make(api, t)
        url = self.url(obj)
        etag = (await api.client.get(url, headers=t.headers())).headers["etag"]
        r = await api.client.patch(url, json=self.change, headers={**t.headers(), "If-Match": etag})
        assert r.status_code == 200, r.text
        changed = r.json()
        for key, value in self.change.items():
            assert changed[key] == value, key
        assert changed["version"] == obj["version"] + 1
        assert r.headers["etag"] != etag
        # The tag read before the change is stale now: nothing is written.
        r = await api.client.patch(url, json=self.change, headers={**t.headers(), "If-Match": etag})
        assert_problem(r, 412, "precondition-failed")
        assert (await api.client.get(url, headers=t.headers())).json() == changed
        actions = [e["action"] for e in await audit_events(api, t, self.entity, obj["id"])]
        assert actions[0] == "create"
        assert len(actions) == 2, actions

    async def test_the_same_change_twice_writes_once(self, api: Api) -> None:
        t = await api.tenant(roles=["admin"])
        obj = await self.make(api, t)
        first = await api.client.patch(self.url(obj), json=self.change, headers=t.headers())
        again = await api.client.patch(self.url(obj), json=self.change, headers=t.headers())
        assert first.status_code == again.status_code == 200, again.text
        assert again.json()["version"] == first.json()["version"]
        assert len(await audit_events(api, t, self.entity, obj["id"])) == 2

    async def test_another_tenants_object_is_not_found_and_audited(self, api: Api) -> None:
        owner = await api.tenant(roles=["admin"])
        prober = await api.tenant(roles=["admin"])
        obj = await self.make(api, owner)
        r = await api.client.get(self.url(obj), headers=prober.headers())
        assert_problem(r, 404, "not-found")
        r = await api.client.patch(self.url(obj), json=self.change, headers=prober.headers())
        assert_problem(r, 404, "not-found")
        r = await api.client.get(self.path, params={"limit": 500}, headers=prober.headers())
        assert obj["id"] not in {x["id"] for x in r.json()["data"]}
        probes = [
            e
            for e in await audit_events(api, owner, self.entity, obj["id"])
            if e["action"] == "cross_tenant_access_denied"
        ]
        assert len(probes) == 2
        assert probes[0]["changes"]["actor_tenant_id"]["after"] == str(prober.id)
        # Unchanged by the probe.
        r = await api.client.get(self.url(obj), headers=owner.headers())
        assert r.json()["version"] == obj["version"]

    async def test_an_unknown_id_is_not_found(self, api: Api) -> None:
        t = await api.tenant(roles=["admin"])
        assert_problem(
            await api.client.get(self.url(str(uuid.uuid4())), headers=t.headers()), 404, "not-found"
        )
        assert_problem(
            await api.client.get(self.url("not-a-uuid"), headers=t.headers()),
            422,
            "validation-error",
        )

    async def test_list_pages_and_csv_export(self, api: Api) -> None:
        t = await api.tenant(roles=["admin"])
        made = {(await self.make(api, t))["id"] for _ in range(3)}
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 2}
        while True:
            r = await api.client.get(self.path, params=params, headers=t.headers())
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["data"]) <= 2
            seen += [x["id"] for x in page["data"]]
            if not page["pagination"]["has_more"]:
                break
            params["cursor"] = page["pagination"]["next_cursor"]
        assert len(seen) == len(set(seen)), "no object on two pages"
        assert made <= set(seen)
        fields = set(page["data"][0])
        r = await api.client.get(self.path, params={"format": "csv"}, headers=t.headers())
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert sorted(row["id"] for row in rows) == sorted(seen)
        assert set(rows[0]) == fields, "CSV columns are the list's fields"

    async def test_every_documented_sort_field_sorts(self, api: Api) -> None:
        t = await api.tenant(roles=["admin"])
        for _ in range(2):
            await self.make(api, t)
        for field in self.sort_fields:
            for sort in (field, f"-{field}"):
                r = await api.client.get(self.path, params={"sort": sort}, headers=t.headers())
                assert r.status_code == 200, (sort, r.text)
                values = [x[field] for x in r.json()["data"]]
                expected = sorted(values, reverse=sort.startswith("-"))
                assert values == expected, sort
        r = await api.client.get(self.path, params={"sort": "no_such_field"}, headers=t.headers())
        assert_problem(r, 400, "invalid-sort")

    async def test_role_matrix(self, api: Api) -> None:
        t = await api.tenant()
        obj = await self.make(api, t)
        for role in sorted(ALL_ROLES):
            headers = t.headers(role)
            listed = await api.client.get(self.path, headers=headers)
            read = await api.client.get(self.url(obj), headers=headers)
            body = await self.new_body(api, t)
            created = await api.client.post(self.path, json=body, headers=headers)
            changed = await api.client.patch(self.url(obj), json=self.change, headers=headers)
            if role in self.readers:
                assert listed.status_code == 200, (role, listed.text)
                if role not in self.own_records:
                    assert read.status_code == 200, (role, read.text)
            else:
                assert_problem(listed, 403, "forbidden")
                assert_problem(read, 403, "forbidden")
            if role in self.writers:
                assert created.status_code == 201, (role, created.text)
                assert changed.status_code == 200, (role, changed.text)
            else:
                assert_problem(created, 403, "forbidden")
                assert_problem(changed, 403, "forbidden")
