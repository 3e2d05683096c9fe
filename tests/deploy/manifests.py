"""Reading rendered Kubernetes objects: pod specs, containers, their `stride` options.

The policy tests ask the same questions of every workload, whether a Deployment's
pod template or one of the pod templates inside the RayJob, so this module turns
each object into `Pod` records and each container's command line into an argv.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    """One pod template: where it came from, its labels and its spec."""

    where: str  # e.g. "Deployment/stride-inference" or "RayJob/stride-sweep workers"
    namespace: str | None
    labels: dict[str, str]
    spec: Obj


def pods(docs: list[Obj]) -> Iterator[Pod]:
    """Every pod template in the rendered objects (Deployments and the RayJob's)."""
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        ns = doc["metadata"].get("namespace")
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield _pod(f"{kind}/{name}", ns, doc["spec"]["template"])
        elif kind == "RayJob":
            spec = doc["spec"]
            if "submitterPodTemplate" in spec:
                yield _pod(f"{kind}/{name} submitter", ns, spec["submitterPodTemplate"])
            cluster = spec["rayClusterSpec"]
            yield _pod(f"{kind}/{name} head", ns, cluster["headGroupSpec"]["template"])
            for group in cluster.get("workerGroupSpecs", []):
                yield _pod(f"{kind}/{name} {group['groupName']}", ns, group["template"])


def _pod(where: str, namespace: str | None, template: Obj) -> Pod:
    labels = template.get("metadata", {}).get("labels", {})
    return Pod(where, namespace, dict(labels), template["spec"])


def containers(pod: Pod) -> list[Obj]:
    """A pod's init containers and containers."""
    return [*pod.spec.get("initContainers", []), *pod.spec["containers"]]


def argv(container: Obj) -> list[str]:
    """The container's command line as written (command then args), empty if the image's."""
    return [str(a) for a in (*container.get("command", []), *container.get("args", []))]


def stride_argv(container: Obj) -> list[str] | None:
    """The container's argv when it runs `stride ...`, else None."""
    line = argv(container)
    return line if line[:1] == ["stride"] else None


def rayjob_argv(rayjob: Obj) -> list[str]:
    """A RayJob's entrypoint (a shell command line) split as the shell would."""
    return shlex.split(rayjob["spec"]["entrypoint"])


def option(line: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in an argv (the last one wins)."""
    value = None
    for i, arg in enumerate(line):
        if arg == name and i + 1 < len(line):
            value = line[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def env_value(container: Obj, name: str) -> str | None:
    """A literal environment value of the container (None if unset or from a reference)."""
    for item in container.get("env", []):
        if item["name"] == name and "value" in item:
            return str(item["value"])
    return None


def setting(container: Obj, flag: str, env: str) -> str | None:
    """A server setting as the server sees it: the flag wins over the environment variable."""
    line = stride_argv(container) or []
    flagged = option(line, flag)
    return flagged if flagged is not None else env_value(container, env)


def servers(docs: list[Obj]) -> Iterator[tuple[Pod, Obj, str]]:
    """(pod, container, subcommand) for every container running a Stride gRPC server."""
    for pod in pods(docs):
        for container in containers(pod):
            line = stride_argv(container)
            if line and len(line) > 1 and line[1] in ("serve", "serve-analysis"):
                yield pod, container, line[1]


def by_kind(docs: list[Obj], kind: str) -> list[Obj]:
    """The rendered objects of one kind."""
    return [d for d in docs if d["kind"] == kind]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a non-empty matchLabels selector selects these labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def mount_for(pod: Pod, container: Obj, path: str) -> tuple[Obj, Obj] | None:
    """The (volumeMount, volume) under which `path` lies in the container, deepest first."""
    best: tuple[Obj, Obj] | None = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/")
        if (path == root or path.startswith(root + "/")) and (
            best is None or len(root) > len(best[0]["mountPath"].rstrip("/"))
        ):
            volume = next(v for v in pod.spec.get("volumes", []) if v["name"] == mount["name"])
            best = (mount, volume)
    return best
