"""Rendered Kubernetes objects made playable by `podman kube play` 4.3.1 (Debian bookworm).

The manifests stay as a cluster wants them; `adapt` writes a changed copy. Each change is
commented where it is made, and is one of two kinds:

* podman 4.3.1's gaps, each found by playing the rendered objects (docs/kubernetes.md, "Proof
  on one machine"): a Secret in the played file is unreadable and a secret volume crashes it
  (each Secret is played as a ConfigMap of the same keys, mounted as a configMap volume, which
  `kube down` leaves behind: `Played.volumes`); a Job is not a kind it plays (its pod template
  is played as a Pod); annotation values are held to 63 characters (longer ones dropped); an
  emptyDir is a named volume shared by every pod that names it (each pod's gets its own name);
  httpGet probes run `curl`, which the image lacks (rewritten to the image's `healthcheck
  URL`); exec probe arguments are re-split on spaces (refused); readiness and startup probes
  are never run (dropped, or the readiness probe played as the healthcheck); a registry image
  would be pulled (the local one, never pulled); on the host network a containerPort is
  refused.
* this machine: PostgreSQL and Redis listen on 127.0.0.1 only, which a pod's own network
  namespace cannot reach, so with `host_network=True` the pods share the host's network and
  every listener moves to 127.0.0.1 and a free port; and the podman store is shared by
  concurrent runs, so with `suffix` every name podman keeps (pods, volumes, secrets) is the
  run's own.

    played = adapt([config, secret, job, api, worker], tmp, image=ref, suffix="kp1a2b3c4")
    podman("kube", "play", str(played.path))      # later: kube down
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.kit.k8s import Doc
from tests.kit.net import free_port

# Flags that choose the port, and the address it listens on, of the image's processes.
LISTEN_FLAGS = {"--port": "--host", "--metrics-port": "--metrics-host"}


@dataclass
class Played:
    """What `adapt` wrote and the names podman will give it."""

    path: Path  # the YAML for `podman kube play` / `podman kube down`
    pods: dict[str, str] = field(default_factory=dict)  # workload -> pod name
    # podman 4.3.1 makes a configMap volume a named volume of the ConfigMap's name and leaves
    # it behind at `kube down`: the caller removes these.
    volumes: set[str] = field(default_factory=set)
    containers: dict[str, str] = field(default_factory=dict)  # "workload/container" -> name
    ports: dict[str, int] = field(default_factory=dict)  # "workload/port name" -> host port


def adapt(
    rendered: Iterable[Doc],
    out_dir: Path,
    *,
    image: str,
    suffix: str = "",
    host_network: bool = False,
    readiness_as_liveness: bool = False,
    port_for: Callable[[], int] = free_port,
) -> Played:
    """Write OUT_DIR/play.yaml (mode 0600: it holds the Secrets' values)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    played = Played(out_dir / "play.yaml")
    docs = copy.deepcopy(list(rendered))
    tag = f"-{suffix}" if suffix else ""
    # Secret name in the manifests -> its name in podman's store, whatever the order of docs.
    renamed = {
        d["metadata"]["name"]: d["metadata"]["name"] + tag for d in docs if d["kind"] == "Secret"
    }
    objects: list[Doc] = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Secret":
            # podman 4.3.1 stores a Secret of the played file as YAML and reads it back as JSON
            # ("not valid JSON"), and panics on a secret volume (a nil secrets manager,
            # pkg/specgen/generate/kube/volume.go:165): the Secret is played as a ConfigMap of
            # its name and keys, which a secret volume then mounts as a configMap volume.
            data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            data |= doc.get("stringData") or {}
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": renamed[name], "labels": {"ctafleet.test/secret": name}},
                    "data": data,
                }
            )
            continue
        if kind == "ConfigMap":
            objects.append(doc)
            continue
        if kind == "Job":
            # podman 4.3.1 plays no Job: its pod template becomes a Pod (restartPolicy Never
            # kept), which runs once; the caller waits for its exit code as for the Job.
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": copy.deepcopy(doc["metadata"])}
            pod["metadata"]["labels"] = doc["spec"]["template"]["metadata"].get("labels", {})
            pod["spec"] = doc["spec"]["template"]["spec"]
            doc = pod
        elif kind != "Deployment":
            raise ValueError(f"{kind} {name}: not something this adapter plays")
        workload = name
        for meta in (doc["metadata"], doc["spec"].get("template", {}).get("metadata", {})):
            # podman 4.3.1 holds annotation values to the 63-character limit of label values
            # ("value length exceeds Kubernetetes max 63"): the checkov skips are dropped.
            notes = {k: v for k, v in meta.get("annotations", {}).items() if len(v) <= 63}
            meta.pop("annotations", None)
            if notes:
                meta["annotations"] = notes
        doc["metadata"]["name"] = name = name + tag
        spec = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
        # podman names a Pod's pod <name>, a Deployment's (one replica) <name>-pod-0.
        pod_name = name if doc["kind"] == "Pod" else f"{name}-pod-0"
        played.pods[workload] = pod_name
        if spec.get("initContainers"):
            # podman 4.3.1 gives init containers the pod's restartPolicy (they loop forever);
            # none of ours has any (the migration is a Job): refuse rather than play that.
            raise ValueError(f"{workload}: init containers are not handled")
        if host_network:
            # This machine: the services the pods need listen on 127.0.0.1 only.
            spec["hostNetwork"] = True
        volumes = {}
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                source = volume.pop("secret")
                if source["secretName"] not in renamed:
                    raise ValueError(f"{workload}: Secret {source['secretName']} is not played")
                source["name"] = renamed[source.pop("secretName")]
                volume["configMap"] = source  # see the Secret above
                played.volumes.add(source["name"])
            if "projected" in volume:
                raise ValueError(f"{workload}: projected volumes are not handled")
            if "emptyDir" in volume:
                # podman 4.3.1 makes an emptyDir a named volume called by the volume's name,
                # shared by every pod that names it: each pod's own name goes in front.
                volumes[volume["name"]] = volume["name"] = f"{name}-{volume['name']}"
        for container in spec["containers"]:
            played.containers[f"{workload}/{container['name']}"] = f"{pod_name}-{container['name']}"
            # No registry here: the image built from this tree, never pulled.
            container["image"], container["imagePullPolicy"] = image, "Never"
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            if host_network:
                ports = _rebind(container, ports, port_for)
                played.ports |= {f"{workload}/{n}": p for n, p in ports.items()}
            for mount in container.get("volumeMounts", []):
                mount["name"] = volumes.get(mount["name"], mount["name"])
            if any("secretRef" in e for e in container.get("envFrom", [])) or any(
                "secretKeyRef" in e.get("valueFrom", {}) for e in container.get("env", [])
            ):
                # The manifests mount Secrets as files (the structural checks hold them to it).
                raise ValueError(f"{workload}: a Secret as environment variables is not handled")
            readiness = container.pop("readinessProbe", None)
            # podman 4.3.1 never runs readiness or startup probes: dropped, so the played file
            # shows what runs. With readiness_as_liveness the readiness probe becomes the
            # healthcheck, so `podman healthcheck run` reports readiness.
            container.pop("startupProbe", None)
            if readiness_as_liveness and readiness:
                container["livenessProbe"] = readiness
            if "livenessProbe" in container:
                _exec_probe(container["livenessProbe"], ports)
        objects.append(doc)
    played.path.touch(mode=0o600)  # it may hold a Secret's values
    played.path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return played


