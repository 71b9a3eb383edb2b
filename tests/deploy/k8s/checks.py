"""Checks over rendered Kubernetes objects. Each returns the problems it finds as readable
lines (empty: none), so a test asserts `== []` on the real render and asserts a specific
problem on a deliberately broken copy."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kit.k8s import POD_KINDS, ROOT, Doc, pod_labels, pod_spec, select

APP_IMAGE = "ctafleet.azurecr.io/ctafleet/app"
EDGE_IMAGE = "ctafleet.azurecr.io/ctafleet/edge"
# Variables set in app containers that are not settings, and why.
ENV_NOT_SETTINGS = {
    "HOME": "pg_dump and age read their dotfiles under HOME",
    "CTAFLEET_SECRETS_DIR": "where the settings' files are (read before the model, config.py)",
}
SECRETS_DIR = "CTAFLEET_SECRETS_DIR"
# Single-replica Deployments that replace their pod instead of rolling, and why.
RECREATE = {"mqtt": "one MQTT session per client id: two bridges would push each other off"}
PSS_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
POD_CIDR = ipaddress.ip_network("10.244.0.0/16")


# --- label selectors ----------------------------------------------------------------------


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels/matchExpressions) or a Service's plain map."""
    if selector is None:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        plain = selector
        return all(labels.get(k) == v for k, v in plain.items())
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class Pod:
    """A pod template of the render, an operator-made pod, or one outside the repository."""

    name: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    ip: str = ""
    workload: Doc | None = None


def namespace_labels(docs: Iterable[Doc]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for doc in select(docs, "Namespace"):
        name = doc["metadata"]["name"]
        out[name] = {**doc["metadata"].get("labels", {}), "kubernetes.io/metadata.name": name}
    return out


# Pods the architecture talks to that other installs run, by their standard labels.
EXTERNAL_PODS = [
    Pod("ingress-nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
    Pod(
        "pushgateway",
        "monitoring",
        {"app.kubernetes.io/name": "prometheus-pushgateway"},
        {"http": 9091},
    ),
    Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53}),
    Pod("cnpg-operator", "cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"}),
    Pod("keda-operator", "keda", {"app.kubernetes.io/name": "keda-operator"}),
]


def pods(docs: list[Doc]) -> list[Pod]:
    """Every pod the render makes (CloudNativePG instances included) and the outside ones."""
    out: list[Pod] = []
    for doc in docs:
        if doc["kind"] in POD_KINDS:
            ports = {
                p.get("name", str(p["containerPort"])): p["containerPort"]
                for c in pod_spec(doc)["containers"]
                for p in c.get("ports", [])
            }
            out.append(
                Pod(
                    doc["metadata"]["name"],
                    doc["metadata"]["namespace"],
                    pod_labels(doc),
                    ports,
                    workload=doc,
                )
            )
        elif doc["kind"] == "Cluster" and doc["apiVersion"].startswith("postgresql.cnpg.io/"):
            out.append(
                Pod(
                    f"{doc['metadata']['name']}-1",
                    doc["metadata"]["namespace"],
                    {"cnpg.io/cluster": doc["metadata"]["name"], "cnpg.io/podRole": "instance"},
                    {"postgresql": 5432, "status": 8000, "metrics": 9187},
                )
            )
    out += [Pod(p.name, p.namespace, dict(p.labels), dict(p.ports)) for p in EXTERNAL_PODS]
    for n, pod in enumerate(out):
        pod.ip = str(POD_CIDR[n + 10])
    return out


def _workloads_matching(
    selector: dict[str, Any] | None, namespace: str, all_pods: list[Pod]
) -> list[str]:
    return sorted(
        p.name
        for p in all_pods
        if p.workload is not None and p.namespace == namespace and matches(selector, p.labels)
    )


