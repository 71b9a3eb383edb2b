"""Structural checks over the rendered objects (tests/deploy/k8s/checks.py): selectors match
the pods they are meant for and only those, every container meets Pod Security "restricted",
probes ask what the real processes serve, every variable is a setting, the NetworkPolicies
allow the architecture's flows and nothing else tried here. Each check is also fed a broken
copy and must report it."""

from __future__ import annotations

import functools
import io
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctafleet.config import HttpSettings, TelemetrySettings, settings_problems
from ctafleet.config_docs import iter_fields
from tests.deploy.k8s import checks
from tests.kit.k8s import OVERLAYS, Doc, one, pod_spec, render, select, template_keys

SETTINGS = {var for _, var, _, _ in iter_fields()}


@functools.cache
def api_routes() -> frozenset[str]:
    from ctafleet.app import create_app
    from ctafleet.config import load_settings

    app = create_app(load_settings(environment="test", data_dir=Path("/nonexistent")))
    return frozenset(p for r in app.routes if (p := getattr(r, "path", None)))


def metrics_served(path: str) -> bool:
    """Whether the worker's and bridge's metrics listener (prometheus_client's exporter on
    the app's registry, as `--metrics-port` starts it) answers the path with metrics."""
    from prometheus_client import make_wsgi_app

    from ctafleet.observability import metrics

    status: list[str] = []
    body = b"".join(
        make_wsgi_app(metrics.REGISTRY)(
            {
                "REQUEST_METHOD": "GET",
                "PATH_INFO": path,
                "QUERY_STRING": "",
                "wsgi.input": io.BytesIO(),
            },
            lambda s, _h: status.append(s),
        )
    )
    return status[0].startswith("200") and b"ctafleet_" in body


def validate_config(data: dict[str, str], tmp: Path) -> list[str]:
    """The model's verdict on the ConfigMap's values, with stand-in secrets."""
    stand_ins = {
        "CTAFLEET_AUTH__SECRET_KEY": secrets.token_urlsafe(48),
        "CTAFLEET_DATABASE__URL": "postgresql://app:pw@db:5432/ctafleet",
        "CTAFLEET_REDIS__URL": "redis://:pw@redis:6379/0",
    }
    env = tmp / "config.env"
    env.write_text("".join(f"{k}='{v}'\n" for k, v in {**data, **stand_ins}.items()))
    return settings_problems(env)


