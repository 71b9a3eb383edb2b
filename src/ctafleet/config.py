"""Settings: one validated object, read from `CTAFLEET_*` variables (nested with `__`).

`docs/configuration.md` and `.env.example` are generated from this module by
`ctafleet config docs`; edit the field descriptions here, never the generated files.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import os
import secrets
from collections import Counter
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_SECRET_KEY = "change-me-development-only-secret-key"  # noqa: S105 - the sentinel refused in production
MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 128


# The async driver each supported database needs; a URL without one gets it.
ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}


def normalise_database_url(value: str) -> str:
    """`postgresql://`, `postgres://` and `sqlite://` become their async-driver forms."""
    if not value:
        return value
    if value.startswith("postgres://"):
        value = "postgresql://" + value[len("postgres://") :]
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(
            "not a database URL; expected postgresql+asyncpg://user@host:5432/db"
        ) from None
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend not in ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}; use PostgreSQL (or SQLite)")
    wanted = ASYNC_DRIVERS[backend]
    if "+" not in url.drivername:
        url = url.set(drivername=f"{backend}+{wanted}")
    elif driver != wanted:
        raise ValueError(f"driver {driver!r} is not supported; use {backend}+{wanted}://")
    return url.render_as_string(hide_password=False)


def is_sqlite_url(value: str) -> bool:
    return value.split(":", 1)[0].split("+", 1)[0] == "sqlite"


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class DatabaseSettings(BaseModel):
    url: str = Field(
        "",
        description="SQLAlchemy URL the application connects with. Empty: a SQLite file in the "
        "data directory. PostgreSQL: `postgresql+asyncpg://ctafleet_app@db:5432/ctafleet` "
        "(a role without BYPASSRLS, so row-level security applies); `postgresql://` and "
        "`sqlite://` URLs get the async driver.",
    )
    admin_url: str = Field(
        "",
        description="URL used by `ctafleet db upgrade` (the table owner). Empty: same as `url`.",
    )
    app_role: str = Field(
        "",
        description="PostgreSQL role the application connects as; `db upgrade` grants it DML on "
        "every table (audit events: insert and select only). Empty: no grants are made.",
        pattern=r"^$|^[a-z_][a-z0-9_]{0,62}$",
    )
    pool_size: int | None = Field(
        None,
        ge=1,
        le=200,
        description="Connections kept per process. Default: 10 on PostgreSQL, 2 on SQLite "
        "(SQLite writes one transaction at a time; more connections only contend for it).",
    )
    max_overflow: int | None = Field(
        None,
        ge=0,
        le=200,
        description="Extra connections under load. Default: 10 on PostgreSQL, 0 on SQLite.",
    )
    echo: bool = Field(False, description="Log every SQL statement (development only).")
    ping_after_idle_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="PostgreSQL: check a pooled connection before use when it has been idle this "
        "long (a dropped one is replaced). 0: check before every use (a round trip per request).",
    )

    @field_validator("url", "admin_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalise_database_url(value.strip())


class RedisSettings(BaseModel):
    url: str = Field(
        "",
        description="Redis URL (`redis://host:6379/0`). Empty: in-process queue, cache and rate "
        "limits (one process only).",
    )


class AuthSettings(BaseModel):
    secret_key: SecretStr = Field(
        SecretStr(DEFAULT_SECRET_KEY),
        description="HMAC key that signs access tokens; at least 32 bytes in production. "
        "Generate with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`.",
    )
    issuer: str = Field("ctafleet", description="`iss` claim of access tokens.")
    audience: str = Field("ctafleet-api", description="`aud` claim of access tokens.")
    access_token_ttl_s: int = Field(900, ge=60, le=86400, description="Access token lifetime.")
    refresh_token_ttl_s: int = Field(
        30 * 86400, ge=3600, le=365 * 86400, description="Refresh token lifetime."
    )
    login_rate_limit: str = Field(
        "100/15 minutes",
        description="Limit per client IP on login, refresh and MFA endpoints "
        "(`limits` notation: `N/period`).",
    )
    api_rate_limit: str = Field(
        "1200/minute", description="Limit per authenticated user on every other API route."
    )
    min_password_length: int = Field(12, ge=12, le=128, description="Minimum password length.")
    session_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="Seconds an API process trusts its last check of a login session (user "
        "active, session not revoked, role). A revocation through another replica takes effect "
        "within this bound; through the same process at once. 0: check on every request.",
    )


class TelemetrySettings(BaseModel):
    max_batch_points: int = Field(
        10000, ge=1, le=100000, description="Most positions accepted in one ingest request."
    )
    batch_max_body_bytes: int = Field(
        8 * 1_048_576,
        ge=1024,
        le=100 * 1_048_576,
        description="Largest body of `POST /api/v1/telemetry` (every other request: "
        "`CTAFLEET_HTTP__MAX_BODY_BYTES`). 10,000 points with every field and a few attributes "
        "come to about 3 MB.",
    )
    queue_max_entries: int = Field(
        200_000,
        ge=100,
        description="Queue depth (messages waiting) past which ingest answers 503 with "
        "Retry-After instead of growing without bound.",
    )
    queue_shards: int = Field(
        16,
        ge=1,
        le=1024,
        description="Queue streams; a device always maps to one, and one worker at a time "
        "consumes each. More shards than workers spread the load; changing it while points "
        "are queued reorders those devices' points once.",
    )
    worker_batch_entries: int = Field(
        2000, ge=1, le=100_000, description="Messages the worker writes per transaction."
    )
    credential_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long ingest trusts a device credential it checked: a revoked or "
        "rotated credential stops working within this time on every replica.",
    )
    retention_days: int = Field(
        365,
        ge=1,
        le=36500,
        description="Days positions are kept for a tenant that set no retention of its own "
        "(`ctafleet telemetry prune` deletes older ones).",
    )
    live_client_queue: int = Field(
        64,
        ge=1,
        le=10_000,
        description="Committed batches (each one frame per position or event) a live-feed "
        "WebSocket client may fall behind by before it is disconnected (close code 1013), so "
        "a slow client never holds up the others.",
    )
    live_recheck_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How often a live-feed connection is checked again: its token and login "
        "session (an expired token closes it with 4401), its role, and the vehicles its "
        "department filter matches.",
    )
    live_ping_s: float = Field(
        25.0,
        gt=0,
        le=300,
        description="Seconds of silence after which the live feed sends a ping message (keeps "
        "proxies from closing an idle connection).",
    )
    queue_prefix: str = Field(
        "ctafleet:telemetry",
        pattern=r"^[A-Za-z0-9:_.-]{1,64}$",
        description="Prefix of the queue's Redis keys (streams, shard leases): deployments "
        "sharing one Redis need different prefixes.",
    )
    lease_ttl_s: float = Field(
        15.0,
        ge=1,
        le=300,
        description="A worker's hold on a shard lasts this long unless renewed: the shards of a "
        "worker that died pass to the others after at most this time.",
    )
    offline_sweep_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="How often the worker holding shard 0 looks for devices silent longer "
        "than their rules allow (15 minutes by default) and reports them device_offline while "
        "they still are; 0: never (the event then comes only with the next point).",
    )
    in_process_worker: bool = Field(
        True,
        description="Without Redis, the API process drains its in-process queue itself. With "
        "Redis, run `ctafleet worker` (this setting is then ignored).",
    )


class MqttSettings(BaseModel):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker the MQTT bridge (`ctafleet mqtt`) subscribes to: "
        "`mqtt://[user:password@]host[:port]`, or `mqtts://` for TLS (port 8883 by default, "
        "the broker's certificate verified against `CTAFLEET_MQTT__CA_FILE` or the system's "
        "CA certificates).",
    )
    ca_file: str = Field(
        "",
        description="PEM file of the certificate authorities an `mqtts://` broker's certificate "
        "must chain to (a private CA); empty: the system's CA certificates. The host name is "
        "always checked.",
    )
    client_id: str = Field(
        "ctafleet-bridge",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="The bridge's MQTT client id, which names its persistent session at the "
        "broker (messages wait there while the bridge is down). Two bridges with one id push "
        "each other off; each replica needs its own.",
    )
    topic_prefix: str = Field(
        "ctafleet/v1/telemetry",
        pattern=r"^[^+#]{1,128}$",
        description="Devices publish to `<prefix>/<device unique id>`; the bridge subscribes "
        "to `<prefix>/+`.",
    )
    session_expiry_s: int = Field(
        86400,
        ge=60,
        le=4_294_967_294,
        description="How long the broker keeps the bridge's session (subscription and "
        "unacknowledged messages) after it disconnects.",
    )
    keepalive_s: int = Field(
        30,
        ge=5,
        le=65535,
        description="MQTT keep-alive in seconds: a dead connection is noticed within 1.5 times "
        "this.",
    )
    inflight: int = Field(
        100,
        ge=1,
        le=65535,
        description="Receive Maximum: most unacknowledged messages the broker sends the bridge "
        "at once; the rest wait at the broker while the queue is full.",
    )
    protocol: str = Field(
        "5",
        pattern=r"^(5|3\.1\.1)$",
        description="MQTT version: `5`, or `3.1.1` for a broker without MQTT 5 (the session "
        "then lasts as long as the broker's settings say, and the broker's own limit on "
        "unacknowledged messages replaces `inflight`).",
    )

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        try:
            parts.port  # noqa: B018 - raises for a port that is no number
        except ValueError:
            raise ValueError("the port is not a number") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://[user:password@]host[:port] or mqtts://...")
        return value.strip()


class StorageSettings(BaseModel):
    backend: str = Field(
        "local", pattern="^(local|azure)$", description="Object storage: `local` or `azure`."
    )
    local_path: str = Field(
        "", description="Directory for local object storage. Empty: `<data dir>/objects`."
    )
    azure_connection_string: SecretStr = Field(
        SecretStr(""), description="Azure Blob Storage connection string."
    )
    azure_container: str = Field("ctafleet", description="Azure Blob container.")


class NotificationSettings(BaseModel):
    smtp_url: str = Field("", description="SMTP URL for e-mail (`smtp://user@host:587`).")
    email_from: str = Field("ctafleet@localhost", description="Sender address of e-mail.")


class ObservabilitySettings(BaseModel):
    log_level: str = Field(
        "INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", description="Lowest level logged."
    )
    log_json: bool | None = Field(
        None,
        description="JSON log lines (true), human-readable lines (false). Empty: JSON, except on "
        "an interactive terminal.",
    )
    traces_enabled: bool = Field(False, description="Export OpenTelemetry traces.")
    otlp_endpoint: str = Field(
        "",
        description="OTLP/HTTP collector base URL for traces (`http://otel-collector:4318`); "
        "empty: spans are made but not exported.",
    )
    trace_sample_ratio: float = Field(0.1, ge=0, le=1, description="Share of traces sampled.")
    azure_monitor_connection_string: SecretStr = Field(
        SecretStr(""),
        description="Application Insights connection string: with traces_enabled, traces go to "
        "Azure Monitor through its OpenTelemetry distro (install `ctafleet[azure]`) instead of "
        "OTLP.",
    )
    metrics_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token Prometheus must send to `/metrics`. Empty: `/metrics` is open "
        "(keep it off the public ingress).",
    )


class BackupSettings(BaseModel):
    retention_days: int = Field(30, ge=1, le=3650, description="Days logical backups are kept.")
    age_recipient: str = Field(
        "",
        description="age public key(s) (`age1...`) backups are encrypted to, comma-separated "
        "(several while a key is being rotated); the private key is held elsewhere.",
    )
    keep_daily: int = Field(
        0, ge=0, le=3650, description="`prune` also keeps the newest backup of this many days."
    )
    keep_weekly: int = Field(
        0, ge=0, le=520, description="`prune` also keeps the newest backup of this many weeks."
    )
    keep_monthly: int = Field(
        0, ge=0, le=240, description="`prune` also keeps the newest backup of this many months."
    )
    prefix: str = Field(
        "backups/",
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._=+-]*/)*$",
        description="Key prefix of logical backups in object storage (ends with `/`).",
    )
    compression_level: int = Field(
        3, ge=1, le=19, description="zstd level of logical backups (higher: smaller, slower)."
    )
    identity_file: str = Field(
        "",
        description="age identity (private key) file used by `backup verify` and `restore`. "
        "Set it only where those run, never on the host that creates backups.",
    )
    scratch_dir: str = Field(
        "",
        description="Directory for temporary files (SQLite snapshot, parallel restore). Empty: "
        "the system temporary directory.",
    )
    scratch_database_url: str = Field(
        "",
        description="PostgreSQL server on which `backup verify` creates (and drops) its scratch "
        "database. Empty: the server of the database admin URL.",
    )
    pg_bin_dir: str = Field(
        "",
        description="Directory of `pg_dump`/`pg_restore` (at least the server's major version). "
        "Empty: found on PATH.",
    )
    metrics_file: str = Field(
        "",
        description="Prometheus text file the backup commands write their metrics to "
        "(node-exporter textfile collector, name ending in `.prom`). Empty: none.",
    )
    pushgateway_url: str = Field(
        "", description="Prometheus Pushgateway the backup commands push metrics to. Empty: none."
    )
    notify_webhook_url: SecretStr = Field(
        SecretStr(""), description="URL that receives a JSON POST when a backup command fails."
    )
    notify_email: list[str] = Field(
        default_factory=list,
        description="Addresses e-mailed when a backup command fails (JSON list; sent through "
        "`CTAFLEET_NOTIFICATIONS__SMTP_URL`).",
    )
    notify_on_success: bool = Field(
        False, description="Also notify when a backup command succeeds."
    )


class HttpSettings(BaseModel):
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (JSON list). Empty: no cross-origin access.",
    )
    cors_allow_credentials: bool = Field(False, description="Allow cookies/credentials in CORS.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=100 * 1_048_576, description="Largest request body accepted."
    )
    trusted_hosts: list[str] = Field(
        default_factory=lambda: ["*"], description="Host header allow-list (JSON list)."
    )


class OidcSettings(BaseModel):
    """Single sign-on with OpenID Connect (Microsoft Entra ID or any provider): the platform's
    side. Each tenant's provider (issuer, client id) is the tenant's configuration
    (`PUT /api/v1/tenant/sso`)."""

    client_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Client secrets by tenant slug (JSON object, `{"acme": "..."}`). A '
        "secret here wins over one stored with the tenant's configuration; keep secrets here "
        "(from a vault) rather than in the database.",
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="Private, loopback or link-local networks (CIDR, JSON list) the server may "
        "reach a provider at (issuer, keys, token endpoint). Empty: public addresses only, so "
        "a tenant admin cannot point the server at internal services. An `http://` issuer is "
        "accepted only on a loopback network listed here (tests, development).",
    )
    http_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Time limit of each request to a provider."
    )
    metadata_ttl_s: int = Field(
        3600,
        ge=60,
        le=86400,
        description="Seconds a provider's discovery document and signing keys are cached.",
    )
    jwks_refresh_interval_s: int = Field(
        10,
        ge=0,
        le=3600,
        description="An ID token signed by an unknown key refetches the provider's keys (key "
        "rotation), at most once per this many seconds per provider.",
    )
    state_ttl_s: int = Field(
        600, ge=60, le=3600, description="Seconds a started sign-in may take to come back."
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"{network!r} is not a network in CIDR form") from exc
        return value


class SettingsFileError(ValueError):
    """A `CTAFLEET_…_FILE` variable that cannot be honoured."""


SECRETS_DIR_VARIABLE = "CTAFLEET_SECRETS_DIR"


def _file_value(variable: str) -> str | None:
    """X's value from `CTAFLEET_X_FILE`, or from the file named X in `CTAFLEET_SECRETS_DIR`
    (a Kubernetes Secret mounted as a volume: one file per key); None when neither is there.
    Two sources for one setting are refused rather than ranked."""
    sources: dict[str, str | None] = {}  # how it is set -> the file, None for the environment
    if path := os.environ.get(f"{variable}_FILE"):
        sources[f"{variable}_FILE"] = path
    directory = os.environ.get(SECRETS_DIR_VARIABLE)
    if directory and (Path(directory) / variable).exists():
        sources[f"{SECRETS_DIR_VARIABLE}/{variable}"] = str(Path(directory) / variable)
    if not sources:
        return None
    if variable in os.environ:
        sources = {variable: None, **sources}
    if len(sources) > 1:
        both = "both" if len(sources) == 2 else "all"
        raise SettingsFileError(f"{' and '.join(sources)} are {both} set: keep one")
    ((source, path),) = sources.items()
    assert path is not None
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsFileError(f"{source}: cannot read {path}: {exc.strerror}") from None
    return text.rstrip("\r\n")  # the newline an editor or `echo` leaves is not the secret's


class FileVariables(PydanticBaseSettingsSource):
    """`CTAFLEET_X_FILE=/path`, or a file named `CTAFLEET_X` in `CTAFLEET_SECRETS_DIR`, sets X
    to that file's content: how Docker and Kubernetes hand secrets to a process (a mounted
    file) without putting them in its environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # every value comes from __call__

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                for sub, subfield in ann.model_fields.items():
                    value = self._read(f"CTAFLEET_{name.upper()}__{sub.upper()}", subfield)
                    if value is not None:
                        values.setdefault(name, {})[sub] = value
            elif (value := self._read(f"CTAFLEET_{name.upper()}", field)) is not None:
                values[name] = value
        return values

    def _read(self, variable: str, field: Any) -> Any:
        text = _file_value(variable)
        if text is None or not self.field_is_complex(field):
            return text
        try:
            return json.loads(text)  # lists and objects, as in the environment
        except ValueError as exc:
            raise SettingsFileError(f"{variable} from a file: not JSON: {exc}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CTAFLEET_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    environment: Environment = Field(
        Environment.development, description="`development`, `test` or `production`."
    )
    debug: bool = Field(False, description="Tracebacks in error responses; refused in production.")
    data_dir: Path = Field(
        Path("data"), description="Where the embedded default keeps its files (SQLite, objects)."
    )
    public_url: str = Field(
        "http://127.0.0.1:8000", description="URL users reach the system at (links, e-mails)."
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, FileVariables(settings_cls), dotenv_settings

    @field_validator("public_url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _production_safety(self) -> Settings:
        problems = production_problems(self)
        if problems:
            raise ValueError("unsafe production settings:\n  " + "\n  ".join(problems))
        return self

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'ctafleet.db').resolve()}"

    @property
    def database_admin_url(self) -> str:
        return self.database.admin_url or self.database_url


