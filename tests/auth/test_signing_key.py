"""The signing key of an installation with no key configured: never the built-in one."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest

from ctafleet.config import DEFAULT_SECRET_KEY, KEY_FILE, Settings, with_signing_key


def _development(data_dir: Path, **extra: object) -> Settings:
    return Settings(environment="development", data_dir=data_dir, **extra)  # type: ignore[arg-type]


def test_a_zero_setup_installation_gets_a_key_of_its_own(tmp_path: Path) -> None:
    settings = with_signing_key(_development(tmp_path))
    key = settings.auth.secret_key.get_secret_value()
    assert key != DEFAULT_SECRET_KEY
    assert len(key) >= 48
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Every process on the data directory (serve, demo, workers) signs with the same key...
    again = with_signing_key(_development(tmp_path))
    assert again.auth.secret_key.get_secret_value() == key
    # ...and another installation with another.
    other = with_signing_key(_development(tmp_path / "other"))
    assert other.auth.secret_key.get_secret_value() != key


def test_a_configured_key_is_kept(tmp_path: Path) -> None:
    settings = with_signing_key(_development(tmp_path, auth={"secret_key": "x" * 10 + "yz" * 20}))
    assert settings.auth.secret_key.get_secret_value() == "x" * 10 + "yz" * 20
    assert not (tmp_path / KEY_FILE).exists()


async def test_serve_never_accepts_a_token_forged_with_the_builtin_key(tmp_path: Path) -> None:
    """The attack: take a real token, re-sign it with the public default key. Refused, because
    the installation signs with its own key; the genuine token still works."""
    import httpx

    from ctafleet.app import create_app
    from ctafleet.db.migrate import upgrade
    from ctafleet.kernel.clock import FrozenClock
    from tests.kit.app import Api, Backend, make_tenant

    url = f"sqlite+aiosqlite:///{tmp_path}/x.db"
    await upgrade(url)
    app = create_app(_development(tmp_path, database={"url": url}), clock=FrozenClock())
    state = app.state.ctafleet
    assert state.settings.auth.secret_key.get_secret_value() != DEFAULT_SECRET_KEY
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        api = Api(client, app, state.settings, state.clock, Backend("sqlite", url, url))
        t = await make_tenant(api, roles=["viewer"])
        genuine = t.tokens["viewer"]
        claims = jwt.decode(genuine, options={"verify_signature": False})
        forged = jwt.encode(claims, DEFAULT_SECRET_KEY, algorithm="HS256")
        ok = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {genuine}"})
        assert ok.status_code == 200, ok.text
        r = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401
    await state.db.dispose()


def test_the_builtin_key_in_use_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ctafleet.app import create_app

    settings = Settings(
        environment="test",
        data_dir=tmp_path,
        database={"url": f"sqlite:///{tmp_path}/x.db"},
        observability={"log_level": "WARNING", "log_json": True},
    )
    create_app(settings)
    out = capsys.readouterr().out
    assert "builtin_signing_key" in out
    assert DEFAULT_SECRET_KEY not in out
