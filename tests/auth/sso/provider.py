"""The OpenID provider the single sign-on tests run against: node's `oidc-provider` on
loopback (tests/auth/sso/provider.mjs), installed by scripts/install-oidc-provider.sh."""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.conftest import service_unavailable
from tests.kit.net import stop_process

ROOT = Path(__file__).resolve().parents[3]
MODULES = ROOT / ".tools" / "oidc-provider" / "node_modules"
SCRIPT = Path(__file__).with_name("provider.mjs")
START_TIMEOUT_S = 30.0


def signing_jwk() -> dict[str, Any]:
    """A new RSA signing key as a private JWK with its own kid (made here, not in node: see
    provider.mjs)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key))
    jwk.pop("key_ops", None)  # "use" says it, as the provider publishes it
    return {**jwk, "kid": str(uuid.uuid4()), "alg": "RS256", "use": "sig"}


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uri: str


class Provider:
    """A running provider: its issuer, test controls, and a browser that signs in."""

    def __init__(self, process: subprocess.Popen[str], issuer: str, workdir: Path) -> None:
        self.process = process
        self.issuer = issuer
        self.workdir = workdir
        self.http = httpx.Client(base_url=issuer, timeout=10)

    def account(self, login: str, **claims: Any) -> str:
        """Adds (or changes) an account; `login` is its subject and its `login_hint`."""
        self._put(f"/__test/accounts/{login}", claims)
        return login

    def rotate_key(self) -> str:
        return str(self._post("/__test/rotate", {"key": signing_jwk()})["kid"])

    def tamper_next_token(self, mode: str = "claims", **claims: Any) -> None:
        """The next token response carries an ID token altered this way."""
        self._post("/__test/tamper", {"mode": mode, "claims": claims})

    def stats(self) -> dict[str, int]:
        r = self.http.get("/__test/stats")
        r.raise_for_status()
        data: dict[str, int] = r.json()
        return data

    def _put(self, path: str, body: dict[str, Any]) -> None:
        self.http.put(path, json=body).raise_for_status()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, json=body)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def authorize(self, authorization_url: str, login_hint: str) -> str:
        """What a browser does at the provider: follows its redirects, the account named by
        `login_hint` signs in and consents, until the provider redirects back to the relying
        party. Returns that redirect (the callback URL with `code` and `state`)."""
        split = urlsplit(authorization_url)
        assert f"{split.scheme}://{split.netloc}" == self.issuer, authorization_url
        query = parse_qs(split.query)
        query["login_hint"] = [login_hint]
        url = f"{self.issuer}{split.path}?{urlencode(query, doseq=True)}"
        with httpx.Client(timeout=10) as browser:  # its own cookies: one browser
            for _ in range(10):
                r = browser.get(url)
                assert r.status_code in (302, 303), (r.status_code, r.text)
                url = str(httpx.URL(url).join(r.headers["location"]))
                if not url.startswith(self.issuer):
                    return url
        raise AssertionError("the provider kept redirecting")

    def stop(self) -> None:
        self.http.close()
        stop_process(self.process, timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_provider(
    workdir: Path,
    clients: list[Client],
    accounts: dict[str, dict[str, Any]] | None = None,
    *,
    modules: Path = MODULES,
) -> Provider:
    node = shutil.which("node")
    if node is None:
        service_unavailable("node is not installed (the single sign-on tests' OpenID provider)")
    if not (modules / "oidc-provider" / "package.json").exists():
        service_unavailable(
            f"oidc-provider is not installed in {modules.parent}: run "
            "scripts/install-oidc-provider.sh"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    # ESM resolves packages from the script's own folder: the script runs beside a link to
    # the installed modules.
    shutil.copy(SCRIPT, workdir / SCRIPT.name)
    (workdir / "node_modules").symlink_to(modules, target_is_directory=True)
    config = workdir / "config.json"
    config.write_text(
        json.dumps(
            {
                "clients": [
                    {
                        "client_id": c.client_id,
                        "client_secret": c.client_secret,
                        "redirect_uris": [c.redirect_uri],
                    }
                    for c in clients
                ],
                "accounts": accounts or {},
                "signing_key": signing_jwk(),
                "stranger_key": signing_jwk(),
            }
        )
    )
    log = (workdir / "provider.log").open("w")
    process = subprocess.Popen(
        [str(node), str(workdir / SCRIPT.name), str(config)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert process.stdout is not None
    # The script prints one line once it listens.
    started = time.monotonic()
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    if not line:
        exited = process.poll()
        process.kill()
        process.wait()
        how = (
            f"exited with {exited}"
            if exited is not None
            else f"printed nothing in {time.monotonic() - started:.0f} s"
        )
        raise RuntimeError(
            f"the OpenID provider did not start ({how}): {(workdir / 'provider.log').read_text()}"
        )
    return Provider(process, json.loads(line)["issuer"], workdir)
