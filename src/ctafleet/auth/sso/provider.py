"""The relying party's side of OpenID Connect: discovery, signing keys, the authorization URL
(PKCE S256), the code exchange, and the ID token check. Authlib speaks the protocol (its OAuth
client and discovery metadata, its `joserfc` JOSE library for keys and signatures); this module
adds the caching, the limits and the outbound address policy.
"""

from __future__ import annotations

import json
import secrets
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import structlog
from authlib.common.errors import AuthlibBaseError
from authlib.oidc.discovery import OpenIDProviderMetadata, get_well_known_url
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from ctafleet.auth.sso.netguard import (
    GuardedTransport,
    IPNetwork,
    is_loopback_host,
    loopback_allowed,
    networks,
)
from ctafleet.config import OidcSettings
from ctafleet.kernel.clock import Clock
from ctafleet.kernel.errors import Unavailable

with warnings.catch_warnings():
    # Authlib prefers the `httpx2` fork and warns when it falls back to httpx, which it
    # supports until Authlib 2 (pyproject caps the version below it).
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = structlog.get_logger("ctafleet.sso")

SCOPE = "openid email profile"
# Asymmetric signatures only: an HMAC-signed ID token would be signed with the client secret,
# and `none` with nothing.
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"})
CLOCK_SKEW_S = 120
MAX_DOCUMENT_BYTES = 512 * 1024


class IdTokenRefused(Exception):
    """The ID token does not prove who signed in; `reason` is a short code for the audit."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class ProviderRefused(Exception):
    """The provider answered the code exchange with an OAuth error (a used or expired code,
    a wrong client secret): the sign-in fails, the provider is up."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def unavailable(issuer: str, detail: str) -> Unavailable:
    return Unavailable(
        f"the identity provider {issuer} could not be used: {detail}",
        slug="sso-provider-unavailable",
    )