def structure_problems(docs: list[Doc], tmp: Path) -> list[str]:
    required, optional = template_keys()
    return (
        checks.selector_problems(docs)
        + checks.pod_problems(docs)
        + checks.probe_problems(docs, set(api_routes()), metrics_served, checks.nginx_locations())
        + checks.env_problems(
            docs, SETTINGS, set(required + optional), lambda d: validate_config(d, tmp)
        )
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_pass_every_structural_check(overlay: str, tmp_path: Path) -> None:
    assert structure_problems(render(overlay), tmp_path) == []


# --- each check can fail --------------------------------------------------------------------


def _broken(mutate: Callable[[list[Doc]], Any]) -> list[Doc]:
    docs = render("staging")
    mutate(docs)
    return docs


def _container(docs: list[Doc], name: str) -> dict[str, Any]:
    return pod_spec(one(docs, "Deployment", name))["containers"][0]  # type: ignore[no-any-return]


BROKEN: dict[str, tuple[Callable[[list[Doc]], Any], str]] = {
    "service selects nothing": (
        lambda d: one(d, "Service", "api")["spec"]["selector"].update(
            {"app.kubernetes.io/component": "apii"}
        ),
        "Service ctafleet/api selects no pods",
    ),
    "service selects too much": (
        lambda d: one(d, "Service", "api")["spec"]["selector"].pop("app.kubernetes.io/component"),
        "Service ctafleet/api selects ['api', 'ctafleet-backup', 'ctafleet-migrate', 'mqtt', "
        "'worker']",
    ),
    "pdb selects another workload": (
        lambda d: one(d, "PodDisruptionBudget", "worker")["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/component": "api"}
        ),
        "PodDisruptionBudget ctafleet/worker selects ['api'], want [worker]",
    ),
    "no pdb for a multi-replica workload": (
        lambda d: d.remove(one(d, "PodDisruptionBudget", "edge")),
        "Deployment edge runs 2 replicas without a PDB",
    ),
    "autoscaler on a missing deployment": (
        lambda d: one(d, "HorizontalPodAutoscaler", "api")["spec"]["scaleTargetRef"].update(
            {"name": "apis"}
        ),
        "HorizontalPodAutoscaler api scales Deployment apis, which does not exist",
    ),
    "podmonitor on a port that does not exist": (
        lambda d: one(d, "PodMonitor", "worker")["spec"]["podMetricsEndpoints"][0].update(
            {"port": "prom"}
        ),
        "PodMonitor worker: no port prom",
    ),
    "servicemonitor selects nothing": (
        lambda d: one(d, "ServiceMonitor", "api")["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/name": "fleet"}
        ),
        "ServiceMonitor ctafleet/api selects Services [], want [api]",
    ),
    "networkpolicy selects no pod": (
        lambda d: one(d, "NetworkPolicy", "mqtt", namespace="ctafleet")["spec"]["podSelector"][
            "matchLabels"
        ].update({"app.kubernetes.io/component": "bridge"}),
        "NetworkPolicy ctafleet/mqtt selects no pod",
    ),
    "namespace without restricted pod security": (
        lambda d: one(d, "Namespace", "ctafleet-data")["metadata"]["labels"].update(
            {"pod-security.kubernetes.io/enforce": "baseline"}
        ),
        "Namespace ctafleet-data: Pod Security enforce is not restricted",
    ),
    "writable root filesystem": (
        lambda d: _container(d, "worker")["securityContext"].pop("readOnlyRootFilesystem"),
        "Deployment worker container worker: the root filesystem is writable",
    ),
    "privilege escalation": (
        lambda d: _container(d, "edge")["securityContext"].update(
            {"allowPrivilegeEscalation": True}
        ),
        "Deployment edge container edge: allowPrivilegeEscalation is not false",
    ),
    "capability added": (
        lambda d: _container(d, "api")["securityContext"]["capabilities"].update(
            {"add": ["NET_ADMIN"]}
        ),
        "Deployment api container api: adds capabilities ['NET_ADMIN']",
    ),
    "no seccomp": (
        lambda d: [
            pod_spec(one(d, "Deployment", "mqtt"))["securityContext"].pop("seccompProfile"),
            _container(d, "mqtt")["securityContext"].pop("seccompProfile"),
        ],
        "Deployment mqtt container mqtt: seccomp profile None",
    ),
    "no memory limit": (
        lambda d: _container(d, "api")["resources"]["limits"].pop("memory"),
        "Deployment api container api: no limits for ['memory']",
    ),
    "unpinned image": (
        lambda d: _container(d, "worker").update(
            {"image": "ctafleet.azurecr.io/ctafleet/app:latest"}
        ),
        "Deployment worker container worker: image 'ctafleet.azurecr.io/ctafleet/app:latest' "
        "is not pinned",
    ),
    "no readiness probe": (
        lambda d: _container(d, "edge").pop("readinessProbe"),
        "Deployment edge container edge: no readinessProbe",
    ),
    "rolling update that lowers capacity": (
        lambda d: one(d, "Deployment", "api")["spec"]["strategy"]["rollingUpdate"].update(
            {"maxUnavailable": 1}
        ),
        "Deployment api: a rolling update may lower capacity (maxUnavailable != 0)",
    ),
    "grace shorter than the drain": (
        lambda d: pod_spec(one(d, "Deployment", "api")).update(
            {"terminationGracePeriodSeconds": 30}
        ),
        "Deployment api: terminationGracePeriodSeconds 30 < preStop 10 s + the 60 s a request "
        "may take",
    ),
    "token mounted": (
        lambda d: pod_spec(one(d, "Deployment", "worker")).update(
            {"automountServiceAccountToken": True}
        ),
        "Deployment worker: the service account token is mounted",
    ),
    "probe path the api does not serve": (
        lambda d: _container(d, "api")["readinessProbe"]["httpGet"].update({"path": "/ready"}),
        "Deployment api container api: readinessProbe path /ready is not served",
    ),
    "probe on a port the api does not listen on": (
        lambda d: _container(d, "api")["livenessProbe"]["httpGet"].update({"port": 8080}),
        "Deployment api container api: livenessProbe asks port 8080, the process listens on 8000",
    ),
    "metrics listener on loopback": (
        lambda d: _container(d, "worker").update(
            {"args": ["worker", "--metrics-host", "127.0.0.1", "--metrics-port", "9100"]}
        ),
        "Deployment worker container worker: readinessProbe cannot reach a listener on 127.0.0.1",
    ),
    "option the command does not have": (
        lambda d: _container(d, "mqtt").update(
            {"args": ["mqtt", "--metrics-port", "9100", "--port", "1"]}
        ),
        "Deployment mqtt container mqtt: `ctafleet mqtt --metrics-port 9100 --port 1`: No such "
        "option: --port",
    ),
    "edge probe on no nginx location": (
        lambda d: _container(d, "edge")["livenessProbe"]["httpGet"].update(
            {"path": "/edge/health"}
        ),
        "Deployment edge container edge: livenessProbe path /edge/health is no nginx location",
    ),
    "env var that is not a setting": (
        lambda d: (
            _container(d, "api")
            .setdefault("env", [])
            .append({"name": "CTAFLEET_DATABASE__HOST", "value": "db"})
        ),
        "Deployment api container api: CTAFLEET_DATABASE__HOST is not a setting",
    ),
    "secret as environment variables": (
        lambda d: _container(d, "api")["envFrom"].append(
            {"secretRef": {"name": "ctafleet-secrets"}}
        ),
        "Deployment api container api: Secret ctafleet-secrets as environment variables",
    ),
    "secret key as an environment variable": (
        lambda d: _container(d, "worker")["env"].append(
            {
                "name": "CTAFLEET_REDIS__URL",
                "valueFrom": {"secretKeyRef": {"name": "ctafleet-secrets", "key": "r"}},
            }
        ),
        "Deployment worker container worker: CTAFLEET_REDIS__URL from a Secret as an environment",
    ),
    "secrets directory not mounted": (
        lambda d: _container(d, "mqtt")["volumeMounts"].pop(),
        "Deployment mqtt container mqtt: CTAFLEET_SECRETS_DIR /run/secrets/ctafleet is not a "
        "mounted Secret",
    ),
    "secret file named after no setting": (
        lambda d: pod_spec(one(d, "CronJob", "ctafleet-backup"))["volumes"][0]["projected"][
            "sources"
        ][0]["secret"]["items"][0].update({"path": "CTAFLEET_DATABASE_URL"}),
        "CronJob ctafleet-backup container backup: the Secret's file CTAFLEET_DATABASE_URL is not "
        "a setting",
    ),
    "configmap key that is not a setting": (
        lambda d: one(d, "ConfigMap", prefix="ctafleet-config")["data"].update(
            {"CTAFLEET_OBSERVABILITY__LOGLEVEL": "INFO"}
        ),
        "sets CTAFLEET_OBSERVABILITY__LOGLEVEL, not a setting",
    ),
    "configmap value the model refuses": (
        lambda d: one(d, "ConfigMap", prefix="ctafleet-config")["data"].update(
            {"CTAFLEET_OBSERVABILITY__LOG_LEVEL": "VERBOSE"}
        ),
        "CTAFLEET_OBSERVABILITY__LOG_LEVEL: String should match pattern",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_check_reports_a_broken_copy(case: str, tmp_path: Path) -> None:
    mutate, expected = BROKEN[case]
    problems = structure_problems(_broken(mutate), tmp_path)
    assert any(expected in p for p in problems), problems


# --- NetworkPolicies, flow by flow ----------------------------------------------------------

INTERNET = "203.0.113.20"  # documentation addresses (RFC 5737): a broker, a provider
PRIVATE = "10.0.0.5"  # some other service inside the virtual network
APP = ("api", "worker", "mqtt", "ctafleet-migrate", "ctafleet-backup")
COMMON = [
    ("ingress-nginx", "edge", 8080, "TCP", True),
    ("edge", "api", 8000, "TCP", True),
    ("prometheus", "api", 8000, "TCP", True),
    ("prometheus", "worker", 9100, "TCP", True),
    ("prometheus", "mqtt", 9100, "TCP", True),
    ("mqtt", INTERNET, 8883, "TCP", True),
    ("api", INTERNET, 443, "TCP", True),
    ("worker", INTERNET, 587, "TCP", True),
    ("ctafleet-backup", INTERNET, 443, "TCP", True),
    ("ctafleet-backup", "pushgateway", 9091, "TCP", True),
    *[(pod, "coredns", 53, "UDP", True) for pod in (*APP, "edge")],
    # must stay denied
    ("ingress-nginx", "api", 8000, "TCP", False),
    (INTERNET, "api", 8000, "TCP", False),
    (INTERNET, "edge", 8080, "TCP", False),
    ("worker", "api", 8000, "TCP", False),
    ("edge", "worker", 9100, "TCP", False),
    ("api", "mqtt", 9100, "TCP", False),
    ("edge", INTERNET, 443, "TCP", False),
    ("api", PRIVATE, 443, "TCP", False),
    ("mqtt", INTERNET, 443, "TCP", False),
    ("ctafleet-migrate", INTERNET, 443, "TCP", False),
    ("prometheus", "edge", 8080, "TCP", False),
]
SELF_MANAGED = [
    *[
        (pod, "ctafleet-db-1", 5432, "TCP", True)
        for pod in ("api", "worker", "ctafleet-migrate", "ctafleet-backup")
    ],
    *[(pod, "redis", 6379, "TCP", True) for pod in ("api", "worker", "mqtt")],
    ("keda-operator", "redis", 6379, "TCP", True),
    ("prometheus", "redis", 9121, "TCP", True),
    ("prometheus", "ctafleet-db-1", 9187, "TCP", True),
    ("cnpg-operator", "ctafleet-db-1", 8000, "TCP", True),
    ("ctafleet-db-1", "ctafleet-db-1", 5432, "TCP", True),
    ("ctafleet-db-1", INTERNET, 443, "TCP", True),  # barman-cloud to Blob Storage
    ("mqtt", "ctafleet-db-1", 5432, "TCP", False),
    ("edge", "ctafleet-db-1", 5432, "TCP", False),
    ("edge", "redis", 6379, "TCP", False),
    ("ctafleet-migrate", "redis", 6379, "TCP", False),
    ("ingress-nginx", "redis", 6379, "TCP", False),
    ("redis", INTERNET, 443, "TCP", False),
    ("keda-operator", "ctafleet-db-1", 5432, "TCP", False),
]
MANAGED = [
    *[
        (pod, "10.20.2.10", 5432, "TCP", True)
        for pod in ("api", "worker", "ctafleet-migrate", "ctafleet-backup")
    ],
    *[(pod, "10.20.3.10", 6380, "TCP", True) for pod in ("api", "worker", "mqtt")],
    ("ctafleet-backup", "10.20.4.10", 443, "TCP", True),
    ("edge", "10.20.2.10", 5432, "TCP", False),
    ("mqtt", "10.20.2.10", 5432, "TCP", False),
    ("worker", "10.20.4.10", 443, "TCP", False),
    ("api", "10.20.2.10", 6380, "TCP", False),
]
FLOWS = {"staging": COMMON + SELF_MANAGED, "production": COMMON + MANAGED}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_the_architecture_and_nothing_else(overlay: str) -> None:
    assert checks.flow_problems(render(overlay), FLOWS[overlay]) == []


def test_flow_check_reports_a_missing_and_a_too_wide_policy() -> None:
    docs = render("staging")
    docs.remove(one(docs, "NetworkPolicy", "edge", namespace="ctafleet"))
    docs.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-all", "namespace": "ctafleet-data"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]},
        }
    )
    problems = checks.flow_problems(docs, FLOWS["staging"])
    assert "ingress-nginx -> edge:8080/TCP is denied" in problems
    assert "edge -> api:8000/TCP is denied" in problems  # the edge's egress went with it
    assert "ingress-nginx -> redis:6379/TCP is allowed" in problems