def _rebind(container: Doc, ports: dict[str, int], port_for: Callable[[], int]) -> dict[str, int]:
    """On the host network, each listener moves to 127.0.0.1 and a free port: the manifests'
    0.0.0.0:8000 would be every interface of the machine, and taken by the next pod."""
    args = list(container.get("args", []))
    moved = {}
    for name, port in ports.items():
        new = port_for()
        for flag, host_flag in LISTEN_FLAGS.items():
            if flag in args and args[args.index(flag) + 1] == str(port):
                args[args.index(flag) + 1] = str(new)
                if host_flag in args:
                    args[args.index(host_flag) + 1] = "127.0.0.1"
                break
        else:
            raise ValueError(f"{container['name']}: port {port} is not set by its arguments")
        moved[name] = new
    container["args"] = args
    # podman 4.3.1 turns a containerPort into a port mapping, which it refuses on the host
    # network ("PortMappings can only be used with Bridge"): there the listener is the port.
    container.pop("ports", None)
    return moved


def _exec_probe(probe: Doc, ports: dict[str, int]) -> None:
    get = probe.pop("httpGet", None)
    if get is not None:
        # podman 4.3.1 runs an httpGet probe as `curl`, which the image does not have: the
        # image's own `healthcheck URL` program asks the same URL.
        port = ports.get(get["port"], get["port"])
        probe["exec"] = {"command": ["healthcheck", f"http://127.0.0.1:{port}{get['path']}"]}
    for arg in probe.get("exec", {}).get("command", []):
        # podman 4.3.1 joins exec arguments and splits them again on spaces.
        if " " in arg:
            raise ValueError(f"exec probe argument {arg!r} has a space: podman would split it")
