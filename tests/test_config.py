"""Settings: production refuses unsafe values by variable name; the generated docs are current."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ctafleet.cli import app as cli
from ctafleet.config import (
    DEFAULT_SECRET_KEY,
    Settings,
    format_validation_error,
    load_settings,
    settings_problems,
)
from ctafleet.config_docs import iter_fields, render_env_example, render_markdown

ROOT = Path(__file__).resolve().parents[1]
GOOD_KEY = secrets.token_urlsafe(48)
PG_URL = "postgresql+asyncpg://ctafleet_app@db.internal:5432/ctafleet"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CTAFLEET_ setting of the surrounding shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("CTAFLEET_") and not name.startswith("CTAFLEET_TEST_"):
            monkeypatch.delenv(name)


def production(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "environment": "production",
        "auth": {"secret_key": GOOD_KEY},
        "database": {"url": PG_URL},
    }
    values.update(overrides)
    return values


def refusal(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as exc:
        Settings(**production(**overrides))
    return "\n".join(format_validation_error(exc.value))


def test_safe_production_settings_load() -> None:
    s = Settings(**production())
    assert s.environment.value == "production"
    assert s.database_url == PG_URL


@pytest.mark.parametrize(
    ("overrides", "variable", "hint"),
    [
        ({"auth": {"secret_key": DEFAULT_SECRET_KEY}}, "CTAFLEET_AUTH__SECRET_KEY", "default"),
        ({"auth": {"secret_key": ""}}, "CTAFLEET_AUTH__SECRET_KEY", "missing"),
        ({"auth": {"secret_key": "x" * 31}}, "CTAFLEET_AUTH__SECRET_KEY", "31 bytes"),
        ({"debug": True}, "CTAFLEET_DEBUG", "false"),
        (
            {"http": {"cors_origins": ["*"], "cors_allow_credentials": True}},
            "CTAFLEET_HTTP__CORS_ORIGINS",
            "CTAFLEET_HTTP__CORS_ALLOW_CREDENTIALS",
        ),
        ({"database": {"url": ""}}, "CTAFLEET_DATABASE__URL", "SQLite"),
        ({"database": {"url": "sqlite+aiosqlite:///tmp/x.db"}}, "CTAFLEET_DATABASE__URL", "SQLite"),
        ({"database": {"url": "sqlite:///tmp/x.db"}}, "CTAFLEET_DATABASE__URL", "SQLite"),
    ],
)
def test_production_refuses_unsafe_settings(
    overrides: dict[str, Any], variable: str, hint: str
) -> None:
    message = refusal(**overrides)
    assert variable in message, message
    assert hint in message, message
    assert len(message.splitlines()) == 1, message


def test_unsafe_settings_are_fine_outside_production() -> None:
    s = Settings(
        environment="development",
        debug=True,
        http={"cors_origins": ["*"], "cors_allow_credentials": True},
    )
    assert s.debug
    assert s.database_url.startswith("sqlite+aiosqlite:///")


def test_a_32_byte_random_key_is_enough() -> None:
    assert Settings(**production(auth={"secret_key": secrets.token_urlsafe(24)}))


@pytest.mark.parametrize("key", [" " * 32, "k" * 40, "ab" * 32, "abc" * 11])
def test_low_entropy_keys_are_refused(key: str) -> None:
    assert "too predictable" in refusal(auth={"secret_key": key})


@pytest.mark.parametrize("credentials", [True, False])
def test_the_null_origin_is_refused(credentials: bool) -> None:
    message = refusal(
        http={
            "cors_origins": ["https://fleet.example.org", "null"],
            "cors_allow_credentials": credentials,
        }
    )
    assert "CTAFLEET_HTTP__CORS_ORIGINS" in message
    assert "'null'" in message


def test_every_production_problem_is_listed_at_once() -> None:
    message = refusal(
        debug=True,
        auth={"secret_key": DEFAULT_SECRET_KEY},
        http={"cors_origins": ["*"], "cors_allow_credentials": True},
        database={"url": ""},
    )
    lines = message.splitlines()
    assert len(lines) == 4, lines
    for variable in ("AUTH__SECRET_KEY", "DEBUG", "HTTP__CORS_ORIGINS", "DATABASE__URL"):
        assert any(f"CTAFLEET_{variable}" in line for line in lines), (variable, lines)


def test_invalid_values_do_not_hide_production_problems() -> None:
    lines = settings_problems(
        **production(debug=True, http={"max_body_bytes": 5}, observability={"log_level": "LOUD"})
    )
    assert any(line.startswith("CTAFLEET_HTTP__MAX_BODY_BYTES:") for line in lines), lines
    assert any(line.startswith("CTAFLEET_OBSERVABILITY__LOG_LEVEL:") for line in lines), lines
    assert any("CTAFLEET_DEBUG must be false" in line for line in lines), lines


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTAFLEET_DATABASE__URL", PG_URL)
    monkeypatch.setenv("CTAFLEET_DATABASE__POOL_SIZE", "3")
    monkeypatch.setenv("CTAFLEET_HTTP__CORS_ORIGINS", '["https://fleet.example.org"]')
    monkeypatch.setenv("CTAFLEET_AUTH__LOGIN_RATE_LIMIT", "5/minute")
    monkeypatch.setenv("CTAFLEET_DEBUG", "true")
    s = load_settings()
    assert s.database.url == PG_URL
    assert s.database_url == PG_URL
    assert s.database_admin_url == PG_URL  # falls back to the application URL
    assert s.database.pool_size == 3
    assert s.http.cors_origins == ["https://fleet.example.org"]
    assert s.auth.login_rate_limit == "5/minute"
    assert s.debug is True


def test_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "app.env"
    env.write_text(f"CTAFLEET_DATABASE__URL={PG_URL}\nCTAFLEET_REDIS__URL=redis://cache:6379/0\n")
    s = load_settings(env)
    assert s.database.url == PG_URL
    assert s.redis.url == "redis://cache:6379/0"
    # The process environment wins over the file.
    monkeypatch.setenv("CTAFLEET_REDIS__URL", "redis://other:6379/1")
    assert load_settings(env).redis.url == "redis://other:6379/1"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("postgresql://app@db:5432/fleet", "postgresql+asyncpg://app@db:5432/fleet"),
        ("postgres://app:pw@db/fleet", "postgresql+asyncpg://app:pw@db/fleet"),
        ("postgresql+asyncpg://app@db/fleet", "postgresql+asyncpg://app@db/fleet"),
        ("sqlite:////var/lib/ctafleet/x.db", "sqlite+aiosqlite:////var/lib/ctafleet/x.db"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, stored: str) -> None:
    s = Settings(database={"url": given, "admin_url": given})
    assert s.database.url == stored
    assert s.database.admin_url == stored


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("mysql://app@db/fleet", "unsupported database"),
        ("postgresql+psycopg2://app@db/fleet", "postgresql+asyncpg"),
        ("not a url", "not a database URL"),
    ],
)
def test_unusable_database_urls_are_refused(url: str, hint: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(database={"url": url})
    lines = format_validation_error(exc.value)
    assert lines[0].startswith("CTAFLEET_DATABASE__URL:"), lines
    assert hint in lines[0], lines


def test_validation_messages_never_echo_a_value() -> None:
    secret = "sup3r-s3cret-value"
    with pytest.raises(ValidationError) as exc:
        Settings(
            database={"url": f"mysql://app:{secret}@db/fleet"},
            auth={"access_token_ttl_s": secret},
        )
    assert secret not in "\n".join(format_validation_error(exc.value))


def test_config_check_lists_every_problem_and_fails(tmp_path: Path) -> None:
    env = tmp_path / "prod.env"
    env.write_text(
        "\n".join(
            [
                "CTAFLEET_ENVIRONMENT=production",
                "CTAFLEET_DEBUG=true",
                "CTAFLEET_AUTH__SECRET_KEY=too-short",
                'CTAFLEET_HTTP__CORS_ORIGINS=["*"]',
                "CTAFLEET_HTTP__CORS_ALLOW_CREDENTIALS=true",
                "CTAFLEET_HTTP__MAX_BODY_BYTES=12",
            ]
        )
    )
    result = CliRunner().invoke(cli, ["config", "check", "--env-file", str(env)])
    assert result.exit_code != 0
    out = result.output
    for variable in (
        "CTAFLEET_DEBUG",
        "CTAFLEET_AUTH__SECRET_KEY",
        "CTAFLEET_HTTP__CORS_ORIGINS",
        "CTAFLEET_DATABASE__URL",
        "CTAFLEET_HTTP__MAX_BODY_BYTES",
    ):
        assert variable in out, (variable, out)
    assert "too-short" not in out  # the secret itself is never printed
    assert "ok:" not in out


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    env = tmp_path / "prod.env"
    env.write_text(
        f"CTAFLEET_ENVIRONMENT=production\nCTAFLEET_AUTH__SECRET_KEY={GOOD_KEY}\n"
        f"CTAFLEET_DATABASE__URL={PG_URL}\nCTAFLEET_REDIS__URL=redis://cache:6379/0\n"
    )
    result = CliRunner().invoke(cli, ["config", "check", "--env-file", str(env)])
    assert result.exit_code == 0, result.output
    assert "ok: environment=production, database=PostgreSQL, redis=on" in result.output
    assert GOOD_KEY not in result.output


def test_config_check_refuses_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["config", "check", "--env-file", str(tmp_path / "missing.env")]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_every_setting_is_documented() -> None:
    fields = list(iter_fields())
    assert len(fields) > 20
    for _group, variable, field, _default in fields:
        assert field.description, f"{variable} has no description"
        assert variable in render_markdown()
        assert f"# {variable}=" in render_env_example()
    # Secrets never appear with a value in the generated files.
    assert DEFAULT_SECRET_KEY not in render_markdown()
    assert DEFAULT_SECRET_KEY not in render_env_example()


def test_generated_docs_are_current() -> None:
    fix = "regenerate them with `ctafleet config docs`"
    docs = ROOT / "docs" / "configuration.md"
    env = ROOT / ".env.example"
    assert docs.exists(), fix
    assert env.exists(), fix
    assert docs.read_text() == render_markdown(), f"docs/configuration.md is stale: {fix}"
    assert env.read_text() == render_env_example(), f".env.example is stale: {fix}"


def test_config_docs_command_writes_both_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "docs", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "docs" / "configuration.md").read_text() == render_markdown()
    assert (tmp_path / ".env.example").read_text() == render_env_example()


# --- settings from files (compose and Kubernetes secrets) ----------------------------------


def test_a_setting_comes_from_the_file_its_file_variable_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, url, origins = tmp_path / "key", tmp_path / "url", tmp_path / "origins"
    key.write_text(GOOD_KEY + "\n")  # as `echo` writes it: the newline is not part of the key
    url.write_text(PG_URL)
    origins.write_text('["https://fleet.example.org"]\n')
    monkeypatch.setenv("CTAFLEET_ENVIRONMENT", "production")
    monkeypatch.setenv("CTAFLEET_AUTH__SECRET_KEY_FILE", str(key))
    monkeypatch.setenv("CTAFLEET_DATABASE__URL_FILE", str(url))
    monkeypatch.setenv("CTAFLEET_HTTP__CORS_ORIGINS_FILE", str(origins))
    settings = load_settings()
    assert settings.auth.secret_key.get_secret_value() == GOOD_KEY
    assert settings.database_url == PG_URL
    assert settings.http.cors_origins == ["https://fleet.example.org"]


def test_a_setting_and_its_file_both_set_are_refused_by_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "key").write_text(GOOD_KEY)
    monkeypatch.setenv("CTAFLEET_AUTH__SECRET_KEY", GOOD_KEY)
    monkeypatch.setenv("CTAFLEET_AUTH__SECRET_KEY_FILE", str(tmp_path / "key"))
    result = CliRunner().invoke(cli, ["config", "check"])
    assert result.exit_code == 2
    assert "CTAFLEET_AUTH__SECRET_KEY and CTAFLEET_AUTH__SECRET_KEY_FILE are both set" in (
        result.output
    )


def test_an_unreadable_setting_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTAFLEET_DATABASE__URL_FILE", str(tmp_path / "missing"))
    result = CliRunner().invoke(cli, ["config", "check"])
    assert result.exit_code == 2
    assert f"CTAFLEET_DATABASE__URL_FILE: cannot read {tmp_path / 'missing'}" in result.output
    assert "Traceback" not in result.output


def test_settings_come_from_the_files_of_a_secrets_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kubernetes Secret mounted as a volume: one file per key, each key a variable's name,
    each file a symbolic link into the volume's current data directory."""
    data = tmp_path / "secrets" / "..data"
    data.mkdir(parents=True)
    (data / "CTAFLEET_AUTH__SECRET_KEY").write_text(GOOD_KEY)
    (data / "CTAFLEET_DATABASE__URL").write_text(PG_URL + "\n")
    for name in ("CTAFLEET_AUTH__SECRET_KEY", "CTAFLEET_DATABASE__URL"):
        (tmp_path / "secrets" / name).symlink_to(Path("..data") / name)
    monkeypatch.setenv("CTAFLEET_ENVIRONMENT", "production")
    monkeypatch.setenv("CTAFLEET_SECRETS_DIR", str(tmp_path / "secrets"))
    settings = load_settings()
    assert settings.auth.secret_key.get_secret_value() == GOOD_KEY
    assert settings.database_url == PG_URL


@pytest.mark.parametrize("other", ["env", "file"])
def test_a_secrets_directory_file_and_another_source_are_refused(
    other: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "CTAFLEET_AUTH__SECRET_KEY").write_text(GOOD_KEY)
    monkeypatch.setenv("CTAFLEET_SECRETS_DIR", str(tmp_path))
    if other == "env":
        monkeypatch.setenv("CTAFLEET_AUTH__SECRET_KEY", GOOD_KEY)
    else:
        monkeypatch.setenv(
            "CTAFLEET_AUTH__SECRET_KEY_FILE", str(tmp_path / "CTAFLEET_AUTH__SECRET_KEY")
        )
    result = CliRunner().invoke(cli, ["config", "check"])
    assert result.exit_code == 2
    assert "CTAFLEET_SECRETS_DIR/CTAFLEET_AUTH__SECRET_KEY are both set: keep one" in result.output
    assert GOOD_KEY not in result.output


def test_no_setting_name_is_another_settings_file_variable() -> None:
    """CTAFLEET_X_FILE names X's file: it must never also be a setting of its own."""
    names = {var for _group, var, _field, _default in iter_fields()}
    assert not {n for n in names if n.endswith("_FILE") and n[: -len("_FILE")] in names}
