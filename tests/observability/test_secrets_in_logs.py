"""No secret reaches a log line at any level, DEBUG included: the database drivers log bound
parameters there (password hashes, TOTP secrets, token and credential digests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyotp
import pytest

from tests.auth.helpers import bearer
from tests.kit.app import PASSWORD, Backend, make_tenant, own_app
from tests.kit.factories import device_body


@pytest.mark.parametrize(("level", "echo"), [("DEBUG", True), ("DEBUG", False), ("INFO", False)])
async def test_no_secret_in_any_log_line(
    backend: Backend,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    level: str,
    echo: bool,
) -> None:
    async with own_app(
        backend,
        tmp_path,
        observability={"log_level": level, "log_json": True},
        database={"echo": echo},
    ) as api:
        t = await make_tenant(api, roles=["admin"], login=False)
        email = t.users["admin"].email
        r = await api.client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        pair = r.json()
        token = pair["access_token"]
        r = await api.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        r = await api.client.post("/api/v1/auth/mfa/setup", headers=bearer(token))
        assert r.status_code == 200, r.text
        totp_secret = r.json()["secret"]
        code = pyotp.TOTP(totp_secret).at(api.clock.now())
        r = await api.client.post(
            "/api/v1/auth/mfa/verify", headers=bearer(token), json={"code": code}
        )
        assert r.status_code == 200, r.text
        recovery = r.json()["recovery_codes"]
        api.clock.advance(30)
        code = pyotp.TOTP(totp_secret).at(api.clock.now())
        r = await api.client.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD, "totp_code": code}
        )
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        r = await api.client.post("/api/v1/devices", json=device_body(), headers=bearer(token))
        assert r.status_code == 201, r.text
        credential = r.json()["credential"]
        r = await api.client.post(
            f"/api/v1/devices/{r.json()['id']}/rotate-credential", headers=bearer(token)
        )
        rotated = r.json()["credential"]
        async with api.db.system_session() as session:
            from sqlalchemy import select

            from ctafleet.auth.models import User

            password_hash = (
                await session.scalars(select(User.password_hash).where(User.email == email))
            ).one()

    out = capsys.readouterr()
    logged = out.out + out.err
    assert "request" in logged  # the logs were captured at all
    if echo:  # the statements are logged, once each, as JSON lines; their parameters are not
        assert "SELECT users." in logged
        assert "parameters hidden" in logged
        # Once each, as JSON: not a second, plain-text copy from SQLAlchemy's own handler.
        plain = [x for x in out.out.splitlines() if x.strip() and not x.startswith("{")]
        assert not plain, plain[:3]
    secrets = {
        "password": PASSWORD,
        "password hash": password_hash,
        "totp secret": totp_secret,
        "refresh token": pair["refresh_token"],
        "refresh digest": hashlib.sha256(pair["refresh_token"].encode()).hexdigest(),
        "access token": token,
        "device credential": credential,
        "credential digest": hashlib.sha256(credential.encode()).hexdigest(),
        "rotated credential": rotated,
        "recovery code": recovery[0],
        "recovery digest": hashlib.sha256(recovery[0].replace("-", "").encode()).hexdigest(),
    }
    leaked = [name for name, value in secrets.items() if value in logged]
    assert not leaked, leaked
