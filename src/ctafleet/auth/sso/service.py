"""Single sign-on: a tenant's provider configuration, and signing in through it.

The sign-in is OpenID Connect's authorization code flow with PKCE (S256). `start_login` records
the attempt (state, nonce and code verifier, bound to the browser by a cookie) and sends the
browser to the provider; `finish_login` takes the provider's answer once, exchanges the code,
checks the ID token and opens the same login session a password login opens. Users are found
by the provider's (issuer, subject), never by e-mail: an address is only a claim of the
provider's, and a match on it alone would let whoever controls an address in any directory
the provider serves take over the account that uses it.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog
from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ctafleet.auth.models import User
from ctafleet.auth.passwords import hash_password
from ctafleet.auth.schemas import TokenPair
from ctafleet.auth.service import open_session
from ctafleet.auth.sso.models import SsoConfig, SsoIdentity, SsoLoginState
from ctafleet.auth.sso.netguard import address_allowed, literal_address
from ctafleet.auth.sso.provider import (
    IdTokenRefused,
    ProviderRefused,
    Providers,
    check_url,
)
from ctafleet.auth.sso.schemas import SsoConfigRead, SsoConfigWrite
from ctafleet.auth.tokens import digest
from ctafleet.config import Settings
from ctafleet.db import audit, toolkit
from ctafleet.db.scope import system_session
from ctafleet.db.toolkit import IfMatch
from ctafleet.kernel.context import ANONYMOUS_ROLE, Actor
from ctafleet.kernel.errors import (
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from ctafleet.kernel.roles import Role
from ctafleet.observability.metrics import AUTH_FAILURES
from ctafleet.tenants.models import Tenant

log = structlog.get_logger("ctafleet.sso")

CALLBACK_PATH = "/api/v1/auth/oidc/callback"
BROWSER_COOKIE = "ctafleet_sso"
_BROWSER_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")
ENTRA_HOST = "login.microsoftonline.com"
ENTRA_ISSUER = re.compile(r"^https://login\.microsoftonline\.com/([0-9a-f-]{36})/v2\.0$")
_EMAIL = TypeAdapter(EmailStr)


def redirect_uri(settings: Settings) -> str:
    return f"{settings.public_url}{CALLBACK_PATH}"


def login_path(slug: str) -> str:
    return f"/api/v1/auth/oidc/{slug}/login"


def new_browser_id(current: str | None) -> str:
    """The browser's sign-in cookie: kept while well-formed (several tabs may sign in at
    once), else a new random one."""
    if current and _BROWSER_ID.match(current):
        return current
    return secrets.token_urlsafe(32)


def client_secret(
    settings: Settings, slug: str, config: SsoConfig
) -> tuple[str | None, str | None]:
    """The secret and where it comes from: the server's settings win over the tenant's row."""
    configured = settings.oidc.client_secrets.get(slug)
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value(), "settings"
    if config.client_secret:
        return config.client_secret, "tenant"
    return None, None


# --- configuration ------------------------------------------------------------------------


async def _config(session: AsyncSession, tenant_id: uuid.UUID) -> SsoConfig | None:
    return (
        await session.scalars(select(SsoConfig).where(SsoConfig.tenant_id == tenant_id))
    ).first()


async def get_config(*, session: AsyncSession, actor: Actor) -> SsoConfig:
    config = await _config(session, actor.tenant_id)
    if config is None:
        raise NotFound("single sign-on configuration")
    return config


def read_model(settings: Settings, tenant: Tenant, config: SsoConfig) -> SsoConfigRead:
    _, source = client_secret(settings, tenant.slug, config)
    return SsoConfigRead.model_validate(
        {
            **{c: getattr(config, c) for c in SsoConfigRead.model_fields if hasattr(config, c)},
            "client_secret_set": source is not None,
            "client_secret_source": source,
            "login_url": f"{settings.public_url}{login_path(tenant.slug)}",
            "redirect_uri": redirect_uri(settings),
        }
    )


def _check_issuer(providers: Providers, data: SsoConfigWrite) -> str | None:
    """The `tid` the tokens must carry (from an Entra ID issuer or given); refuses an issuer
    the server must not use."""
    problem = check_url(data.issuer, providers.allowed, what="issuer")
    if problem:
        raise Invalid("issuer", problem)
    split = urlsplit(data.issuer)
    if split.query or split.fragment:
        raise Invalid("issuer", "the issuer has no query or fragment")
    address = literal_address(split.hostname or "")
    if address is not None and not address_allowed(address, providers.allowed):
        raise Invalid("issuer", f"{address} is not a public address")
    tid = data.entra_tenant_id
    if split.hostname == ENTRA_HOST:
        match = ENTRA_ISSUER.match(data.issuer)
        if match is None:
            raise Invalid(
                "issuer",
                "use your directory's own v2.0 issuer, https://login.microsoftonline.com/"
                "<directory id>/v2.0 (not common, organizations or the v1 endpoint)",
            )
        if tid is not None and tid != match.group(1):
            raise Invalid("entra_tenant_id", "the directory id differs from the issuer's")
        tid = match.group(1)
    return tid


async def _check_break_glass(session: AsyncSession, actor: Actor, data: SsoConfigWrite) -> None:
    if data.break_glass_user_id is None:
        if data.require_sso:
            raise Invalid(
                "break_glass_user_id",
                "requiring single sign-on needs a break-glass admin who can still log in with a "
                "password when the provider is down",
            )
        return
    user = await session.get(User, data.break_glass_user_id)
    if user is None or not user.is_active or user.role != Role.admin.value:
        raise Invalid(
            "break_glass_user_id", "the break-glass account must be an active admin of yours"
        )


async def put_config(
    *,
    session: AsyncSession,
    actor: Actor,
    settings: Settings,
    providers: Providers,
    data: SsoConfigWrite,
    if_match: IfMatch | None,
) -> tuple[Tenant, SsoConfig]:
    """Creates or replaces the tenant's configuration, after checking that the provider is
    there: its discovery document names this issuer and offers what the sign-in needs."""
    tenant = await session.get(Tenant, actor.tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    tid = _check_issuer(providers, data)
    await _check_break_glass(session, actor, data)
    config = await _config(session, actor.tenant_id)
    if config is not None:
        toolkit.check_version(config.version, if_match)
    stored_secret = config.client_secret if config is not None else None
    has_secret = (
        data.client_secret or stored_secret or settings.oidc.client_secrets.get(tenant.slug)
    )
    if not has_secret:
        raise Invalid("client_secret", "a client secret is needed (here or in the settings)")
    try:
        await providers.metadata(data.issuer, fresh=True)
    except Unavailable as exc:
        raise Invalid("issuer", exc.detail, slug="sso-discovery-failed") from exc
    values: dict[str, Any] = data.model_dump(exclude={"client_secret"})
    values["role_mappings"] = [m.model_dump() for m in data.role_mappings]
    values["entra_tenant_id"] = tid
    if data.client_secret is not None:
        values["client_secret"] = data.client_secret
    if config is None:
        config = SsoConfig(tenant_id=actor.tenant_id, **values)
        await toolkit.create(session, actor, config, entity="sso_config")
    else:
        await toolkit.update(session, actor, config, values, entity="sso_config", if_match=if_match)
    return tenant, config


# --- signing in ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    authorization_url: str
    browser_id: str


async def _enabled_config(session: AsyncSession, slug: str) -> tuple[Tenant, SsoConfig]:
    tenant = (await session.scalars(select(Tenant).where(Tenant.slug == slug))).first()
    config = await _config(session, tenant.id) if tenant is not None else None
    if tenant is None or config is None or not config.enabled:
        # The same answer for an unknown organisation: no list of tenants through this route.
        raise NotFound("single sign-on for this organisation")
    return tenant, config


async def start_login(
    *,
    session: AsyncSession,
    request: Actor,
    settings: Settings,
    providers: Providers,
    tenant_slug: str,
    browser_id: str,
    link_user_id: uuid.UUID | None = None,
) -> Started:
    """`session` is a system session (the tenant is found from the slug); `request` carries
    the request's address, id and clock. `link_user_id`: the logged-in user whose account the
    provider's identity is linked to."""
    tenant, config = await _enabled_config(session, tenant_slug)
    metadata = await providers.metadata(config.issuer)
    now = request.now()
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # RFC 7636 §4.1: 43-128 characters
    url = providers.authorization_url(
        metadata,
        client_id=config.client_id,
        redirect_uri=redirect_uri(settings),
        state=state,
        nonce=nonce,
        code_verifier=verifier,
    )
    # Sign-ins that never came back are dropped as others start.
    await session.execute(
        delete(SsoLoginState).where(
            SsoLoginState.tenant_id == tenant.id, SsoLoginState.expires_at < now
        )
    )
    session.add(
        SsoLoginState(
            tenant_id=tenant.id,
            state_hash=digest(state),
            browser_hash=digest(browser_id),
            issuer=config.issuer,
            nonce=nonce,
            code_verifier=verifier,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.oidc.state_ttl_s),
            link_user_id=link_user_id,
        )
    )
    await session.commit()
    return Started(authorization_url=url, browser_id=browser_id)


