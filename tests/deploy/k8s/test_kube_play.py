"""The rendered manifests run: the staging overlay's ConfigMap, Secret, migration Job and the
api and worker Deployments, played by `podman kube play` (4.3.1) with the app image built from
this tree, against the real PostgreSQL and Redis, then torn down.

tests/kit/kube_play.py adapts a copy for podman's gaps (each named there); the manifests stay
as a cluster gets them. podman never runs a readiness probe, so the test asks /readyz itself,
and, with the migration left out, runs the readiness probe as the pod's healthcheck: it fails,
as a CI watching the pod must see. docs/kubernetes.md "Proof on one machine" says what is
adapted and what stays unproven."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.kit.app import PgDatabase
from tests.kit.k8s import Doc, one, render, secret_from_template
from tests.kit.kube_play import Played, adapt
from tests.kit.podman import PODMAN, build_images, inspect, podman
from tests.kit.positions import fix_times
from tests.kit.tools import tool

PASSWORD = "Kube-Play-Check-Horse-42"
CLUSTER_IMAGE = "ctafleet.azurecr.io/ctafleet/app"


@dataclass
class Release:
    """The objects a staging release applies, with the values that must differ here."""

    config: Doc
    secret: Doc
    job: Doc
    api: Doc
    worker: Doc
    db: PgDatabase


def _release(db: PgDatabase, redis_url: str, queue_prefix: str, tmp: Path) -> Release:
    docs = render("staging")
    config = one(docs, "ConfigMap", prefix="ctafleet-config")
    assert config["data"]["CTAFLEET_ENVIRONMENT"] == "production"
    config["data"] |= {
        # `db upgrade` grants DML to this role: the fresh database's own, since the cluster's
        # `ctafleet_app` does not exist on this server.
        "CTAFLEET_DATABASE__APP_ROLE": db.app_role,
        # The Redis database is shared by tests running at once: this test's queue keys get
        # their own prefix (deleted afterwards by the fixture).
        "CTAFLEET_TELEMETRY__QUEUE_PREFIX": queue_prefix,
    }
    # Kept as rendered: CTAFLEET_STORAGE__BACKEND=azure (only the backup commands open the
    # object store; the api and worker never do) and every other cluster value.
    secret = secret_from_template(
        {
            # The operator's values, as docs/kubernetes.md step 2 fills the template.
            "CTAFLEET_DATABASE__URL": db.app_url,
            "CTAFLEET_DATABASE__ADMIN_URL": db.owner_url,
            "CTAFLEET_REDIS__URL": redis_url,
            "CTAFLEET_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
            # The bridge is not played: neither the api nor the worker reaches the broker.
            "CTAFLEET_MQTT__URL": "mqtt://127.0.0.1:1883",
            # Never opened (see above); the shape of a real one.
            "CTAFLEET_STORAGE__AZURE_CONNECTION_STRING": (
                "DefaultEndpointsProtocol=https;AccountName=ctafleetnone;"
                f"AccountKey={secrets.token_urlsafe(32)};EndpointSuffix=core.windows.net"
            ),
            "CTAFLEET_OBSERVABILITY__METRICS_TOKEN": secrets.token_urlsafe(24),
        },
        tmp,
    )
    return Release(
        config=config,
        secret=secret,
        job=one(docs, "Job", "ctafleet-migrate"),
        api=one(docs, "Deployment", "api"),
        worker=one(docs, "Deployment", "worker"),
        db=db,
    )


@dataclass
class KubePlay:
    """Plays adapted files in order; `down` removes every pod and volume it made."""

    suffix: str
    plays: list[Played] = field(default_factory=list)

    def play(self, played: Played) -> None:
        self.plays.append(played)
        podman("kube", "play", "--quiet", str(played.path), timeout=180)

    def down(self) -> None:
        """Always safe: a play that never started, or was already taken down, is skipped."""
        for played in reversed(self.plays):
            podman("kube", "down", str(played.path), check=False, timeout=120)
        for volume in sorted({v for played in self.plays for v in played.volumes}):
            podman("volume", "rm", "--force", volume, check=False)

    def leftovers(self) -> list[str]:
        """What of this run podman still holds: containers (the pods' infra ones are named by
        pod id, hence their pod's name), pods, volumes, secrets."""
        found = []
        for *what, fmt in (
            ("ps", "-a", "{{.Names}}/{{.PodName}}"),
            ("pod", "ps", "{{.Name}}"),
            ("volume", "ls", "{{.Name}}"),
            ("secret", "ls", "{{.Name}}"),
        ):
            listing = podman(*what, "--format", fmt).stdout.split()
            found += [f"{what[0]} {name}" for name in listing if self.suffix in name]
        return found


@pytest.fixture
def kube() -> Iterator[KubePlay]:
    tool("catatonit")  # podman builds its pods' infra image from it
    box = KubePlay(f"kp{uuid.uuid4().hex[:8]}")
    try:
        yield box
    finally:
        box.down()
        left = box.leftovers()
        if left:  # never leave them to the next run, and say so
            pods = [pod for played in box.plays for pod in played.pods.values()]
            podman("pod", "rm", "-f", *pods, check=False)
        assert not left, f"left behind after kube down: {left}"


@pytest.fixture(scope="module")
def app_image() -> str:
    return build_images("app")["app"]


@pytest.fixture
def release(
    fresh_pg: Callable[[], PgDatabase], redis_url: str, queue_prefix: str, tmp_path: Path
) -> Release:
    return _release(fresh_pg(), redis_url, queue_prefix, tmp_path)


def _state(container: str) -> dict[str, Any]:
    return dict(inspect(container, "container")["State"])


def _logs(container: str) -> str:
    result = podman("logs", "--tail", "40", container, check=False)
    return result.stdout + result.stderr


def wait_exited(container: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(container)
        if state["Status"] == "exited":
            return int(state["ExitCode"])
        time.sleep(0.3)
    raise AssertionError(f"{container} still running after {timeout} s:\n{_logs(container)}")


def wait_answering(base: str, path: str, container: str, timeout: float = 60) -> httpx.Response:
    """The first answer of the pod's port to PATH (any status), once the server listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"{base}{path}", timeout=2)
        except httpx.TransportError:
            pass
        assert _state(container)["Running"], f"{container} stopped:\n{_logs(container)}"
        time.sleep(0.3)
    raise AssertionError(f"{base}{path} never answered:\n{_logs(container)}")


def wait_ready(base: str, container: str, timeout: float = 60) -> httpx.Response:
    """What a kubelet's readiness probe does and podman does not: /readyz until 200."""
    deadline = time.monotonic() + timeout
    response = wait_answering(base, "/readyz", container, timeout)
    while response.status_code != 200:
        assert time.monotonic() < deadline, f"/readyz {response.status_code}: {response.text}"
        time.sleep(0.3)
        response = httpx.get(f"{base}/readyz", timeout=2)
    return response


def ctafleet(container: str, *args: str, stdin: str | None = None) -> str:
    """The image's CLI inside a running pod's container (its environment: ConfigMap+Secret)."""
    result = subprocess.run(
        [PODMAN, "exec", "-i", container, "ctafleet", *args],
        input=stdin or "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"ctafleet {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


def assert_locked_down(container: str) -> None:
    """The pod's securityContext as its process sees it from inside (one exec: each costs a
    third of a second)."""
    script = (
        "id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/1/status; "
        "touch /opt/venv/x 2>&1; touch /data/x /tmp/x && echo emptyDir writable"
    )
    out = podman("exec", container, "sh", "-c", script, check=False).stdout.splitlines()
    assert out == [
        "10001",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",  # RuntimeDefault: a filter is loaded
        "touch: cannot touch '/opt/venv/x': Read-only file system",
        "emptyDir writable",  # the pod's volumes are the only writable places
    ], out


def assert_secrets_are_files(container: str, secret: Doc) -> None:
    """The Secret reached the process as the files CTAFLEET_SECRETS_DIR names, read-only, and
    none of its values is in the container's environment."""
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    env = inspect(container, "container")["Config"]["Env"]
    assert "CTAFLEET_SECRETS_DIR=/run/secrets/ctafleet" in env
    leaked = [k for k, v in values.items() if any(v in e for e in env)]
    assert leaked == [], f"{container}: in the environment: {leaked}"
    listing = podman("exec", container, "ls", "/run/secrets/ctafleet").stdout.split()
    assert sorted(listing) == sorted(values)
    out = podman(
        "exec", container, "sh", "-c", "touch /run/secrets/ctafleet/x 2>&1", check=False
    ).stdout
    assert "Read-only file system" in out, out


def _batches_committed(metrics: str) -> float:
    found = re.search(r"^ctafleet_ingest_batch_size_count (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.slow
@pytest.mark.xdist_group("podman")  # see tests/kit/podman.PODMAN_TESTS
def test_the_release_migrates_serves_and_drains_under_kube_play(
    release: Release, kube: KubePlay, app_image: str, tmp_path: Path
) -> None:
    def adapted(docs: list[Doc], name: str) -> Played:
        return adapt(docs, tmp_path / name, image=app_image, suffix=kube.suffix, host_network=True)

    # docs/kubernetes.md step 4: the ConfigMap and the Job first, wait for it, then the rest.
    migrate = adapted([release.config, release.secret, release.job], "migrate")
    kube.play(migrate)
    job = migrate.containers["ctafleet-migrate/migrate"]
    assert wait_exited(job) == 0, _logs(job)
    assert "database at revision" in _logs(job)

    app = adapted([release.config, release.secret, release.api, release.worker], "app")
    kube.play(app)
    api, worker = app.containers["api/api"], app.containers["worker/worker"]
    base = f"http://127.0.0.1:{app.ports['api/http']}"
    ready = wait_ready(base, api)
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
    # The liveness probes, which podman does run (when asked: nothing schedules them here).
    for container in (api, worker):
        check = podman("healthcheck", "run", container, check=False, timeout=30)
        assert check.returncode == 0, f"{container}: {check.stdout}{check.stderr}"

    slug = f"kp-{uuid.uuid4().hex[:8]}"
    email = f"admin@{slug}.example.org"
    ctafleet(api, "tenants", "create", slug, "--name", "Kube play check")
    admin = ("--tenant", slug, "--email", email, "--role", "admin")
    ctafleet(api, "users", "create", *admin, stdin=PASSWORD)
    unique_id = f"imei-{uuid.uuid4().hex[:12]}"
    with httpx.Client(base_url=base, timeout=10) as client:
        r = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        r = client.post(
            "/api/v1/devices",
            json={"unique_id": unique_id, "name": "Tracker", "protocol": "osmand"},
            headers={"authorization": f"Bearer {r.json()['access_token']}"},
        )
        assert r.status_code == 201, r.text
        credential = r.json()["credential"]
        position = {"id": unique_id, "token": credential, "lat": "41.88", "lon": "-87.63"}
        r = client.get("/ingest/osmand", params=position)
        assert r.status_code == 200, r.text

    # The api only queues (in_process_worker false, Redis set): the worker pod writes it.
    deadline = time.monotonic() + 30
    while not asyncio.run(fix_times(release.db.owner_url, unique_id)):
        assert time.monotonic() < deadline, f"never stored; worker:\n{_logs(worker)}"
        time.sleep(0.2)
    metrics = httpx.get(f"http://127.0.0.1:{app.ports['worker/metrics']}/metrics", timeout=5)
    assert _batches_committed(metrics.text) >= 1, "the worker committed no batch"

    for container, workload in ((api, release.api), (worker, release.worker)):
        assert_locked_down(container)
        assert_secrets_are_files(container, release.secret)
        # The memory limit as rendered ("512Mi", "768Mi") is the container's cgroup limit.
        limit = workload["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limit["memory"].endswith("Mi")
        cgroup = inspect(container, "container")["HostConfig"]["Memory"]
        assert cgroup == int(limit["memory"][:-2]) * 2**20

    kube.down()
    assert kube.leftovers() == []


@pytest.mark.slow
@pytest.mark.xdist_group("podman")  # see tests/kit/podman.PODMAN_TESTS
def test_without_the_migration_the_api_is_not_ready(
    release: Release, kube: KubePlay, app_image: str, tmp_path: Path
) -> None:
    # The Job is left out: the database stays empty, as when a release skips step 4.
    played = adapt(
        [release.config, release.secret, release.api],
        tmp_path / "app",
        image=app_image,
        suffix=kube.suffix,
        host_network=True,
        readiness_as_liveness=True,
    )
    kube.play(played)
    api = played.containers["api/api"]
    port = played.ports["api/http"]
    base = f"http://127.0.0.1:{port}"
    # The process is up and alive (its liveness URL passes) ...
    assert wait_answering(base, "/healthz", api).status_code == 200
    live = podman("exec", api, "healthcheck", f"{base}/healthz", check=False)
    assert live.returncode == 0, live.stderr
    # ... but not ready, and stays so: the kubelet would never send it traffic.
    for _ in range(2):
        r = httpx.get(f"{base}/readyz", timeout=5)
        assert r.status_code == 503, r.text
        assert r.json()["checks"] == {"database": "error", "redis": "ok"}
        time.sleep(0.5)
    # The readiness probe, run as podman's healthcheck, fails the way CI can see.
    check = podman("healthcheck", "run", api, check=False, timeout=30)
    assert check.returncode == 1, check
    assert "unhealthy" in check.stdout + check.stderr
    health = _state(api)["Health"]
    assert health["Status"] != "healthy"
    assert health["Log"][-1]["ExitCode"] == 1
    assert "HTTP Error 503" in health["Log"][-1]["Output"], health
    # Not run again: at failureThreshold failures podman applies its on-failure action to
    # what it takes for a liveness probe (kube play sets restart), which no kubelet does for
    # readiness.


def test_the_adapter_changes_only_what_podman_needs(tmp_path: Path) -> None:
    """Every difference between a rendered object and its played copy is one the adapter
    documents; anything else (a lost setting, a changed security context) fails here."""
    docs = render("staging")
    rendered = [one(docs, "Deployment", "api"), one(docs, "Job", "ctafleet-migrate")]
    secret = {
        "kind": "Secret",
        "metadata": {"name": "ctafleet-secrets"},
        "stringData": {"K": "v w"},
    }
    played = adapt(
        [*rendered, secret], tmp_path, image="localhost/x:y", suffix="s1", host_network=True
    )
    api, pod, secret_map = yaml.safe_load_all(played.path.read_text())
    port = played.ports["api/http"]
    c = "spec.template.spec.containers[0]"
    assert sorted(_diff(rendered[0], api)) == sorted(
        [
            "metadata.annotations",  # both checkov skips are longer than 63
            "metadata.name",
            f"{c}.args[2]",
            f"{c}.args[4]",
            f"{c}.image",
            f"{c}.imagePullPolicy",
            f"{c}.livenessProbe.exec",
            f"{c}.livenessProbe.httpGet",
            f"{c}.ports",
            f"{c}.readinessProbe",
            f"{c}.startupProbe",
            f"{c}.volumeMounts[0].name",
            f"{c}.volumeMounts[1].name",
            "spec.template.spec.hostNetwork",
            "spec.template.spec.volumes[0].configMap",
            "spec.template.spec.volumes[0].secret",
            "spec.template.spec.volumes[1].name",
            "spec.template.spec.volumes[2].name",
        ]
    )
    assert api["spec"]["template"]["spec"]["volumes"][0]["configMap"] == {
        "name": "ctafleet-secrets-s1",
        "defaultMode": 0o440,
    }
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][1:5] == ["--host", "127.0.0.1", "--port", str(port)]
    assert container["livenessProbe"]["exec"]["command"] == [
        "healthcheck",
        f"http://127.0.0.1:{port}/healthz",
    ]
    assert played.containers["api/api"] == "api-s1-pod-0-api"
    # The Job is its pod template, played once as a Pod.
    template = rendered[1]["spec"]["template"]
    assert (pod["kind"], pod["metadata"]["name"]) == ("Pod", "ctafleet-migrate-s1")
    assert pod["metadata"]["labels"] == template["metadata"]["labels"]
    assert sorted(_diff(template["spec"], pod["spec"])) == [
        "containers[0].image",
        "containers[0].imagePullPolicy",
        "containers[0].volumeMounts[0].name",
        "containers[0].volumeMounts[1].name",
        "hostNetwork",
        "volumes[0].configMap",
        "volumes[0].secret",
        "volumes[1].name",
        "volumes[2].name",
    ]
    assert pod["spec"]["restartPolicy"] == "Never"
    # The Secret is played as a ConfigMap of its keys, in a file only its owner reads.
    assert (secret_map["kind"], secret_map["metadata"]["name"]) == (
        "ConfigMap",
        "ctafleet-secrets-s1",
    )
    assert secret_map["data"] == {"K": "v w"}
    assert played.path.stat().st_mode & 0o777 == 0o600
    assert played.volumes == {"ctafleet-secrets-s1"}


def _diff(a: object, b: object, path: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                yield sub
            else:
                yield from _diff(a[key], b[key], sub)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield path
