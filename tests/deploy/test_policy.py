"""Policy checks over the rendered overlays: what the schemas cannot see.

Probes hit the server's own health port by number (or REST's open health paths,
only where the kubelet can reach them); the REST port is declared, published by
the Service and admitted by the NetworkPolicy wherever gRPC is, and EXPOSEd by the
image; GPU limits equal requests;
selectors find the pods; every container is bounded and locked down; the grace
period outlasts the drain; secrets are referenced, never inlined; the serving
pods read the very folders the RayJob writes; and every command line names a
real `stride` subcommand with options it accepts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable
from pathlib import PurePosixPath

import pytest
import yaml

from tests.deploy import dockerfile
from tests.deploy.conftest import DEPLOY, REPO_ROOT
from tests.deploy.manifests import (
    Obj,
    Pod,
    by_kind,
    containers,
    mount_for,
    option,
    pods,
    rayjob_argv,
    selects,
    servers,
    setting,
    stride_argv,
)

GPU = "nvidia.com/gpu"
# The subcommands issue 6 lists; one of these not written yet makes the entrypoint
# tests xfail (naming it), any other unknown name fails them.
PLANNED_SUBCOMMANDS = {
    "train", "sweep", "export", "models", "serve", "predict", "compare", "serve-analysis", "demo",
}  # fmt: skip
IMAGE_CONFIGS = PurePosixPath("/opt/stride/configs")  # train.Dockerfile: COPY configs/ here


def _int(value: str | None, what: str) -> int:
    assert value is not None, f"{what} is not set"
    return int(float(value))


# ---------------------------------------------------------------- probes and ports


REST_HEALTH = {  # the open REST health paths each probe may use
    "startupProbe": {"/v2/health/live", "/v2/health/ready"},
    "readinessProbe": {"/v2/health/ready"},
    "livenessProbe": {"/v2/health/live"},
}


def _rest_port(container: Obj, command: str) -> int | None:
    """The REST port `stride serve` listens on: --http-port, its variable or its default."""
    if command != "serve":
        return None  # serve-analysis has no REST front end
    value = setting(container, "--http-port", "STRIDE_HTTP_PORT")
    if value is None:
        parser, _ = _available()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (action,) = [a for a in sub.choices["serve"]._actions if a.dest == "http_port"]
        value = str(action.default)
    port = _int(value, "http port")
    return port if port >= 0 else None


def _resolve(port: int | str, container: Obj) -> int | None:
    """A port given by number or by the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return named.get(port)


def test_probes_use_the_numeric_health_port(docs: list[Obj]) -> None:
    """Native gRPC probes on --health-port (plaintext, whatever the main port's TLS), or
    HTTP probes on REST's open health paths where the kubelet can speak to that port: its
    scheme follows --tls-cert, and never with --tls-ca (the kubelet has no client
    certificate)."""
    found = 0
    for pod, container, command in servers(docs):
        found += 1
        declared = {p["containerPort"] for p in container.get("ports", [])}
        tls = setting(container, "--tls-cert", "STRIDE_TLS_CERT") is not None
        mutual = setting(container, "--tls-ca", "STRIDE_TLS_CA") is not None
        rest = _rest_port(container, command)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container.get(probe)
            where = f"{pod.where} {probe}"
            assert spec and ("grpc" in spec or "httpGet" in spec), f"{where}: none or not served"
            if "grpc" in spec:
                health = _int(
                    setting(container, "--health-port", "STRIDE_HEALTH_PORT"), "health port"
                )
                assert health in declared, f"{pod.where}: health port {health} not declared"
                port = spec["grpc"]["port"]
                assert isinstance(port, int) and port == health, f"{where}: {port}"
                continue
            get = spec["httpGet"]
            assert rest is not None, f"{where}: an HTTP probe on a server without REST"
            assert _resolve(get["port"], container) == rest, f"{where}: {get['port']} != {rest}"
            assert get.get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP"), where
            assert not mutual, f"{where}: with --tls-ca the kubelet cannot connect"
            assert get["path"] in REST_HEALTH[probe], f"{where}: {get['path']}"
    assert found == 2  # inference and analysis