# --- the worker's autoscaler against the queue ------------------------------------------------


def _queue_settings(docs: list[Doc]) -> tuple[int, str]:
    data = one(docs, "ConfigMap", prefix="ctafleet-config")["data"]
    defaults = TelemetrySettings()
    shards = int(data.get("CTAFLEET_TELEMETRY__QUEUE_SHARDS", defaults.queue_shards))
    return shards, data.get("CTAFLEET_TELEMETRY__QUEUE_PREFIX", defaults.queue_prefix)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_scales_on_every_queue_stream(overlay: str) -> None:
    docs = render(overlay)
    shards, prefix = _queue_settings(docs)
    assert checks.keda_problems(docs, shards, prefix) == []
    scaled = one(docs, "ScaledObject", "worker")["spec"]
    assert scaled["minReplicaCount"] >= 2
    hpa = one(docs, "HorizontalPodAutoscaler", "api")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert {m["type"] for m in hpa["metrics"]} == {"Resource", "Pods"}


def test_keda_check_reports_a_shard_count_change() -> None:
    docs = render("staging")
    problems = checks.keda_problems(docs, 32, "ctafleet:telemetry")
    assert any("streams missing ['ctafleet:telemetry:s16'" in p for p in problems), problems
    one(docs, "ScaledObject", "worker")["spec"]["triggers"][3]["metadata"]["consumerGroup"] = "w"
    assert any(
        "consumer group 'w'" in p for p in checks.keda_problems(docs, 16, "ctafleet:telemetry")
    )