async def _refused(
    session: AsyncSession,
    request: Actor,
    tenant_id: uuid.UUID | None,
    reason: str,
    error: DomainError,
    user: User | None = None,
) -> DomainError:
    """Records the failed sign-in in the tenant's audit log (when the tenant is known) and
    returns the error to raise."""
    AUTH_FAILURES.labels(kind="sso").inc()
    log.info("sso_login_failed", reason=reason, tenant=str(tenant_id) if tenant_id else None)
    if tenant_id is None:
        return error
    # Read before the rollback, which expires every loaded row.
    user_id, role = (user.id, user.role) if user is not None else (None, ANONYMOUS_ROLE)
    await session.rollback()
    actor = Actor(
        tenant_id=tenant_id,
        user_id=user_id,
        role=role,
        request_id=request.request_id,
        client_ip=request.client_ip,
        clock=request.clock,
    )
    audit.record(
        session,
        actor,
        action="login_failed",
        entity_type="user" if user_id else "sso",
        entity_id=user_id,
        changes={
            "method": {"before": None, "after": "oidc"},
            "reason": {"before": None, "after": reason},
        },
    )
    await session.commit()
    return error


def _failed(detail: str) -> Unauthenticated:
    return Unauthenticated(detail, slug="sso-login-failed")


def _bad_state() -> Unauthenticated:
    return Unauthenticated(
        "this sign-in is unknown, expired, already used or was started in another browser; "
        "start again",
        slug="sso-state-invalid",
    )