def test_probe_check_matches_the_servers_choice(docs: list[Obj]) -> None:
    """The manifests' choice: native gRPC probes everywhere (see inference-deployment.yaml)."""
    for pod, container, _ in servers(docs):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "grpc" in container[probe], f"{pod.where} {probe}"


def test_rest_port_is_wired_consistently(docs: list[Obj]) -> None:
    ((pod, container),) = [(p, c) for p, c, cmd in servers(docs) if cmd == "serve"]
    rest = _rest_port(container, "serve")
    assert rest is not None and rest > 0, f"{pod.where}: REST disabled or on a random port"
    named = {p.get("name"): p["containerPort"] for p in container["ports"]}
    assert named.get("http") == rest, f"{pod.where}: containerPort `http` != --http-port {rest}"
    grpc = _int(setting(container, "--port", "STRIDE_PORT"), "port")
    assert rest not in (
        grpc,
        _int(setting(container, "--metrics-port", "STRIDE_METRICS_PORT"), "metrics port"),
        _int(setting(container, "--health-port", "STRIDE_HEALTH_PORT"), "health port"),
    )
    tls = setting(container, "--tls-cert", "STRIDE_TLS_CERT") is not None
    services = [s for s in by_kind(docs, "Service") if selects(s["spec"]["selector"], pod.labels)]
    assert services, f"no Service selects {pod.where}"
    for service in services:
        name = f"Service/{service['metadata']['name']}"
        found = [p for p in service["spec"]["ports"] if p["name"] == "http"]
        assert len(found) == 1, f"{name}: no port named `http`"
        assert _resolve(found[0]["targetPort"], container) == rest, f"{name}: targetPort"
        # REST shares the gRPC port's TLS: HTTPS with it, plain HTTP without.
        expected = "https" if tls else "http"
        assert found[0].get("appProtocol") == expected, f"{name}: appProtocol of `http`"
    policies = _policies_for(docs, pod)
    assert policies, f"no NetworkPolicy selects {pod.where}"
    for policy in policies:
        where = f"NetworkPolicy/{policy['metadata']['name']}"
        rules = [_admits(rule, container) for rule in policy["spec"].get("ingress", [])]
        # from the same peers: every rule that admits gRPC admits REST, and no other does
        assert all(admits(grpc) == admits(rest) for admits in rules), f"{where}: REST != gRPC"
        assert any(admits(rest) for admits in rules), f"{where}: REST not admitted"


def _policies_for(docs: list[Obj], pod: Pod) -> list[Obj]:
    return [
        p
        for p in by_kind(docs, "NetworkPolicy")
        if selects(p["spec"]["podSelector"].get("matchLabels", {}), pod.labels)
    ]


def _admits(rule: Obj, container: Obj) -> Callable[[int], bool]:
    """Whether an ingress rule lets TCP to a port of the container through."""

    def admits(port: int) -> bool:
        if "ports" not in rule:
            return True  # no ports: every port
        for allowed in rule["ports"]:
            if allowed.get("protocol", "TCP") != "TCP":
                continue
            if "port" not in allowed:
                return True
            first = _resolve(allowed["port"], container)
            if first is not None and first <= port <= allowed.get("endPort", first):
                return True
        return False

    return admits


def test_network_policies_admit_every_service_port(docs: list[Obj]) -> None:
    for service in by_kind(docs, "Service"):
        for pod in _selected_pods(docs, service["spec"]["selector"]):
            policies = _policies_for(docs, pod)
            assert policies, f"no NetworkPolicy selects {pod.where}"
            for container in containers(pod):
                for port in service["spec"]["ports"]:
                    target = _resolve(port["targetPort"], container)
                    if target is None:
                        continue  # another container's port
                    assert any(
                        _admits(rule, container)(target)
                        for policy in policies
                        for rule in policy["spec"].get("ingress", [])
                    ), f"{service['metadata']['name']} port {port['name']}: no policy admits it"