def _autoscaled(docs: list[Doc]) -> dict[str, int]:
    """Deployment name -> minimum replicas of the autoscaler that owns it."""
    out = {}
    for doc in select(docs, "HorizontalPodAutoscaler") + select(docs, "ScaledObject"):
        ref = doc["spec"]["scaleTargetRef"]
        out[ref["name"]] = doc["spec"].get("minReplicas", doc["spec"].get("minReplicaCount", 1))
    return out


def replicas(doc: Doc, docs: list[Doc]) -> int:
    auto = _autoscaled(docs)
    if doc["kind"] == "Deployment" and doc["metadata"]["name"] in auto:
        return auto[doc["metadata"]["name"]]
    if doc["kind"] in ("Job", "CronJob"):
        return 1
    return int(doc["spec"].get("replicas", 1))


def selector_problems(docs: list[Doc]) -> list[str]:
    """Services, PDBs, monitors and autoscalers each select the workload of their own name
    and only it; NetworkPolicy selectors and peers match pods that exist."""
    problems: list[str] = []
    all_pods = pods(docs)
    ns_labels = namespace_labels(docs)
    by_name = {(p.namespace, p.name): p for p in all_pods if p.workload is not None}

    def exactly_own(kind: str, doc: Doc, selector: Any) -> None:
        name, ns = doc["metadata"]["name"], doc["metadata"]["namespace"]
        got = _workloads_matching(selector, ns, all_pods)
        if got != [name]:
            problems.append(f"{kind} {ns}/{name} selects {got or 'no pods'}, want [{name}]")

    services = select(docs, "Service")
    for svc in services:
        exactly_own("Service", svc, svc["spec"].get("selector"))
        pod = by_name.get((svc["metadata"]["namespace"], svc["metadata"]["name"]))
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if pod and target not in pod.ports and target not in pod.ports.values():
                problems.append(
                    f"Service {svc['metadata']['name']} port {port['port']} targets {target!r}, "
                    f"which its pods do not declare"
                )
    for pdb in select(docs, "PodDisruptionBudget"):
        exactly_own("PodDisruptionBudget", pdb, pdb["spec"].get("selector"))
    for pm in select(docs, "PodMonitor"):
        exactly_own("PodMonitor", pm, pm["spec"].get("selector"))
        pod = by_name.get((pm["metadata"]["namespace"], pm["metadata"]["name"]))
        for ep in pm["spec"]["podMetricsEndpoints"]:
            if pod and ep.get("port") not in pod.ports:
                problems.append(f"PodMonitor {pm['metadata']['name']}: no port {ep.get('port')}")
    for sm in select(docs, "ServiceMonitor"):
        name, ns = sm["metadata"]["name"], sm["metadata"]["namespace"]
        chosen = [
            s
            for s in services
            if s["metadata"]["namespace"] == ns
            and matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))
        ]
        names = sorted(s["metadata"]["name"] for s in chosen)
        if names != [name]:
            problems.append(f"ServiceMonitor {ns}/{name} selects Services {names}, want [{name}]")
        ports = {p.get("name") for s in chosen for p in s["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in ports:
                problems.append(f"ServiceMonitor {name}: the Service has no port {ep.get('port')}")
    targeted: dict[str, str] = {}
    for scaler in select(docs, "HorizontalPodAutoscaler") + select(docs, "ScaledObject"):
        ref = scaler["spec"]["scaleTargetRef"]
        ns, label = (
            scaler["metadata"]["namespace"],
            f"{scaler['kind']} {scaler['metadata']['name']}",
        )
        target = by_name.get((ns, ref["name"]))
        if (
            target is None
            or target.workload is None
            or target.workload["kind"] != ref.get("kind", "Deployment")
        ):
            problems.append(f"{label} scales {ref.get('kind')} {ref['name']}, which does not exist")
            continue
        if ref["name"] in targeted:
            problems.append(f"{label} and {targeted[ref['name']]} both scale {ref['name']}")
        targeted[ref["name"]] = label
        if "replicas" in target.workload["spec"]:
            problems.append(f"Deployment {ref['name']} sets replicas although {label} owns them")
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet") and replicas(doc, docs) > 1:
            name, ns = doc["metadata"]["name"], doc["metadata"]["namespace"]
            if not any(
                p["metadata"]["namespace"] == ns and matches(p["spec"]["selector"], pod_labels(doc))
                for p in select(docs, "PodDisruptionBudget")
            ):
                problems.append(
                    f"{doc['kind']} {name} runs {replicas(doc, docs)} replicas without a PDB"
                )
    for pol in select(docs, "NetworkPolicy"):
        ns, name = pol["metadata"]["namespace"], pol["metadata"]["name"]
        sel = pol["spec"]["podSelector"]
        if sel and not any(p.namespace == ns and matches(sel, p.labels) for p in all_pods):
            problems.append(f"NetworkPolicy {ns}/{name} selects no pod")
        for rule in pol["spec"].get("ingress", []) + pol["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "ipBlock" in peer:
                    continue
                if not any(_peer_matches(peer, ns, p, ns_labels) for p in all_pods):
                    problems.append(f"NetworkPolicy {ns}/{name}: peer {peer} matches no pod")
    return problems


# --- NetworkPolicy evaluation ---------------------------------------------------------------


def _ns_of(namespace: str, ns_labels: dict[str, dict[str, str]]) -> dict[str, str]:
    return ns_labels.get(namespace, {"kubernetes.io/metadata.name": namespace})


def _peer_matches(
    peer: dict[str, Any], policy_ns: str, pod: Pod, ns_labels: dict[str, dict[str, str]]
) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(pod.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], _ns_of(pod.namespace, ns_labels)):
            return False
    elif pod.namespace != policy_ns:
        return False
    return "podSelector" not in peer or matches(peer["podSelector"], pod.labels)


def _port_matches(rule: dict[str, Any], port: int, protocol: str, dst: Pod) -> bool:
    if not rule.get("ports"):
        return True
    for p in rule["ports"]:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        number = dst.ports.get(want) if isinstance(want, str) else want
        if number is not None and number <= port <= p.get("endPort", number):
            return True
    return False


def _side(
    docs_policies: list[Doc],
    kind: str,
    pod: Pod,
    peer: Pod,
    port: int,
    protocol: str,
    ns_labels: dict[str, dict[str, str]],
    dst: Pod,
) -> bool:
    """Whether `pod`'s policies of this kind (Ingress: peer connects to pod; Egress: pod
    connects to peer) let the connection through."""
    if pod.namespace not in ns_labels:
        return True  # a namespace this repository does not make: its policies are not ours
    applying = [
        p
        for p in docs_policies
        if p["metadata"]["namespace"] == pod.namespace
        and kind in p["spec"].get("policyTypes", ["Ingress"])
        and matches(p["spec"]["podSelector"], pod.labels)
    ]
    if not applying:
        return True
    key, peers_key = ("egress", "to") if kind == "Egress" else ("ingress", "from")
    for pol in applying:
        for rule in pol["spec"].get(key, []):
            peers = rule.get(peers_key)
            peer_ok = not peers or any(
                _peer_matches(pe, pod.namespace, peer, ns_labels) for pe in peers
            )
            if peer_ok and _port_matches(rule, port, protocol, dst):
                return True
    return False


def allowed(docs: list[Doc], src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
    """Whether src may open a connection to dst:port under the render's NetworkPolicies (an
    address outside the cluster is a Pod without namespace)."""
    policies = select(docs, "NetworkPolicy")
    ns_labels = namespace_labels(docs)
    egress = not src.namespace or _side(
        policies, "Egress", src, dst, port, protocol, ns_labels, dst
    )
    ingress = not dst.namespace or _side(
        policies, "Ingress", dst, src, port, protocol, ns_labels, dst
    )
    return egress and ingress


def external(ip: str) -> Pod:
    return Pod(ip, "", {}, ip=ip)


def flow_problems(docs: list[Doc], flows: list[tuple[str, str, int, str, bool]]) -> list[str]:
    """flows: (source pod, destination pod or IP address, port, protocol, should be allowed)."""
    by_name = {p.name: p for p in pods(docs)}
    problems = []
    for src_name, dst_name, port, protocol, want in flows:
        src = by_name.get(src_name) or external(src_name)
        dst = by_name.get(dst_name) or external(dst_name)
        got = allowed(docs, src, dst, port, protocol)
        if got != want:
            verb = "allowed" if got else "denied"
            problems.append(f"{src_name} -> {dst_name}:{port}/{protocol} is {verb}")
    return problems


# --- pods and containers ------------------------------------------------------------------


def image_pinned(image: str) -> bool:
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    tail = image.rsplit("/", 1)[-1]
    return ":" in tail and tail.rsplit(":", 1)[1] not in ("", "latest")


def _grace_needed(docs: list[Doc]) -> int:
    """The longest a proxied request may take: the main Ingress's read timeout."""
    longest = 0
    for ing in select(docs, "Ingress"):
        notes = ing["metadata"].get("annotations", {})
        if "/api/v1/live" in str(ing["spec"]):
            continue  # WebSockets are closed by the api's shutdown, not waited for
        longest = max(longest, int(notes.get("nginx.ingress.kubernetes.io/proxy-read-timeout", 60)))
    return longest


def pod_problems(docs: list[Doc]) -> list[str]:
    """Pod Security "restricted" for every container, read-only root, resources, probes,
    pinned images; for multi-replica workloads zone spread, anti-affinity and a rolling
    update that never lowers capacity; behind a Service, a preStop and a grace period that
    cover the drain."""
    problems: list[str] = []
    accounts = {
        (a["metadata"]["namespace"], a["metadata"]["name"]): a
        for a in select(docs, "ServiceAccount")
    }
    services = select(docs, "Service")
    drain = _grace_needed(docs)
    for ns in select(docs, "Namespace"):
        labels = ns["metadata"].get("labels", {})
        for mode in ("enforce", "audit", "warn"):
            if labels.get(f"pod-security.kubernetes.io/{mode}") != "restricted":
                problems.append(
                    f"Namespace {ns['metadata']['name']}: Pod Security {mode} is not restricted"
                )
    namespaces = {n["metadata"]["name"] for n in select(docs, "Namespace")}
    for doc in docs:
        if doc["kind"] not in POD_KINDS:
            continue
        if doc["metadata"]["namespace"] not in namespaces:
            problems.append(
                f"{doc['kind']} {doc['metadata']['name']}: its namespace is not rendered"
            )
        name, ns = doc["metadata"]["name"], doc["metadata"]["namespace"]
        label = f"{doc['kind']} {name}"
        spec = pod_spec(doc)
        psc = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{label}: the service account token is mounted")
        account = accounts.get((ns, spec.get("serviceAccountName", "default")))
        if account is not None and account.get("automountServiceAccountToken") is not False:
            problems.append(
                f"{label}: ServiceAccount {spec['serviceAccountName']} mounts its token"
            )
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                problems.append(f"{label}: {host}")
        for vol in spec.get("volumes", []):
            kinds = set(vol) - {"name"}
            if not kinds <= PSS_VOLUMES:
                problems.append(f"{label}: volume {vol['name']} of type {sorted(kinds)}")
        if psc.get("runAsUser") == 0 or psc.get("runAsGroup") == 0:
            problems.append(f"{label}: the pod runs as root")
        containers = spec.get("initContainers", []) + spec["containers"]
        for c in containers:
            where = f"{label} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []):
                problems.append(f"{where}: capabilities are not dropped (drop: [ALL])")
            if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
                problems.append(f"{where}: adds capabilities {caps['add']}")
            if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if sc.get("runAsUser", psc.get("runAsUser")) in (0, None):
                problems.append(f"{where}: no non-zero runAsUser")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{where}: seccomp profile {seccomp!r}")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: the root filesystem is writable")
            for port in c.get("ports", []):
                if "hostPort" in port:
                    problems.append(f"{where}: hostPort {port['hostPort']}")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(res.get(part, {}))
                if missing:
                    problems.append(f"{where}: no {part} for {sorted(missing)}")
            if not image_pinned(c.get("image", "")):
                problems.append(f"{where}: image {c.get('image')!r} is not pinned")
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            for c in spec["containers"]:
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    if probe not in c:
                        problems.append(f"{label} container {c['name']}: no {probe}")
        count = replicas(doc, docs)
        if doc["kind"] == "Deployment":
            strategy = doc["spec"].get("strategy", {})
            if strategy.get("type") == "Recreate":
                if name not in RECREATE or count > 1:
                    problems.append(f"{label}: Recreate drops every replica at once")
            elif strategy.get("rollingUpdate", {}).get("maxUnavailable") != 0:
                problems.append(
                    f"{label}: a rolling update may lower capacity (maxUnavailable != 0)"
                )
        if count > 1:
            keys = {t["topologyKey"] for t in spec.get("topologySpreadConstraints", [])}
            if "topology.kubernetes.io/zone" not in keys:
                problems.append(f"{label}: {count} replicas not spread across zones")
            if not spec.get("affinity", {}).get("podAntiAffinity"):
                problems.append(f"{label}: {count} replicas without pod anti-affinity")
        routed = any(
            s["metadata"]["namespace"] == ns and matches(s["spec"].get("selector"), pod_labels(doc))
            for s in services
        )
        if routed and doc["kind"] == "Deployment":
            grace = spec.get("terminationGracePeriodSeconds", 30)
            for c in spec["containers"]:
                command = (
                    c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                )
                if command[:1] != ["sleep"] or len(command) != 2:
                    problems.append(
                        f"{label} container {c['name']}: behind a Service without a preStop sleep"
                    )
                    continue
                if grace < int(command[1]) + drain:
                    problems.append(
                        f"{label}: terminationGracePeriodSeconds {grace} < preStop {command[1]} s "
                        f"+ the {drain} s a request may take"
                    )
    return problems


# --- environment and settings ---------------------------------------------------------------


def app_containers(docs: list[Doc], image: str = APP_IMAGE) -> list[tuple[Doc, dict[str, Any]]]:
    out = []
    for doc in docs:
        if doc["kind"] in POD_KINDS:
            spec = pod_spec(doc)
            for c in spec.get("initContainers", []) + spec["containers"]:
                if c.get("image", "").split("@")[0].rsplit(":", 1)[0] == image:
                    out.append((doc, c))
    return out


def env_problems(
    docs: list[Doc],
    settings: set[str],
    secret_keys: set[str],
    validate: Callable[[dict[str, str]], list[str]],
) -> list[str]:
    """Every variable an app container gets (env, ConfigMaps, the Secret's files) is a setting
    of the model (or a listed exception), the ConfigMap's values pass the model's validation,
    and no Secret reaches a container as environment variables."""
    problems: list[str] = []
    configmaps = {c["metadata"]["name"]: c for c in select(docs, "ConfigMap")}
    checked: set[str] = set()
    for doc, c in app_containers(docs):
        where = f"{doc['kind']} {doc['metadata']['name']} container {c['name']}"
        for item in c.get("env", []):
            var = item["name"]
            if var not in settings and var not in ENV_NOT_SETTINGS:
                problems.append(f"{where}: {var} is not a setting")
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                ref = source["configMapRef"]["name"]
                cm = configmaps.get(ref)
                if cm is None:
                    problems.append(f"{where}: ConfigMap {ref} is not in the render")
                    continue
                for var in cm.get("data", {}):
                    if var not in settings:
                        problems.append(f"{where}: ConfigMap {ref} sets {var}, not a setting")
                if ref not in checked:
                    checked.add(ref)
                    problems += [f"ConfigMap {ref}: {p}" for p in validate(cm.get("data", {}))]
            elif "secretRef" in source:
                problems.append(
                    f"{where}: Secret {source['secretRef']['name']} as environment variables; "
                    f"mount it and set {SECRETS_DIR}"
                )
        for item in c.get("env", []):
            if "secretKeyRef" in item.get("valueFrom", {}):
                problems.append(f"{where}: {item['name']} from a Secret as an environment variable")
        problems += _secret_files_problems(doc, c, where, settings, secret_keys)
    return problems


def _secret_files_problems(
    doc: Doc, c: dict[str, Any], where: str, settings: set[str], secret_keys: set[str]
) -> list[str]:
    """CTAFLEET_SECRETS_DIR names a read-only mount of a Secret (or a projection of Secrets)
    whose file names are settings' variables: a file named otherwise is silently unread."""
    directory = next((e.get("value") for e in c.get("env", []) if e["name"] == SECRETS_DIR), None)
    if directory is None:
        return []
    mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == directory), None)
    volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
    volume = volumes.get(mount["name"]) if mount else None
    if mount is None or volume is None:
        return [f"{where}: {SECRETS_DIR} {directory} is not a mounted Secret"]
    problems = [] if mount.get("readOnly") else [f"{where}: {directory} is mounted writable"]
    if "secret" in volume:
        sources = [{"secret": {"name": volume["secret"]["secretName"], **volume["secret"]}}]
    else:
        sources = volume.get("projected", {}).get("sources", [])
    if not sources or any(set(source) != {"secret"} for source in sources):
        return [*problems, f"{where}: {SECRETS_DIR} {directory} is not a mounted Secret"]
    for source in sources:
        items = source["secret"].get("items")
        files = {i["path"] for i in items} if items else secret_keys  # the template's keys
        for var in sorted(files - settings):
            problems.append(f"{where}: the Secret's file {var} is not a setting")
    return problems