async def _claim_state(
    session: AsyncSession, request: Actor, state: str | None, browser_id: str | None
) -> SsoLoginState:
    now = request.now()
    row = (
        (
            await session.scalars(
                select(SsoLoginState).where(SsoLoginState.state_hash == digest(state))
            )
        ).first()
        if state
        else None
    )
    if row is None:
        raise await _refused(session, request, None, "unknown_state", _bad_state())
    if not browser_id or not secrets.compare_digest(row.browser_hash, digest(browser_id)):
        raise await _refused(session, request, row.tenant_id, "other_browser", _bad_state())
    # Claimed before anything else is checked: whatever happens next, it is not used twice.
    claimed = await session.execute(
        update(SsoLoginState)
        .where(SsoLoginState.id == row.id, SsoLoginState.used_at.is_(None))
        .values(used_at=now)
    )
    await session.commit()
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise await _refused(session, request, row.tenant_id, "replayed_state", _bad_state())
    if row.expires_at <= now:
        raise await _refused(session, request, row.tenant_id, "expired_state", _bad_state())
    return row


def _mapped_role(config: SsoConfig, claims: dict[str, Any]) -> str | None:
    named: set[str] = set()
    for claim in ("groups", "roles"):
        values = claims.get(claim)
        if isinstance(values, list):
            named |= {v for v in values if isinstance(v, str)}
    for mapping in config.role_mappings or []:
        if mapping.get("value") in named:
            return str(mapping["role"])
    return None


def _email_of(claims: dict[str, Any]) -> str | None:
    # Entra ID sends `email` only when the account has a mailbox address; its sign-in name
    # (`preferred_username`) is an address too for work accounts.
    for claim in ("email", "preferred_username"):
        value = claims.get(claim)
        if isinstance(value, str):
            try:
                return str(_EMAIL.validate_python(value)).lower()
            except ValidationError:
                continue
    return None