def _why(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: frozenset[str]
    token_auth_method: str


def check_url(url: str, allowed: tuple[IPNetwork, ...], *, what: str) -> str | None:
    """Why the server must not use this provider URL, or None. `https` only, but for a
    loopback host when loopback networks are allowed (tests, development)."""
    try:
        split = urlsplit(url)
        split.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        return f"the {what} is not a valid URL"
    if not split.hostname:
        return f"the {what} has no host"
    if split.username or split.password:
        return f"the {what} must not carry credentials"
    if split.scheme == "https":
        return None
    if split.scheme == "http" and is_loopback_host(split.hostname) and loopback_allowed(allowed):
        return None
    return f"the {what} must be an https:// URL"


class Providers:
    """Per process: each provider's discovery document and keys, cached by the clock."""

    def __init__(self, settings: OidcSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.allowed = networks(settings.allowed_networks)
        self._metadata: dict[str, tuple[float, Metadata]] = {}
        self._keys: dict[str, tuple[float, KeySet]] = {}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=GuardedTransport(self.allowed, self.settings.http_timeout_s),
            timeout=self.settings.http_timeout_s,
            follow_redirects=False,
        )

    async def _get_json(self, issuer: str, url: str, what: str) -> dict[str, Any]:
        problem = check_url(url, self.allowed, what=what)
        if problem:
            raise unavailable(issuer, problem)
        try:
            # One bound for the whole exchange: the per-read timeout alone lets a provider
            # that drips bytes hold the request.
            with anyio.fail_after(self.settings.http_timeout_s * 2):
                async with self.http() as client, client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise unavailable(issuer, f"its {what} answered {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise unavailable(issuer, f"its {what} is too large")
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise unavailable(issuer, f"its {what} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise unavailable(issuer, f"its {what} could not be fetched ({_why(exc)})") from exc
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise unavailable(issuer, f"its {what} is not JSON") from exc
        if not isinstance(data, dict):
            raise unavailable(issuer, f"its {what} is not a JSON object")
        return data

    async def metadata(self, issuer: str, *, fresh: bool = False) -> Metadata:
        cached = self._metadata.get(issuer)
        if cached and not fresh and self._now() - cached[0] < self.settings.metadata_ttl_s:
            return cached[1]
        document = await self._get_json(
            issuer, get_well_known_url(issuer, external=True), "discovery document"
        )
        metadata = self._parse_metadata(issuer, document)
        self._metadata[issuer] = (self._now(), metadata)
        return metadata

    def _parse_metadata(self, issuer: str, document: dict[str, Any]) -> Metadata:
        try:
            OpenIDProviderMetadata(document).validate()
        except (ValueError, KeyError, TypeError) as exc:
            raise unavailable(issuer, f"its discovery document is not valid ({exc})") from exc
        # OpenID Connect Discovery 1.0 §4.3: the document names exactly the issuer asked for.
        if document["issuer"] != issuer:
            raise unavailable(
                issuer, f"its discovery document names another issuer ({document['issuer']})"
            )
        for key, what in (
            ("authorization_endpoint", "authorization endpoint"),
            ("token_endpoint", "token endpoint"),
            ("jwks_uri", "key set URL"),
        ):
            value = document.get(key)
            problem = check_url(value, self.allowed, what=what) if value else f"no {what}"
            if problem:
                raise unavailable(issuer, problem)
        if "code" not in document.get("response_types_supported", []):
            raise unavailable(issuer, "it does not offer the authorization code flow")
        methods = document.get("code_challenge_methods_supported")
        if methods is not None and "S256" not in methods:
            raise unavailable(issuer, "it does not offer PKCE with S256")
        algorithms = ALGORITHMS & set(document.get("id_token_signing_alg_values_supported", []))
        if not algorithms:
            raise unavailable(issuer, "it signs ID tokens with no algorithm accepted here")
        auth_methods = document.get("token_endpoint_auth_methods_supported", [])
        token_auth = (
            "client_secret_post"
            if auth_methods and "client_secret_basic" not in auth_methods
            else "client_secret_basic"
        )
        return Metadata(
            issuer=issuer,
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
            algorithms=frozenset(algorithms),
            token_auth_method=token_auth,
        )

    async def keys(self, metadata: Metadata, *, unknown_kid: bool = False) -> KeySet | None:
        """The provider's signing keys. After an unknown key id, fetched again once (the
        provider rotated its keys), unless they were fetched moments ago: then None."""
        cached = self._keys.get(metadata.jwks_uri)
        age = self._now() - cached[0] if cached else None
        if cached and age is not None:
            if unknown_kid and age < self.settings.jwks_refresh_interval_s:
                return None
            if not unknown_kid and age < self.settings.metadata_ttl_s:
                return cached[1]
        document = await self._get_json(metadata.issuer, metadata.jwks_uri, "key set")
        try:
            keyset = KeySet.import_key_set(document)  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise unavailable(metadata.issuer, f"its key set is not valid ({exc})") from exc
        self._keys[metadata.jwks_uri] = (self._now(), keyset)
        return keyset

    def authorization_url(
        self,
        metadata: Metadata,
        *,
        client_id: str,
        redirect_uri: str,
        state: str,
        nonce: str,
        code_verifier: str,
    ) -> str:
        client = AsyncOAuth2Client(
            client_id=client_id,
            scope=SCOPE,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )
        url, _ = client.create_authorization_url(
            metadata.authorization_endpoint,
            state=state,
            code_verifier=code_verifier,
            nonce=nonce,
        )
        return str(url)

    async def exchange_code(
        self,
        metadata: Metadata,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        code: str,
        code_verifier: str,
    ) -> dict[str, Any]:
        """The token response for the authorization code."""
        client = AsyncOAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint_auth_method=metadata.token_auth_method,
            redirect_uri=redirect_uri,
            transport=GuardedTransport(self.allowed, self.settings.http_timeout_s),
            timeout=self.settings.http_timeout_s,
            follow_redirects=False,
        )
        try:
            with anyio.fail_after(self.settings.http_timeout_s * 2):
                async with client:
                    token = await client.fetch_token(
                        metadata.token_endpoint,
                        grant_type="authorization_code",
                        code=code,
                        code_verifier=code_verifier,
                    )
        except AuthlibBaseError as exc:  # the token endpoint's OAuth error answer
            raise ProviderRefused(str(exc.error or "error")[:64]) from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise unavailable(metadata.issuer, "its token endpoint did not answer in time") from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise unavailable(metadata.issuer, f"the code exchange failed ({_why(exc)})") from exc
        return dict(token)

    async def verify_id_token(
        self, metadata: Metadata, id_token: str, *, client_id: str, nonce: str
    ) -> dict[str, Any]:
        """The ID token's claims, once its signature (the provider's keys), issuer, audience,
        times and nonce are checked (OpenID Connect Core 1.0 §3.1.3.7)."""
        keyset = await self.keys(metadata)
        assert keyset is not None  # None only after an unknown key id
        try:
            try:
                token = jwt.decode(id_token, keyset, algorithms=sorted(metadata.algorithms))
            except InvalidKeyIdError:
                keyset = await self.keys(metadata, unknown_kid=True)
                if keyset is None:
                    raise
                token = jwt.decode(id_token, keyset, algorithms=sorted(metadata.algorithms))
        except InvalidKeyIdError as exc:
            raise IdTokenRefused("unknown_key", "the ID token is signed by an unknown key") from exc
        except BadSignatureError as exc:
            raise IdTokenRefused("bad_signature", "the ID token's signature is not valid") from exc
        except (JoseError, ValueError) as exc:
            raise IdTokenRefused("malformed", f"the ID token cannot be read ({exc})") from exc
        claims = token.claims
        registry = jwt.JWTClaimsRegistry(
            now=int(self._now()),
            leeway=CLOCK_SKEW_S,
            iss={"essential": True, "value": metadata.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": client_id},
            exp={"essential": True},
            iat={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as exc:
            raise IdTokenRefused("expired", "the ID token has expired") from exc
        except (MissingClaimError, InvalidClaimError) as exc:
            name = getattr(exc, "claim", None) or str(exc)
            reason = {"aud": "wrong_audience", "iss": "wrong_issuer"}.get(name, "invalid_claims")
            raise IdTokenRefused(reason, f"the ID token's claims are not valid ({exc})") from exc
        except JoseError as exc:
            raise IdTokenRefused("invalid_claims", f"the ID token is not valid ({exc})") from exc
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise IdTokenRefused("wrong_audience", "the ID token was issued to another party")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(
            claims["nonce"], nonce
        ):
            raise IdTokenRefused("nonce_mismatch", "the ID token's nonce is not this sign-in's")
        return claims
