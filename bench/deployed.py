"""A server started exactly as deploy/ starts it, under the pod's memory limit.

`pod("stride-inference")` reads the Deployment from the manifests (the CPU overlay as
`kubectl kustomize` renders it, or deploy/k8s/base when kubectl is absent): the
container's command and args, its environment, the image's environment, its volume
mounts and its memory limit. `Deployed.start` runs that command line here with three
rewrites only: `stride` is this interpreter's `-m stride.cli`; a path under a mount is
moved to the local folder given for that volume (the model repository, the run store,
the TLS and token Secrets); a `--*port=N` option gets a free port (the map is kept, by
the manifest's port). Every other flag is passed as written, so a change to the
manifests is a change to what the tests and the soak run. Variables given as
`overrides` (STRIDE_*) set the limits the manifests leave at their defaults, smaller,
so that a test reaches them within seconds; a flag in the manifest beats its variable,
so they cannot change what the manifest sets.

The pod's memory limit is applied with a cgroup (v1 memory controller) when this
machine lets us make one (as root, /sys/fs/cgroup/memory writable): the server runs in
it from its first instruction, the kernel OOM-kills it past the limit as a kubelet's
would, and `Memory` reads its usage, peak, failures to charge and OOM kills. Elsewhere
it runs without one and only its resident memory is measured against the limit
(`Memory.mode` says which). RLIMIT_AS would not do: the servers map far more virtual
memory than they use (thread stacks, ONNX Runtime's and gRPC's arenas).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.servers import free_port, rss_mb

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "k8s"
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def _kubectl() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


def rendered(overlay: str = "cpu") -> list[dict[str, Any]]:
    """The objects of an overlay as `kubectl kustomize` renders them; without kubectl, the
    base's files (the CPU overlay changes only image names)."""
    kubectl = _kubectl()
    if kubectl is not None:
        out = subprocess.run(
            [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    docs = []
    for path in sorted((DEPLOY / "base").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def quantity(text: str) -> int:
    """A Kubernetes memory quantity ("1Gi", "512Mi", "1000M") in bytes."""
    for suffix, factor in UNITS.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


@dataclass(frozen=True)
class Pod:
    """What a Deployment runs: one container's command line, environment and limits."""

    name: str
    argv: list[str]  # command + args, as written
    env: dict[str, str]  # the container's `env` (values only)
    mounts: dict[str, str]  # mountPath -> volume name
    memory_limit: int  # bytes
    grace_period: float  # terminationGracePeriodSeconds
    ports: dict[str, int]  # port name -> containerPort
    # The kubelet's deadline for each probe ("startup", "readiness", "liveness"): its
    # timeoutSeconds, 1 s when the manifest gives none (Kubernetes' default).
    probe_timeouts: dict[str, float] = field(default_factory=dict)


def pod(deployment: str, overlay: str = "cpu") -> Pod:
    """The first container of Deployment `deployment` in the rendered overlay."""
    for doc in rendered(overlay):
        if doc.get("kind") == "Deployment" and doc["metadata"]["name"] == deployment:
            spec = doc["spec"]["template"]["spec"]
            container = spec["containers"][0]
            return Pod(
                name=deployment,
                argv=[str(a) for a in (*container.get("command", []), *container.get("args", []))],
                env={e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e},
                mounts={m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])},
                memory_limit=quantity(str(container["resources"]["limits"]["memory"])),
                grace_period=float(spec.get("terminationGracePeriodSeconds", 30)),
                ports={p["name"]: int(p["containerPort"]) for p in container.get("ports", [])},
                probe_timeouts={
                    kind: float(container[f"{kind}Probe"].get("timeoutSeconds", 1))
                    for kind in ("startup", "readiness", "liveness")
                    if f"{kind}Probe" in container
                },
            )
    raise LookupError(f"no Deployment {deployment} in overlay {overlay}")


def flag(argv: list[str], name: str) -> str | None:
    """The value of `--name=value` in a command line (the last one wins), or None."""
    value = None
    for arg in argv:
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def image_env(scratch: Path) -> dict[str, str]:
    """The serving image's environment (deploy/images/serve.Dockerfile), its scratch folder
    (HOME, TMPDIR, matplotlib's cache) moved to `scratch`."""
    return {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "MPLCONFIGDIR": str(scratch / "matplotlib"),
    }


def make_tls(folder: Path) -> Path:
    """A CA (ca.pem) and a server certificate for 127.0.0.1 and localhost, written as the
    stride-tls Secret's keys (tls.crt, tls.key); returns the CA's file."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ca_key, ca, csr = folder / "ca.key", folder / "ca.pem", folder / "tls.csr"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca), "-days", "2", "-subj", "/CN=stride-soak-ca")  # fmt: skip
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / "tls.key"),
            "-out", str(csr), "-subj", "/CN=stride")  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(folder / "tls.crt"), "-days", "2",
            "-extfile", str(ext))  # fmt: skip
    return ca


# The pod's memory limit -------------------------------------------------------------


@dataclass
class Memory:
    """The pod's memory limit around one process: a cgroup where the machine allows."""

    limit: int  # bytes
    cgroup: Path | None = None  # None: RSS against the limit only
    rss_peak_mb: float = 0.0  # sampled by `sample`
    _pid: int | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return "cgroup" if self.cgroup is not None else "rss"

    @classmethod
    def make(cls, limit: int, tag: str) -> Memory:
        """A cgroup with `limit` (memory.limit_in_bytes), or none when it cannot be made."""
        folder = CGROUP_MEMORY / f"stride-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        try:
            folder.mkdir()
        except OSError:
            return cls(limit)
        try:
            (folder / "memory.limit_in_bytes").write_text(str(limit))
            swap = folder / "memory.memsw.limit_in_bytes"
            if swap.exists():  # the pod gets no swap either
                swap.write_text(str(limit))
            (folder / "memory.swappiness").write_text("0")
        except OSError:
            with contextlib.suppress(OSError):
                folder.rmdir()
            return cls(limit)
        return cls(limit, folder)

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` run inside the cgroup from its first instruction."""
        if self.cgroup is None:
            return argv
        procs = self.cgroup / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]

    def _read(self, name: str) -> str:
        assert self.cgroup is not None
        try:
            return (self.cgroup / name).read_text()
        except OSError:
            return ""

    def usage(self) -> int:
        """Bytes charged to the cgroup now (resident memory and page cache); 0 without one."""
        return int(self._read("memory.usage_in_bytes") or 0) if self.cgroup else 0

    def figures(self) -> dict[str, Any]:
        """What the limit saw: mode, limit, peak usage, charges that hit the limit, OOM kills."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "limit_mb": self.limit / 2**20,
            "rss_peak_mb": self.rss_peak_mb,
        }
        if self.cgroup is not None:
            out["cgroup_peak_mb"] = int(self._read("memory.max_usage_in_bytes") or 0) / 2**20
            out["failcnt"] = int(self._read("memory.failcnt") or 0)
            control = dict(
                line.split() for line in self._read("memory.oom_control").splitlines() if line
            )
            out["oom_kills"] = int(control.get("oom_kill", 0))
            stat = dict(line.split() for line in self._read("memory.stat").splitlines() if line)
            out["cache_mb"] = int(stat.get("total_cache", 0)) / 2**20
        return out

    def sample(self, pid: int) -> float:
        """The process's resident memory now (MiB), kept as the peak if higher."""
        rss = rss_mb(pid)
        self.rss_peak_mb = max(self.rss_peak_mb, rss)
        return rss

    def close(self) -> None:
        """Remove the cgroup once its process has gone (retrying while it exits)."""
        if self.cgroup is None:
            return
        for _ in range(50):
            try:
                self.cgroup.rmdir()
                return
            except OSError:
                time.sleep(0.1)


# The server ---------------------------------------------------------------------------


@dataclass
class Deployed:
    """One server started from a `Pod`, with its ports, files and memory limit."""

    pod: Pod
    proc: subprocess.Popen[bytes]
    ports: dict[int, int]  # the manifest's port -> the local one
    memory: Memory
    log: Path
    argv: list[str]  # what ran (after the rewrites)
    final_memory: dict[str, Any] = field(default_factory=dict)  # read as it stopped

    @classmethod
    def start(
        cls,
        pod: Pod,
        volumes: dict[str, Path],
        workdir: Path,
        overrides: dict[str, str] | None = None,
        *,
        cgroup: bool = True,
    ) -> Deployed:
        """Run `pod`'s command with each mounted volume at the local folder `volumes` names
        (by volume name: "models", "runs", "tls", "auth", "scratch"); not waited for."""
        workdir.mkdir(parents=True, exist_ok=True)
        scratch = volumes.get("scratch") or workdir / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        ports: dict[int, int] = {}
        argv = [cls._rewrite(a, pod, volumes, ports) for a in pod.argv]
        if argv[:1] != ["stride"]:
            raise ValueError(f"{pod.name} does not run stride: {pod.argv}")
        argv = [sys.executable, "-m", "stride.cli", *argv[1:]]
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("STRIDE_")}
        env = {**inherited, **image_env(scratch), **pod.env, **(overrides or {})}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        memory = Memory.make(pod.memory_limit, pod.name) if cgroup else Memory(pod.memory_limit)
        log = workdir / f"{pod.name}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                memory.wrap(argv), cwd=scratch, env=env, stdout=err, stderr=subprocess.STDOUT
            )
        return cls(pod, proc, ports, memory, log, argv)

    @staticmethod
    def _rewrite(arg: str, pod: Pod, volumes: dict[str, Path], ports: dict[int, int]) -> str:
        if not arg.startswith("--") or "=" not in arg:
            if arg.startswith("--"):
                raise ValueError(f"{pod.name}: write options as --flag=value, got {arg}")
            return arg
        flag, value = arg.split("=", 1)
        if flag.endswith("-port") and value.lstrip("-").isdigit() and int(value) > 0:
            ports[int(value)] = ports.get(int(value)) or free_port()
            return f"{flag}={ports[int(value)]}"
        for mount, volume in sorted(pod.mounts.items(), key=lambda m: -len(m[0])):
            if value == mount or value.startswith(mount + "/"):
                if volume not in volumes:
                    raise ValueError(f"{pod.name}: {arg} needs a local folder for volume {volume}")
                return f"{flag}={volumes[volume]}{value[len(mount) :]}"
        return arg

    def port(self, name: str) -> int:
        """The local port of the manifest's port `name` ("grpc", "http", "health", ...)."""
        return self.ports[self.pod.ports[name]]

    @property
    def pid(self) -> int:
        """The server's pid (the cgroup's shell wrapper execs it: the same process)."""
        return self.proc.pid

    def rss(self) -> float:
        return self.memory.sample(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float | None = None) -> tuple[int | None, float]:
        """SIGTERM, as the kubelet after preStop; the exit status (None: killed after
        `timeout`, the pod's grace period by default) and the seconds it took."""
        began = time.monotonic()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout if timeout is not None else self.pod.grace_period)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._release()
                return None, time.monotonic() - began
        self._release()
        return self.proc.returncode, time.monotonic() - began

    def _release(self) -> None:
        if not self.final_memory:
            self.final_memory = self.memory.figures()
        self.memory.close()

    def memory_figures(self) -> dict[str, Any]:
        """`Memory.figures` now, or as they were when the server stopped."""
        return self.final_memory or self.memory.figures()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# Both servers, ready to call -----------------------------------------------------------

TOKEN = "deployed-token"


@dataclass
class Served:
    """A deployed server with its TLS CA and token, once its health port says SERVING."""

    server: Deployed
    ca: Path  # the CA that signed the server's certificate (PEM)
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def pid(self) -> int:
        return self.server.pid

    def port(self, name: str) -> int:
        return self.server.port(name)

    def rss(self) -> float:
        return self.server.rss()

    def channel(self, options: list[tuple[str, Any]] | None = None) -> Any:
        """A TLS channel to the main gRPC port (the CA's certificate names 127.0.0.1)."""
        import grpc

        credentials = grpc.ssl_channel_credentials(self.ca.read_bytes())
        return grpc.secure_channel(f"127.0.0.1:{self.port('grpc')}", credentials, options)

    def check_memory(self) -> dict[str, Any]:
        """The limit's figures; AssertionError if the server died or the cgroup OOM-killed."""
        figures = self.server.memory_figures()
        assert figures.get("oom_kills", 0) == 0, f"OOM-killed under the pod's limit: {figures}"
        assert self.server.alive(), f"the server exited: {self.server.tail()}"
        assert figures["rss_peak_mb"] < figures["limit_mb"], figures
        return figures

    def stop(self, timeout: float | None = None) -> tuple[int | None, float]:
        return self.server.stop(timeout)


def _secrets(workdir: Path, token: str) -> dict[str, Path]:
    ca = make_tls(workdir / "tls")
    auth = workdir / "auth"
    auth.mkdir(parents=True, exist_ok=True)
    (auth / "token").write_text(token + "\n")
    return {"tls": ca.parent, "auth": auth, "scratch": workdir / "scratch"}


def _ready(served: Served, timeout: float) -> Served:
    from bench.servers import wait_ready

    try:
        wait_ready(served.port("health"), served.server.proc, timeout=timeout)
    except BaseException:
        log = served.server.tail()
        served.stop(5)
        raise RuntimeError(f"{served.server.pod.name} did not start:\n{log}") from None
    return served


def serve_inference(
    workdir: Path,
    repository: Path,
    overrides: dict[str, str] | None = None,
    *,
    token: str = TOKEN,
    cgroup: bool = True,
    timeout: float = 120,
) -> Served:
    """`stride serve` as Deployment stride-inference runs it, over `repository`."""
    volumes = {**_secrets(workdir, token), "models": repository}
    server = Deployed.start(pod("stride-inference"), volumes, workdir, overrides, cgroup=cgroup)
    return _ready(Served(server, volumes["tls"] / "ca.pem", token), timeout)


def serve_analysis(
    workdir: Path,
    runs: Path,
    overrides: dict[str, str] | None = None,
    *,
    token: str = TOKEN,
    cgroup: bool = True,
    timeout: float = 120,
) -> Served:
    """`stride serve-analysis` as Deployment stride-analysis runs it, over `runs`."""
    volumes = {**_secrets(workdir, token), "runs": runs}
    server = Deployed.start(pod("stride-analysis"), volumes, workdir, overrides, cgroup=cgroup)
    return _ready(Served(server, volumes["tls"] / "ca.pem", token), timeout)