async def finish_login(
    *,
    session: AsyncSession,
    request: Actor,
    settings: Settings,
    providers: Providers,
    state: str | None,
    code: str | None,
    error: str | None,
    iss: str | None,
    browser_id: str | None,
) -> TokenPair:
    """The provider's redirect back. `session` is a system session (the state names the
    tenant)."""
    row = await _claim_state(session, request, state, browser_id)
    tenant_id = row.tenant_id
    config = await _config(session, tenant_id)
    tenant = await session.get(Tenant, tenant_id)
    if config is None or tenant is None or not config.enabled or config.issuer != row.issuer:
        raise await _refused(
            session,
            request,
            tenant_id,
            "configuration_changed",
            _failed("single sign-on was reconfigured during this sign-in; start again"),
        )
    if error:
        reason = re.sub(r"[^a-z_]", "", error.lower())[:40] or "error"
        raise await _refused(
            session,
            request,
            tenant_id,
            f"provider_error:{reason}",
            _failed(f"the identity provider did not sign you in ({reason})"),
        )
    # RFC 9207: a provider that names itself must be the one this sign-in went to.
    if iss is not None and iss != config.issuer:
        raise await _refused(
            session,
            request,
            tenant_id,
            "issuer_mismatch",
            _failed("the answer is from another provider"),
        )
    if not code:
        raise await _refused(
            session, request, tenant_id, "no_code", _failed("the provider sent no code")
        )
    secret, _ = client_secret(settings, tenant.slug, config)
    try:
        metadata = await providers.metadata(config.issuer)
        token = await providers.exchange_code(
            metadata,
            client_id=config.client_id,
            client_secret=secret or "",
            redirect_uri=redirect_uri(settings),
            code=code,
            code_verifier=row.code_verifier,
        )
    except Unavailable as exc:
        raise await _refused(session, request, tenant_id, "provider_unavailable", exc) from exc
    except ProviderRefused as exc:
        raise await _refused(
            session,
            request,
            tenant_id,
            f"code_refused:{exc.error}",
            _failed("the identity provider refused the sign-in's code"),
        ) from exc
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise await _refused(
            session, request, tenant_id, "no_id_token", _failed("the provider sent no ID token")
        )
    try:
        claims = await providers.verify_id_token(
            metadata, id_token, client_id=config.client_id, nonce=row.nonce
        )
    except IdTokenRefused as exc:
        raise await _refused(session, request, tenant_id, exc.reason, _failed(exc.detail)) from exc
    if config.entra_tenant_id and claims.get("tid") != config.entra_tenant_id:
        raise await _refused(
            session,
            request,
            tenant_id,
            "wrong_directory",
            _failed("the account belongs to another directory (tid)"),
        )
    user = await _user_for(session, request, settings, tenant, config, row, claims)
    return await open_session(
        session=session,
        request=request,
        settings=settings.auth,
        user=user,
        method="oidc",
        # The provider authenticated the user, with its own second factor (Entra ID:
        # Conditional Access); the tenant's TOTP policy governs password logins.
        mfa_verified=True,
    )


def _not_allowed(detail: str, slug: str) -> Forbidden:
    return Forbidden(detail, slug=slug)


