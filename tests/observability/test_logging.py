"""No token, password or secret reaches a log line, whatever shape it is logged in."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import structlog

from ctafleet.auth.tokens import new_secret
from ctafleet.config import Settings
from ctafleet.observability.logging import REDACTED, configure_logging, redact_secrets

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpM"
OPAQUE = "opaque-token-Zq81xK0pLm"
PASSWORD = "Hunter2-Correct-Staple"
DB_PASSWORD = "pg-S3cr3t@with-at"
REFRESH = new_secret("ctr")
DEVICE = new_secret("ctd")
SECRETS = [JWT, OPAQUE, PASSWORD, DB_PASSWORD, REFRESH, DEVICE, "S3cr3t", "with-at"]
OURS = {"ctafleet.test", "sqlalchemy.engine", "uvicorn.error", "third.party"}


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The app's real logging pipeline, writing into a buffer instead of stdout."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(Settings(observability={"log_level": "DEBUG", "log_json": True}))
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(root.handlers[0].formatter)
    root.handlers = [handler]

    def read() -> list[dict[str, Any]]:
        raw = buffer.getvalue()
        for secret in SECRETS:
            assert secret not in raw, f"{secret!r} leaked into: {raw}"
        # Only the lines these tests wrote: a background thread may log meanwhile.
        parsed = [json.loads(line) for line in raw.splitlines()]
        return [line for line in parsed if line.get("logger") in OURS]

    yield read
    root.handlers, root.level = saved
    root.setLevel(saved[1])


def test_secret_fields_are_redacted(lines: Callable[[], list[dict[str, Any]]]) -> None:
    log = structlog.get_logger("ctafleet.test")
    log.info(
        "login",
        password=PASSWORD,
        new_password=PASSWORD,
        access_token=JWT,
        refresh_token=REFRESH,
        Authorization=f"Bearer {OPAQUE}",
        credential=DEVICE,
        email="ada@example.org",
        attempts=3,
    )
    [line] = lines()
    for key in ("password", "new_password", "access_token", "refresh_token", "Authorization"):
        assert line[key] == REDACTED, key
    assert line["credential"] == REDACTED
    # Everything else is left as it was.
    assert line["email"] == "ada@example.org"
    assert line["attempts"] == 3
    assert line["event"] == "login"
    assert line["level"] == "info"
    assert line["logger"] == "ctafleet.test"


def test_secret_values_are_redacted_wherever_they_appear(
    lines: Callable[[], list[dict[str, Any]]],
) -> None:
    log = structlog.get_logger("ctafleet.test")
    log.warning(f"header was Bearer {OPAQUE}")
    log.warning("lowercase", header=f"authorization: bearer {OPAQUE}")
    log.info("jwt", detail=f"got {JWT} from the client")
    log.info("secrets", detail=f"refresh {REFRESH} and device {DEVICE}")
    log.info("url", database=f"postgresql+asyncpg://app:{DB_PASSWORD}@db:5432/fleet")
    log.info("query", path=f"/login?user=ada&password={PASSWORD}&next=/")
    log.info("nested", ctx={"headers": [("authorization", f"Bearer {OPAQUE}")], "a": [[JWT]]})
    log.info("deep", ctx={"a": {"b": {"c": {"d": {"e": {"f": {"g": f"Bearer {OPAQUE}"}}}}}}})
    log.info("object", url=httpx.URL(f"https://ada:{PASSWORD}@api.example.org/x"))
    log.info("bytes", body=f"password={PASSWORD}".encode())
    out = lines()
    assert len(out) == 10
    by_event = {line["event"]: line for line in out}
    assert by_event["url"]["database"] == f"postgresql+asyncpg://app:{REDACTED}@db:5432/fleet"
    assert by_event["query"]["path"] == f"/login?user=ada&password={REDACTED}&next=/"
    assert out[0]["event"] == f"header was Bearer {REDACTED}"
    assert by_event["object"]["url"] == f"https://ada:{REDACTED}@api.example.org/x"


def test_exceptions_and_stdlib_loggers_are_redacted(
    lines: Callable[[], list[dict[str, Any]]],
) -> None:
    log = structlog.get_logger("ctafleet.test")
    try:
        raise ValueError(f"token {JWT} rejected for password={PASSWORD}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("sqlalchemy.engine").warning(
        "connect to %s failed", f"postgresql://app:{DB_PASSWORD}@db/fleet"
    )
    logging.getLogger("uvicorn.error").error("Authorization: Bearer %s", OPAQUE)
    try:
        raise RuntimeError(f"refresh {REFRESH}")
    except RuntimeError:
        logging.getLogger("third.party").exception("boom")
    out = lines()
    assert len(out) == 4
    assert "ValueError" in out[0]["exception"]
    assert REDACTED in out[0]["exception"]
    assert out[1]["logger"] == "sqlalchemy.engine"
    assert out[1]["event"] == f"connect to postgresql://app:{REDACTED}@db/fleet failed"
    assert "RuntimeError" in out[3]["exception"]


def test_request_context_is_kept(lines: Callable[[], list[dict[str, Any]]]) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-12345678", token=OPAQUE)
    try:
        structlog.get_logger("ctafleet.test").info("with context")
    finally:
        structlog.contextvars.clear_contextvars()
    [line] = lines()
    assert line["request_id"] == "req-12345678"
    assert line["token"] == REDACTED


def test_processor_on_its_own() -> None:
    event = {
        "event": f"Bearer {OPAQUE}",
        "password": PASSWORD,
        "n": 1.5,
        "flag": True,
        "none": None,
    }
    out = redact_secrets(None, "info", dict(event))
    assert out == {
        "event": f"Bearer {REDACTED}",
        "password": REDACTED,
        "n": 1.5,
        "flag": True,
        "none": None,
    }


def test_human_lines_on_a_terminal_json_otherwise(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from ctafleet.config import Settings
    from ctafleet.observability.logging import json_lines

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    auto = Settings(environment="test", data_dir=tmp_path)
    monkeypatch.setattr("sys.stdout", Tty())
    assert json_lines(auto) is False
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert json_lines(auto) is True
    forced = Settings(environment="test", data_dir=tmp_path, observability={"log_json": True})
    monkeypatch.setattr("sys.stdout", Tty())
    assert json_lines(forced) is True