def test_rest_checks_can_fail() -> None:
    container = {"ports": [{"name": "http", "containerPort": 8000}]}
    assert _admits({"ports": [{"port": "http"}]}, container)(8000)
    assert not _admits({"ports": [{"port": 8001}]}, container)(8000)
    assert not _admits({"ports": [{"port": 8000, "protocol": "UDP"}]}, container)(8000)
    assert _admits({"ports": [{"port": 7999, "endPort": 8001}]}, container)(8000)
    assert _resolve("grpc", container) is None
    line = {"command": ["stride", "serve"], "args": ["--http-port=-1"]}
    assert _rest_port(line, "serve") is None
    assert _rest_port({"command": ["stride", "serve"]}, "serve") == 8000  # the default


def test_serving_images_expose_the_ports_their_pods_declare(docs: list[Obj]) -> None:
    for pod, container, _ in servers(docs):
        name = container["image"].rsplit("/", 1)[-1].split(":")[0]
        path = DEPLOY / "images" / f"{name.removeprefix('stride-')}.Dockerfile"
        assert path.is_file(), f"{pod.where}: no Dockerfile for {container['image']}"
        final = dockerfile.stages(path)[-1]
        exposed = {int(port.split("/")[0]) for i in final.of("EXPOSE") for port in i.value.split()}
        declared = {p["containerPort"] for p in container.get("ports", [])}
        assert declared <= exposed, f"{path.name} does not EXPOSE {sorted(declared - exposed)}"


def test_service_ports_target_declared_container_ports(docs: list[Obj]) -> None:
    for service in by_kind(docs, "Service"):
        backends = _selected_pods(docs, service["spec"]["selector"])
        assert backends, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            for pod in backends:
                names = {p.get("name") for c in containers(pod) for p in c.get("ports", [])}
                numbers = {p["containerPort"] for c in containers(pod) for p in c.get("ports", [])}
                assert target in names | numbers, f"{service['metadata']['name']}: {target}"