async def _user_for(
    session: AsyncSession,
    request: Actor,
    settings: Settings,
    tenant: Tenant,
    config: SsoConfig,
    row: SsoLoginState,
    claims: dict[str, Any],
) -> User:
    """The user the provider's identity belongs to: found, linked, or (when the tenant
    allows it) created."""
    now = request.now()
    subject = str(claims["sub"])
    identity = (
        await session.scalars(
            select(SsoIdentity).where(
                SsoIdentity.tenant_id == tenant.id,
                SsoIdentity.issuer == config.issuer,
                SsoIdentity.subject == subject,
            )
        )
    ).first()
    if row.link_user_id is not None:
        return await _link(session, request, tenant, config, row.link_user_id, identity, subject)
    if identity is not None:
        user = await session.get(User, identity.user_id)
        if user is None or not user.is_active:
            raise await _refused(
                session,
                request,
                tenant.id,
                "user_inactive",
                _not_allowed("your account is deactivated", "sso-account-inactive"),
                user=user,
            )
        identity.last_login_at = now
        if config.sync_roles:
            role = _mapped_role(config, claims) or config.default_role
            if role != user.role:
                actor = Actor.system(tenant.id, clock=request.clock).with_request(
                    request_id=request.request_id, client_ip=request.client_ip
                )
                changes = audit.diff({"role": user.role}, {"role": role})
                changes["reason"] = {"before": None, "after": "sso_role_sync"}
                user.role = role
                audit.record(
                    session,
                    actor,
                    action="update",
                    entity_type="user",
                    entity_id=user.id,
                    changes=changes,
                )
        await toolkit.commit(session, what="the user")
        return user
    if not config.allow_signup:
        raise await _refused(
            session,
            request,
            tenant.id,
            "no_account",
            _not_allowed(
                "you have no account here yet: ask an admin to create one, or log in with your "
                "password and link your provider account",
                "sso-no-account",
            ),
        )
    email = _email_of(claims)
    if email is None:
        raise await _refused(
            session,
            request,
            tenant.id,
            "no_email",
            _not_allowed("the provider gave no e-mail address for you", "sso-no-email"),
        )
    async with system_session(session.bind) as other:
        taken = await other.scalar(
            select(func.count()).select_from(User).where(User.email == email)
        )
    if taken:
        # Never joined by e-mail: the owner of that account links it (log in, then link).
        raise await _refused(
            session,
            request,
            tenant.id,
            "email_in_use",
            _not_allowed(
                "an account with your e-mail address exists: log in with its password and link "
                "your provider account (POST /api/v1/auth/oidc/link)",
                "sso-email-in-use",
            ),
        )
    user = User(
        id=uuid.uuid4(),
        tenant_id=tenant.id,
        email=email,
        full_name=str(claims.get("name") or "")[:200],
        role=_mapped_role(config, claims) or config.default_role,
        # Nobody knows this password: the account signs in through the provider (and costs
        # a password attempt what any other account costs).
        password_hash=hash_password(secrets.token_urlsafe(32)),
    )
    session.add(user)
    await toolkit.commit(session, what="the user", flush_only=True)
    actor = Actor.system(tenant.id, clock=request.clock).with_request(
        request_id=request.request_id, client_ip=request.client_ip
    )
    event = audit.record_created(session, actor, "user", user)
    event.changes = {**event.changes, "method": {"before": None, "after": "oidc"}}
    session.add(
        SsoIdentity(
            tenant_id=tenant.id,
            user_id=user.id,
            issuer=config.issuer,
            subject=subject,
            created_at=now,
            last_login_at=now,
        )
    )
    await toolkit.commit(session, what="the user")
    return user


async def _link(
    session: AsyncSession,
    request: Actor,
    tenant: Tenant,
    config: SsoConfig,
    user_id: uuid.UUID,
    identity: SsoIdentity | None,
    subject: str,
) -> User:
    user = await session.get(User, user_id)
    if user is None or not user.is_active or user.tenant_id != tenant.id:
        raise await _refused(
            session,
            request,
            tenant.id,
            "user_inactive",
            _not_allowed("your account is deactivated", "sso-account-inactive"),
        )
    if identity is not None and identity.user_id != user.id:
        raise await _refused(
            session,
            request,
            tenant.id,
            "identity_linked_elsewhere",
            _not_allowed("this provider account is linked to another user", "sso-identity-in-use"),
            user=user,
        )
    now = request.now()
    if identity is None:
        # One provider identity per user and issuer: linking again replaces the old one.
        await session.execute(
            delete(SsoIdentity).where(
                SsoIdentity.user_id == user.id, SsoIdentity.issuer == config.issuer
            )
        )
        session.add(
            SsoIdentity(
                tenant_id=tenant.id,
                user_id=user.id,
                issuer=config.issuer,
                subject=subject,
                created_at=now,
                last_login_at=now,
            )
        )
        audit.record(
            session,
            Actor(
                tenant_id=tenant.id,
                user_id=user.id,
                role=user.role,
                request_id=request.request_id,
                client_ip=request.client_ip,
                clock=request.clock,
            ),
            action="sso_linked",
            entity_type="user",
            entity_id=user.id,
            changes={"issuer": {"before": None, "after": config.issuer}},
        )
    else:
        identity.last_login_at = now
    await toolkit.commit(session, what="the user")
    return user