def key_entropy_bits(key: str) -> float:
    """A generous estimate of a key's entropy: its length times the Shannon entropy of its
    characters. Random keys score far above the minimum; repeated or blank ones score 0."""
    counts = Counter(key)
    per_char = -sum(n / len(key) * math.log2(n / len(key)) for n in counts.values())
    return len(key) * per_char


def production_problems(settings: Settings) -> list[str]:
    """Each unsafe setting, named by the variable that fixes it."""
    if settings.environment is not Environment.production:
        return []
    problems: list[str] = []
    key = settings.auth.secret_key.get_secret_value()
    if not key or key == DEFAULT_SECRET_KEY:
        problems.append(
            "CTAFLEET_AUTH__SECRET_KEY is missing or the development default; set a random "
            "value of at least 32 bytes"
        )
    elif len(key.encode()) < MIN_SECRET_BYTES:
        problems.append(
            f"CTAFLEET_AUTH__SECRET_KEY is {len(key.encode())} bytes; use at least "
            f"{MIN_SECRET_BYTES}"
        )
    elif key_entropy_bits(key) < MIN_SECRET_BITS:
        problems.append(
            f"CTAFLEET_AUTH__SECRET_KEY is too predictable (about {key_entropy_bits(key):.0f} "
            f"bits; at least {MIN_SECRET_BITS} needed): generate it with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    if settings.debug:
        problems.append("CTAFLEET_DEBUG must be false in production")
    if "null" in settings.http.cors_origins:
        # Sandboxed iframes, file:// pages and some redirects send `Origin: null`: allowing it
        # (with credentials, reading a user's data) would allow any of them.
        problems.append(
            "CTAFLEET_HTTP__CORS_ORIGINS contains 'null', which any sandboxed or local page can "
            "send; list the real origins"
        )
    if "*" in settings.http.cors_origins and settings.http.cors_allow_credentials:
        problems.append(
            "CTAFLEET_HTTP__CORS_ORIGINS contains '*' while CTAFLEET_HTTP__CORS_ALLOW_CREDENTIALS "
            "is true; list the allowed origins explicitly"
        )
    if not settings.database.url:
        problems.append(
            "CTAFLEET_DATABASE__URL is empty (embedded SQLite); set a PostgreSQL URL in production"
        )
    elif is_sqlite_url(settings.database.url):
        problems.append(
            "CTAFLEET_DATABASE__URL points to SQLite; set a PostgreSQL URL in production"
        )
    return problems


def format_validation_error(exc: ValidationError) -> list[str]:
    """One readable line per problem, naming the environment variable."""
    lines: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        items = "".join(f"[{p}]" for p in err["loc"] if isinstance(p, int))  # list positions
        msg = str(err["msg"])
        if not loc and msg.startswith("Value error, unsafe production settings:"):
            lines.extend(s.strip() for s in msg.split("\n")[1:] if s.strip())
            continue
        var = "CTAFLEET_" + "__".join(p.upper() for p in loc) + items if loc else "(settings)"
        lines.append(f"{var}: {msg}")
    return lines


def _default_at(loc: tuple[str, ...]) -> tuple[tuple[str, ...], Any] | None:
    """The field a validation error points at, and that field's default."""
    model: type[BaseModel] = Settings
    path: list[str] = []
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            break
        path.append(part)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
            continue
        factory = field.default_factory
        return tuple(path), factory() if factory is not None else field.default  # type: ignore[call-arg]
    return None


def settings_problems(env_file: Path | str | None = None, **overrides: Any) -> list[str]:
    """Every problem at once: invalid values, and the production refusals behind them.

    Pydantic stops before the cross-field production checks when a single value is invalid;
    here each invalid value is set aside (replaced by its default) and validation runs again.
    """
    lines: list[str] = []
    patched: dict[str, Any] = copy.deepcopy(overrides)
    for _ in range(len(Settings.model_fields) + 1):
        try:
            load_settings(env_file, **patched)
        except ValidationError as exc:
            new = [line for line in format_validation_error(exc) if line not in lines]
            lines.extend(new)
            progressed = False
            for err in exc.errors():
                target = _default_at(tuple(str(p) for p in err["loc"]))
                if target is None:
                    continue
                path, default = target
                node = patched
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                if node.get(path[-1], object()) != default:
                    node[path[-1]] = default
                    progressed = True
            if not progressed:
                break
        else:
            break
    return lines


def load_settings(env_file: Path | str | None = None, **overrides: Any) -> Settings:
    if env_file is not None:
        return Settings(_env_file=env_file, **overrides)
    return Settings(**overrides)


KEY_FILE = ".secret_key"


def data_dir_key(data_dir: Path) -> str:
    """The signing key kept in the data directory (owner-only), made on first use."""
    path = data_dir / KEY_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def uses_builtin_key(settings: Settings) -> bool:
    return settings.auth.secret_key.get_secret_value() == DEFAULT_SECRET_KEY


def with_signing_key(settings: Settings) -> Settings:
    """Outside the test environment, the built-in (public) signing key is never used: a key is
    generated and kept in the data directory instead, one per installation, shared by every
    process on it (`serve`, `demo`, the workers), so their tokens are each other's. Production
    refuses the built-in key before this (it must be set explicitly)."""
    if not uses_builtin_key(settings) or settings.environment is Environment.test:
        return settings
    auth = settings.auth.model_copy(
        update={"secret_key": SecretStr(data_dir_key(settings.data_dir))}
    )
    return settings.model_copy(update={"auth": auth})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