def test_grpc_service_port_protocol_matches_server_tls(docs: list[Obj]) -> None:
    for service in by_kind(docs, "Service"):
        (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        for pod in _selected_pods(docs, service["spec"]["selector"]):
            for container in containers(pod):
                tls = setting(container, "--tls-cert", "STRIDE_TLS_CERT") is not None
                # HTTP/2 inside TLS is "https"; cleartext HTTP/2 is kubernetes.io/h2c.
                expected = "https" if tls else "kubernetes.io/h2c"
                assert grpc.get("appProtocol") == expected, service["metadata"]["name"]
                port = _int(setting(container, "--port", "STRIDE_PORT"), "port")
                named = {p["name"]: p["containerPort"] for p in container["ports"]}
                assert named[grpc["targetPort"]] == port


def test_metrics_are_scraped_from_the_metrics_port(docs: list[Obj]) -> None:
    (inference,) = [p for p, _, cmd in servers(docs) if cmd == "serve"]
    (container,) = containers(inference)
    annotations = _template(docs, "Deployment", "stride-inference")["metadata"]["annotations"]
    metrics = _int(setting(container, "--metrics-port", "STRIDE_METRICS_PORT"), "metrics port")
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics
    assert metrics in {p["containerPort"] for p in container["ports"]}


# ---------------------------------------------------------------- GPUs


def test_gpu_limits_equal_requests_and_gpu_pods_tolerate_gpu_nodes(docs: list[Obj]) -> None:
    for pod in pods(docs):
        wants_gpu = False
        for container in containers(pod):
            resources = container.get("resources", {})
            request = resources.get("requests", {}).get(GPU)
            limit = resources.get("limits", {}).get(GPU)
            assert request == limit, f"{pod.where}/{container['name']}: {request} != {limit}"
            wants_gpu = wants_gpu or limit is not None
        if wants_gpu:
            keys = {t.get("key") for t in pod.spec.get("tolerations", [])}
            assert GPU in keys, f"{pod.where} asks for a GPU but does not tolerate GPU nodes"


def test_gpus_only_in_the_gpu_overlay(docs: list[Obj], overlay: str) -> None:
    with_gpu = {
        pod.where
        for pod in pods(docs)
        for c in containers(pod)
        if GPU in c.get("resources", {}).get("limits", {})
    }
    if overlay == "gpu":
        assert with_gpu == {"Deployment/stride-inference", "RayJob/stride-sweep workers"}
    else:
        assert with_gpu == set()
    (rayjob,) = by_kind(docs, "RayJob")
    overrides = _overrides(rayjob_argv(rayjob))
    workers_have_gpus = "RayJob/stride-sweep workers" in with_gpu
    assert overrides.get("scaling.use_gpu") == ("true" if workers_have_gpus else "false")


def test_images_match_the_hardware(docs: list[Obj], overlay: str) -> None:
    for pod in pods(docs):
        for container in containers(pod):
            image = container["image"]
            assert dockerfile.image_tag(image) not in (None, "latest"), image
            name = image.rsplit("/", 1)[-1].split(":")[0]
            if pod.where.startswith("RayJob/"):
                assert name == "stride-train", f"{pod.where}: {image}"
            elif pod.where == "Deployment/stride-inference" and overlay == "gpu":
                assert name == "stride-serve-gpu", image
            else:
                assert name == "stride-serve", f"{pod.where}: {image}"


# ---------------------------------------------------------------- selectors


def _selected_pods(docs: list[Obj], selector: dict[str, str]) -> list[Pod]:
    return [
        p for p in pods(docs) if not p.where.startswith("RayJob") and selects(selector, p.labels)
    ]


def _template(docs: list[Obj], kind: str, name: str) -> Obj:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    template: Obj = doc["spec"]["template"]
    return template


def test_deployment_selectors_match_their_own_pods_only(docs: list[Obj]) -> None:
    deployments = by_kind(docs, "Deployment")
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        template = deployment["spec"]["template"]
        assert selects(selector, template["metadata"]["labels"]), name
        for spread in template["spec"].get("topologySpreadConstraints", []):
            assert selects(spread["labelSelector"]["matchLabels"], template["metadata"]["labels"])
        owners = [
            d for d in deployments if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(owners) == 1, f"{name}: its selector also selects other Deployments' pods"


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("Service", ("selector",)),
        ("PodDisruptionBudget", ("selector", "matchLabels")),
        ("NetworkPolicy", ("podSelector", "matchLabels")),
    ],
)
def test_service_pdb_and_policy_selectors_match_pod_labels(
    docs: list[Obj], kind: str, path: tuple[str, ...]
) -> None:
    assert by_kind(docs, kind)
    for doc in by_kind(docs, kind):
        selector = doc["spec"]
        for key in path:
            selector = selector[key]
        assert _selected_pods(docs, selector), f"{kind}/{doc['metadata']['name']} selects no pod"


def test_hpa_targets_a_deployment_it_alone_scales(docs: list[Obj]) -> None:
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    (deployment,) = [
        d for d in by_kind(docs, target["kind"]) if d["metadata"]["name"] == target["name"]
    ]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB keeps one while another is evicted


def test_selector_check_can_fail() -> None:
    assert not selects({"app": "x"}, {"app": "y"})
    assert not selects({}, {"app": "x"})  # an empty selector is treated as a mistake
    assert selects({"app": "x"}, {"app": "x", "tier": "web"})


# ---------------------------------------------------------------- resources and security


def test_every_container_is_bounded_and_locked_down(docs: list[Obj]) -> None:
    _check_locked_down(docs)


def test_jobs_are_bounded_and_locked_down(jobs: list[Obj]) -> None:
    _check_locked_down(jobs)