# --- probes against the real processes -------------------------------------------------------


class CliError(ValueError):
    pass


@functools.cache
def _cli() -> Any:
    import typer.main

    from ctafleet.cli import app

    return typer.main.get_command(app)  # typer's own click: duck-typed here


def parse_cli(args: list[str]) -> tuple[str, dict[str, Any]]:
    """The `ctafleet` subcommand the arguments run and its parsed options, through the real
    command: an option it does not have is a CliError with the command's own message."""
    command = _cli()
    path: list[str] = []
    try:
        ctx = command.make_context("ctafleet", list(args), resilient_parsing=False)
        while hasattr(command, "resolve_command"):
            # The subcommand's name is kept apart from the rest (`_protected_args` since 8.2).
            head = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
            name, sub, rest = command.resolve_command(ctx, [*head, *ctx.args])
            path.append(name)
            command = sub
            ctx = sub.make_context(name, rest, parent=ctx)
    except Exception as exc:
        if hasattr(exc, "format_message"):
            raise CliError(exc.format_message()) from None
        raise
    return " ".join(path), dict(ctx.params)


NGINX_TEMPLATES = ROOT / "deploy" / "nginx" / "templates"


def nginx_locations(entry: Path = NGINX_TEMPLATES / "servers" / "plain.conf") -> set[str]:
    """Exact-match locations the edge's plain-HTTP server has, following its includes."""
    seen: set[Path] = set()
    found: set[str] = set()

    def walk(path: Path) -> None:
        if path in seen:
            return
        seen.add(path)
        text = path.read_text()
        found.update(re.findall(r"location\s*=\s*(\S+)\s*\{", text))
        for inc in re.findall(r"^\s*include\s+(\S+);", text, re.M):
            target = NGINX_TEMPLATES / inc
            if target.exists():
                walk(target)
                continue
            # Rendered by the entrypoint from one of optional/'s variants: follow each of them.
            stem = Path(inc).stem
            variants = sorted((NGINX_TEMPLATES / "optional").glob(f"{stem}*.conf"))
            assert variants, f"{path.name} includes {inc}, which no template renders"
            for variant in variants:
                walk(variant)

    walk(entry)
    return found


