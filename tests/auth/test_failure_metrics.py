"""ctafleet_auth_failures_total: each refused authentication counted once, under its kind."""

from __future__ import annotations

from ctafleet.observability.metrics import REGISTRY
from tests.auth.helpers import (
    ME,
    enrol_totp,
    login,
    login_ok,
    me,
    refresh,
    totp_code,
    unique_email,
    wrong_totp_code,
)
from tests.kit.app import Api
from tests.kit.problems import assert_problem, assert_unauthorized

KINDS = ("password", "mfa", "token", "refresh")


def _counts() -> dict[str, float]:
    return {
        kind: REGISTRY.get_sample_value("ctafleet_auth_failures_total", {"kind": kind}) or 0.0
        for kind in KINDS
    }


async def test_refusals_are_counted_by_kind_and_successes_are_not(api: Api) -> None:
    t = await api.tenant(roles=["viewer"], login=False)
    email = t.users["viewer"].email
    pair = await login_ok(api, email)
    secret, _ = await enrol_totp(api, pair["access_token"])
    before = _counts()

    assert_problem(await login(api, email, "Not-The-Password-42"), 401, "invalid-credentials")
    assert_problem(await login(api, unique_email()), 401, "invalid-credentials")
    # Asking for the code is a step of a normal login, not a failure.
    assert_problem(await login(api, email), 401, "mfa-code-required")
    assert_problem(
        await login(api, email, totp_code=wrong_totp_code(api, secret)), 401, "invalid-credentials"
    )
    assert_unauthorized(await me(api, pair["access_token"] + "x"))
    assert_unauthorized(await api.client.get(ME))  # no token at all: not a failure
    assert_problem(await refresh(api, "ctr_" + "B" * 43), 401, "invalid-refresh-token")
    good = await login_ok(api, email, totp_code=totp_code(api, secret))
    assert (await me(api, good["access_token"])).status_code == 200
    assert (await refresh(api, good["refresh_token"])).status_code == 200

    after = _counts()
    assert {k: after[k] - before[k] for k in KINDS} == {
        "password": 2,
        "mfa": 1,
        "token": 1,
        "refresh": 1,
    }