def _check_locked_down(docs: list[Obj]) -> None:
    assert list(pods(docs))
    for pod in pods(docs):
        pod_security = pod.spec.get("securityContext", {})
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", pod.where
        assert pod.spec.get("automountServiceAccountToken") is False, pod.where
        for container in containers(pod):
            where = f"{pod.where}/{container['name']}"
            resources = container.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            assert {"cpu", "memory"} <= requests.keys(), f"{where}: requests {requests}"
            assert {"cpu", "memory"} <= limits.keys(), f"{where}: limits {limits}"
            security = container.get("securityContext", {})
            non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
            user = security.get("runAsUser", pod_security.get("runAsUser"))
            assert non_root is True and isinstance(user, int) and user > 0, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not security.get("capabilities", {}).get("add"), where


def test_servers_write_only_to_scratch(docs: list[Obj]) -> None:
    for pod, container, _ in servers(docs):
        writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
        assert [m["mountPath"] for m in writable] == ["/tmp/scratch"], pod.where
        (volume,) = [v for v in pod.spec["volumes"] if v["name"] == writable[0]["name"]]
        assert "emptyDir" in volume, pod.where


def test_grace_period_exceeds_the_drain(docs: list[Obj]) -> None:
    for pod, container, _ in servers(docs):
        grace = float(setting(container, "--grace-period", "STRIDE_GRACE_PERIOD") or "nan")
        assert grace == grace, f"{pod.where}: set --grace-period (the server's default may change)"
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        drain = grace + float(pre_stop.get("seconds", 0))
        termination = pod.spec.get("terminationGracePeriodSeconds", 30)
        assert termination > drain, f"{pod.where}: {termination} s grace <= {drain} s drain"


CORES_PER_WORKER = 2  # stride serve's default: one worker per two cores of the CPU limit
MIB_PER_WORKER = 384  # a worker with the reference models loaded, with room to spare
MIB_SUPERVISOR = 128


def _quantity(value: str | int | float, unit: str) -> float:
    """A Kubernetes quantity in cores (unit "cpu") or MiB (unit "mem")."""
    text = str(value)
    if unit == "cpu":
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    factors = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20,
               "G": 1e9 / 2**20}  # fmt: skip
    for suffix, factor in factors.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text) / 2**20