def _probe_port(c: dict[str, Any], probe: dict[str, Any]) -> int | None:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    return named.get(port)


def probe_problems(
    docs: list[Doc],
    api_routes: set[str],
    metrics_paths: Callable[[str], bool],
    edge_locations: set[str],
) -> list[str]:
    """Every httpGet probe asks a path the process serves, on the port it listens on: the
    api's routes and --port, the metrics listener's --metrics-port (worker, bridge), the
    edge's nginx locations and CTAFLEET_EDGE_HTTP_LISTEN."""
    problems: list[str] = []
    for doc, c in app_containers(docs):
        where = f"{doc['kind']} {doc['metadata']['name']} container {c['name']}"
        args = c.get("args") or c.get("command", [])[1:]
        try:
            command, params = parse_cli(list(args))
        except CliError as exc:
            problems.append(f"{where}: `ctafleet {' '.join(args)}`: {exc}")
            continue
        served: Callable[[str], bool] | None
        if command == "serve":
            port, host, served = params["port"], params["host"], api_routes.__contains__
        elif command in ("worker", "mqtt"):
            port, host, served = params["metrics_port"], params["metrics_host"], metrics_paths
        else:
            port, host, served = None, None, None
        declared = {p["containerPort"] for p in c.get("ports", [])}
        if port is not None and port not in declared:
            problems.append(f"{where}: listens on {port}, declares {sorted(declared)}")
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(kind)
            if not probe or "httpGet" not in probe:
                continue
            if served is None:
                problems.append(f"{where}: {kind} on `ctafleet {command}`, which serves no HTTP")
                continue
            if host in ("127.0.0.1", "localhost", "::1"):
                problems.append(f"{where}: {kind} cannot reach a listener on {host}")
            got = _probe_port(c, probe)
            if got != port:
                problems.append(f"{where}: {kind} asks port {got}, the process listens on {port}")
            if not served(probe["httpGet"]["path"]):
                problems.append(f"{where}: {kind} path {probe['httpGet']['path']} is not served")
    for doc, c in app_containers(docs, EDGE_IMAGE):
        where = f"{doc['kind']} {doc['metadata']['name']} container {c['name']}"
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        listen = int(str(env.get("CTAFLEET_EDGE_HTTP_LISTEN", "8080")).rsplit(":", 1)[-1])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(kind, {})
            if "httpGet" not in probe:
                problems.append(f"{where}: no httpGet {kind}")
                continue
            if _probe_port(c, probe) != listen:
                problems.append(f"{where}: {kind} port is not the edge's listener {listen}")
            if probe["httpGet"]["path"] not in edge_locations:
                problems.append(
                    f"{where}: {kind} path {probe['httpGet']['path']} is no nginx location"
                )
    return problems