# --- ingress, certificate and public URL ------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_certificate_and_public_url_agree(overlay: str) -> None:
    docs = render(overlay)
    cert = one(docs, "Certificate", "ctafleet-tls")
    hosts = set(cert["spec"]["dnsNames"])
    assert [h.split(".")[0] for h in cert["spec"]["dnsNames"]] == ["fleet", "www", "api"]
    issuer = cert["spec"]["issuerRef"]["name"]
    assert (
        issuer
        == {"staging": "letsencrypt-staging", "production": "letsencrypt-production"}[overlay]
    )
    assert one(docs, "ClusterIssuer", issuer)
    max_body = HttpSettings().max_body_bytes
    ping = TelemetrySettings().live_ping_s
    for ing in select(docs, "Ingress"):
        notes = ing["metadata"]["annotations"]
        assert ing["spec"]["ingressClassName"] == "nginx"
        assert notes["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
        size = notes["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert int(size.removesuffix("m")) * 1024 * 1024 >= max_body
        for tls in ing["spec"]["tls"]:
            assert set(tls["hosts"]) == hosts
            assert tls["secretName"] == cert["spec"]["secretName"]
        for rule in ing["spec"]["rules"]:
            assert rule["host"] in hosts
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = one(docs, "Service", backend["name"])
                assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}
                if path["path"] != "/":
                    assert path["path"] in api_routes()
                    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > 2 * ping
    public = one(docs, "ConfigMap", prefix="ctafleet-config")["data"]["CTAFLEET_PUBLIC_URL"]
    assert public == f"https://{cert['spec']['dnsNames'][0]}"