def test_inference_workers_follow_the_cpu_limit_and_fit_the_memory(docs: list[Obj]) -> None:
    """`stride serve --workers`: 0 (one per two cores of limits.cpu, which the server reads
    from its cgroup) or a count the CPU limit can run; the memory limit holds that many
    workers, each of which loads every model."""
    import math

    checked = 0
    for pod, container, command in servers(docs):
        if command != "serve":
            continue
        limits = container["resources"]["limits"]
        cores = math.ceil(_quantity(limits["cpu"], "cpu"))  # the cgroup quota, rounded up
        value = setting(container, "--workers", "STRIDE_WORKERS")
        assert value is not None, f"{pod.where}: set STRIDE_WORKERS (0: from the CPU limit)"
        workers = int(value) or max(1, cores // CORES_PER_WORKER)
        assert 1 <= workers <= cores, f"{pod.where}: {workers} workers on {cores} cores"
        memory = _quantity(limits["memory"], "mem")
        need = MIB_SUPERVISOR * (workers > 1) + MIB_PER_WORKER * workers
        assert memory >= need, f"{pod.where}: {memory:.0f} MiB for {workers} workers"
        checked += 1
    assert checked, "no stride serve container found"


def test_the_worker_check_matches_the_server_s_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.inference import runtime
    from stride.commands._serve_workers import CORES_PER_WORKER as SERVER_DEFAULT
    from stride.commands._serve_workers import worker_count

    assert SERVER_DEFAULT == CORES_PER_WORKER
    monkeypatch.setattr(runtime, "cgroup_cpu_quota", lambda: 4.0)
    monkeypatch.setattr(runtime, "available_cores", lambda: 64)
    assert worker_count(0) == 4 // CORES_PER_WORKER  # the quota, not the node's cores


# ---------------------------------------------------------------- secrets


def test_secrets_are_referenced_never_inlined(docs: list[Obj]) -> None:
    assert not by_kind(docs, "Secret") and not by_kind(docs, "ConfigMap")
    for pod, container, _ in servers(docs):
        for flag in ("--tls-cert", "--tls-key", "--auth-token-file"):
            path = option(stride_argv(container) or [], flag)
            assert path, f"{pod.where}: {flag} not set"
            found = mount_for(pod, container, path)
            assert found, f"{pod.where}: {flag} {path} is not on a volume"
            mount, volume = found
            assert mount.get("readOnly") is True and "secret" in volume, f"{pod.where}: {path}"
            assert volume["secret"]["secretName"] in ("stride-tls", "stride-auth")
    for pod in pods(docs):
        for container in containers(pod):
            for item in container.get("env", []):
                secretish = any(
                    w in item["name"].upper() for w in ("TOKEN", "PASSWORD", "SECRET", "KEY")
                )
                assert not (secretish and "value" in item), f"{pod.where}: {item['name']} inline"


# ---------------------------------------------------------------- storage


def _rayjob_paths(docs: list[Obj]) -> tuple[Pod, dict[str, str]]:
    (rayjob,) = by_kind(docs, "RayJob")
    line = rayjob_argv(rayjob)
    paths = {"runs": option(line, "--runs"), "repository": option(line, "--export-best")}
    head = next(p for p in pods(docs) if p.where.endswith(" head"))
    return head, {k: v for k, v in paths.items() if v}


def _claim_and_subpath(pod: Pod, container: Obj, path: str) -> tuple[str, str]:
    found = mount_for(pod, container, path)
    assert found, f"{pod.where}: {path} is not on a volume"
    mount, volume = found
    assert "persistentVolumeClaim" in volume, f"{pod.where}: {path} is not on the PVC"
    rest = PurePosixPath(path).relative_to(mount["mountPath"])
    sub = PurePosixPath(mount.get("subPath", "")) / rest
    return volume["persistentVolumeClaim"]["claimName"], str(sub)


def test_serving_reads_what_training_writes_read_only(docs: list[Obj]) -> None:
    head, written = _rayjob_paths(docs)
    assert set(written) == {"runs", "repository"}
    (ray_container,) = containers(head)
    for pod in pods(docs):  # every Ray pod mounts the same storage at the same place
        if pod.where.startswith("RayJob/") and not pod.where.endswith("submitter"):
            for path in written.values():
                assert _claim_and_subpath(pod, containers(pod)[0], path) == _claim_and_subpath(
                    head, ray_container, path
                )
    readers = {
        "serve": ("--repository", "STRIDE_REPOSITORY", "repository"),
        "serve-analysis": ("--runs", "STRIDE_RUNS", "runs"),
    }
    for pod, container, command in servers(docs):
        flag, env, what = readers[command]
        read = setting(container, flag, env)
        assert read, f"{pod.where}: {flag} not set"
        assert _claim_and_subpath(pod, container, read) == _claim_and_subpath(
            head, ray_container, written[what]
        )
        mount, volume = mount_for(pod, container, read) or ({}, {})
        assert (
            mount.get("readOnly") is True
            and volume["persistentVolumeClaim"].get("readOnly") is True
        )


def test_export_job_writes_where_serving_reads(docs: list[Obj], jobs: list[Obj]) -> None:
    head, written = _rayjob_paths(docs)
    (ray_container,) = containers(head)
    (job,) = [p for p in pods(jobs) if p.where == "Job/stride-export"]
    (container,) = containers(job)
    line = stride_argv(container) or []
    assert line[:2] == ["stride", "export"]
    target = option(line, "--repository") or ""
    assert _claim_and_subpath(job, container, target) == _claim_and_subpath(
        head, ray_container, written["repository"]
    )
    assert _claim_and_subpath(job, container, line[2])[1].startswith("runs/")


def test_storage_claim_is_shared(docs: list[Obj]) -> None:
    (claim,) = by_kind(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]  # Ray workers and servers on many nodes


# ---------------------------------------------------------------- the training job


def _overrides(line: list[str]) -> dict[str, str]:
    pairs = [line[i + 1] for i, a in enumerate(line) if a == "--set"]
    pairs += [a.split("=", 1)[1] for a in line if a.startswith("--set=")]
    return dict(p.split("=", 1) for p in pairs)


def test_rayjob_cleans_up_and_uses_known_config_keys(docs: list[Obj]) -> None:
    from pipeline.config import parse_config  # light: yaml and dataclasses, no torch

    (rayjob,) = by_kind(docs, "RayJob")
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec.get("ttlSecondsAfterFinished", 0) > 0
    line = rayjob_argv(rayjob)
    assert line[:2] == ["stride", "sweep"], line
    config = PurePosixPath(option(line, "--config") or "")
    local = REPO_ROOT / "configs" / config.relative_to(IMAGE_CONFIGS)
    assert local.is_file(), f"{config} is not shipped: no {local}"
    data = yaml.safe_load(local.read_text())
    overrides = [f"{k}={v}" for k, v in _overrides(line).items()]
    parse_config(data, overrides)  # unknown keys or wrong types raise ConfigError
    grid = option(line, "--grid") or ""
    key, _, values = grid.partition("=")
    for value in values.split(","):
        parse_config(data, [*overrides, f"{key}={value}"])


# ---------------------------------------------------------------- stride subcommands


def _available() -> tuple[argparse.ArgumentParser, set[str]]:
    from stride.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, set(sub.choices)


def _command_lines(rendered: dict[str, list[Obj]], jobs: list[Obj]) -> list[tuple[str, list[str]]]:
    """(where, argv) of every `stride` command line in the overlays, Jobs and images."""
    lines = []
    for pod in pods(jobs):
        for container in containers(pod):
            line = stride_argv(container)
            if line:
                lines.append((pod.where, line))
    for overlay, docs in rendered.items():
        for pod in pods(docs):
            for container in containers(pod):
                line = stride_argv(container)
                if line:
                    lines.append((f"{overlay}: {pod.where}", line))
        for rayjob in by_kind(docs, "RayJob"):
            lines.append((f"{overlay}: RayJob entrypoint", rayjob_argv(rayjob)))
    for path in sorted((DEPLOY / "images").glob("*.Dockerfile")):
        final = dockerfile.stages(path)[-1]
        line = [
            a for i in final.of("ENTRYPOINT") + final.of("CMD") for a in dockerfile.exec_form(i)
        ]
        lines.append((path.name, line))
    return lines


def _missing(missing: dict[str, list[str]]) -> None:
    unplanned = set(missing) - PLANNED_SUBCOMMANDS
    assert not unplanned, f"no such stride subcommand: {sorted(unplanned)}"
    if missing:
        pytest.xfail(f"stride subcommands not written yet: {sorted(missing)} (used by {missing})")


def test_entrypoints_are_stride_subcommands(
    rendered: dict[str, list[Obj]], jobs: list[Obj]
) -> None:
    _, available = _available()
    missing: dict[str, list[str]] = {}
    lines = _command_lines(rendered, jobs)
    assert len(lines) >= 2 * 3 + 3 + 1  # per overlay 2 servers + RayJob; 3 images; export
    for where, line in lines:
        assert line[0] == "stride" and len(line) > 1, f"{where}: {line}"
        if line[1] not in available:
            missing.setdefault(line[1], []).append(where)
    _missing(missing)


def test_stride_command_lines_parse(rendered: dict[str, list[Obj]], jobs: list[Obj]) -> None:
    parser, available = _available()
    missing: dict[str, list[str]] = {}
    for where, line in _command_lines(rendered, jobs):
        if where.endswith(".Dockerfile"):
            continue  # image defaults such as `train --help`: checked by name above
        if line[1] not in available:
            missing.setdefault(line[1], []).append(where)
            continue
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                parser.parse_args(line[1:])
            except SystemExit:
                pytest.fail(f"{where}: {' '.join(line)}\n{stderr.getvalue()}")
    _missing(missing)


def test_parse_check_rejects_unknown_options() -> None:
    parser, available = _available()
    assert "serve" in available
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        parser.parse_args(["serve", "--health-prot=8081"])