# --- autoscaling on the queue --------------------------------------------------------------


def keda_problems(docs: list[Doc], shards: int, prefix: str) -> list[str]:
    """The worker's ScaledObject has one Redis Streams trigger per queue shard, on the
    streams and consumer group the queue really uses, and no more workers than shards."""
    from ctafleet.telematics.ingest import queue

    streams = queue.RedisQueue(None, max_depth=1, shards=shards, prefix=prefix).keys
    problems = []
    for so in select(docs, "ScaledObject"):
        name = so["metadata"]["name"]
        triggers = [t for t in so["spec"]["triggers"] if t["type"] == "redis-streams"]
        got = sorted(t["metadata"].get("stream", "") for t in triggers)
        if got != sorted(streams):
            missing = sorted(set(streams) - set(got))
            extra = sorted(set(got) - set(streams))
            problems.append(f"ScaledObject {name}: streams missing {missing}, unknown {extra}")
        for t in triggers:
            if t["metadata"].get("consumerGroup") != queue.GROUP:
                problems.append(
                    f"ScaledObject {name}: consumer group {t['metadata'].get('consumerGroup')!r}"
                )
        if so["spec"].get("maxReplicaCount", 100) > shards:
            problems.append(
                f"ScaledObject {name}: more workers ({so['spec'].get('maxReplicaCount')}) "
                f"than shards ({shards})"
            )
    return problems
