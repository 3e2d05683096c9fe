"""Policy checks of deploy/images/*.Dockerfile (no Docker engine needed).

hadolint lints the files; the tests below check what it does not: multi-stage
builds from pinned bases, a numeric non-root user, nothing to build with in the
final stage, the extras each image installs, that every dependency comes from the
image's hash-checked lock (deploy/locks, whose freshness tests/test_dependencies.py
checks), and a build context that lets in what the Dockerfiles copy. That the
entrypoints name real `stride` subcommands is checked with the manifests' commands
in test_policy.py.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy import dockerfile
from tests.deploy.conftest import DEPLOY, REPO_ROOT, run_tool, tool
from tools import lock_deps

IMAGES = DEPLOY / "images"
EXTRAS = {  # what each image installs from pyproject
    "serve.Dockerfile": {"serve", "analysis"},
    "serve-gpu.Dockerfile": {"serve", "analysis"},
    "train.Dockerfile": {"train"},
}
BUILD_TOOLS = re.compile(
    r"^(gcc.*|g\+\+.*|clang.*|cpp|make|cmake|ninja-build|build-essential|git"
    r"|python3?-pip|python3?-venv|python3?-dev|.*-dev)$"
)
NOT_IN_SERVING = {"torch", "torchvision", "ray", "onnxscript"}


def test_every_dockerfile_has_a_policy() -> None:
    assert sorted(p.name for p in IMAGES.glob("*.Dockerfile")) == sorted(EXTRAS)


def test_hadolint_passes() -> None:
    files = sorted(str(p) for p in IMAGES.glob("*.Dockerfile"))
    config = str(IMAGES / ".hadolint.yaml")
    result = run_tool([tool("hadolint"), "--no-color", "--config", config, *files])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_still_fails_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    config = str(IMAGES / ".hadolint.yaml")
    result = run_tool([tool("hadolint"), "--no-color", "--config", config, str(bad)])
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002"):
        assert rule in result.stdout, result.stdout


@pytest.fixture(params=sorted(EXTRAS))
def image(request: pytest.FixtureRequest) -> str:
    """Each Dockerfile's name in turn."""
    return str(request.param)


def _stages(image: str) -> list[dockerfile.Stage]:
    return dockerfile.stages(IMAGES / image)


def test_multi_stage_from_pinned_bases(image: str) -> None:
    stages = _stages(image)
    assert len(stages) >= 2, "build in one stage, copy the result into a clean final stage"
    for stage in stages:
        tag = dockerfile.image_tag(stage.base)
        assert "$" not in stage.base, f"line {stage.line}: base given by a variable"
        assert tag and tag != "latest", f"line {stage.line}: {stage.base} is not pinned by tag"
    # The venv copied from the build stage links to the base's interpreter: same base.
    assert stages[-1].base == stages[0].base
    assert stages[-1].name is None or stages[-1].name != stages[0].name


def test_final_stage_runs_as_numeric_non_root_user(image: str) -> None:
    users = _stages(image)[-1].of("USER")
    assert users, "the final stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].value.partition(":")
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]


def _apt_packages(command: str) -> set[str]:
    packages: set[str] = set()
    for part in re.split(r"&&|;|\|\|", command):
        words = part.split()
        if "install" in words and any(w in ("apt-get", "apt") for w in words):
            after = words[words.index("install") + 1 :]
            packages |= {w.split("=")[0] for w in after if not w.startswith("-")}
    return packages


def test_no_build_tools_in_final_stage(image: str) -> None:
    final = _stages(image)[-1]
    for run in final.of("RUN"):
        tools = {p for p in _apt_packages(run.value) if BUILD_TOOLS.match(p)}
        assert not tools, f"line {run.line}: build tools in the final stage: {sorted(tools)}"
        assert "pip install" not in run.value, f"line {run.line}: install in the build stage"
    copies = [c for c in final.of("COPY") if "--from=" in c.value]
    assert [c.value.split()[1] for c in copies] == ["/opt/venv"], copies


def test_build_tool_check_recognises_compilers() -> None:
    found = _apt_packages(
        "apt-get update && apt-get install -y --no-install-recommends gcc libpq-dev python3"
    )
    assert {p for p in found if BUILD_TOOLS.match(p)} == {"gcc", "libpq-dev"}


def test_installs_the_right_extras(image: str) -> None:
    build = _stages(image)[0]
    extras = [e for run in build.of("RUN") for e in dockerfile.pip_extras(run.value)]
    assert extras == [EXTRAS[image]], extras


def _extra_requirements(extra: str, project: dict[str, object]) -> set[str]:
    """Requirement names of an extra, following `stride[other]` self-references."""
    optional = project["optional-dependencies"]
    assert isinstance(optional, dict)
    names: set[str] = set()
    for req in optional[extra]:
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^\]]+)\])?", req)
        assert match, req
        name, inner = match.group(1).lower(), match.group(2)
        if name == project["name"] and inner:
            for other in inner.split(","):
                names |= _extra_requirements(other.strip(), project)
        else:
            names.add(name)
    return names


def test_serving_extras_bring_no_torch_or_ray() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    serving = set().union(*(_extra_requirements(e, project) for e in EXTRAS["serve.Dockerfile"]))
    assert "onnxruntime" in serving and "grpcio" in serving
    assert not serving & NOT_IN_SERVING, serving & NOT_IN_SERVING
    training = _extra_requirements("train", project)
    assert {"torch", "ray"} <= training


def _lock(image: str) -> str:
    """The lock an image installs, relative to the repository (the build context)."""
    return str(lock_deps.lock_path(image.removesuffix(".Dockerfile")).relative_to(REPO_ROOT))


def test_every_image_has_a_lock_recipe() -> None:
    recipes = {f"{name}.Dockerfile": set(spec.extras) for name, spec in lock_deps.IMAGES.items()}
    assert recipes == EXTRAS, "tools/lock_deps.py must lock what each Dockerfile installs"


def test_installs_only_from_its_lock(image: str) -> None:
    """Two installs: the hash-checked lock, then Stride with no dependencies of its own."""
    build = _stages(image)[0]
    lock = _lock(image)
    copied = [word for copy in build.of("COPY") for word in copy.value.split()[:-1]]
    assert lock in copied, f"the build stage does not COPY {lock}"
    installs = [args for run in build.of("RUN") for args in dockerfile.pip_installs(run.value)]
    assert len(installs) == 2, f"expected the lock, then Stride: {installs}"
    from_lock, stride = installs
    assert "--require-hashes" in from_lock, from_lock
    assert any(
        flag in ("-r", "--requirement") and value == lock
        for flag, value in itertools.pairwise(from_lock)
    ), from_lock
    assert dockerfile.pip_extras(" ".join(stride)), f"the second install is not Stride: {stride}"
    # --no-deps: nothing unlocked; no build isolation: setuptools comes from the lock too.
    assert {"--no-deps", "--no-build-isolation"} <= set(stride), stride


def test_gpu_serving_image_has_only_onnxruntime_gpu() -> None:
    """Both wheels install the `onnxruntime` module: the GPU image gets the GPU one alone."""
    pins = lock_deps.pins((REPO_ROOT / _lock("serve-gpu.Dockerfile")).read_text())
    assert "onnxruntime-gpu" in pins and "onnxruntime" not in pins, sorted(pins)
    for cpu_image in ("serve.Dockerfile", "train.Dockerfile"):
        assert "onnxruntime-gpu" not in (IMAGES / cpu_image).read_text()
        assert "onnxruntime-gpu" not in lock_deps.pins((REPO_ROOT / _lock(cpu_image)).read_text())


def test_entrypoint_is_stride_in_exec_form(image: str) -> None:
    final = _stages(image)[-1]
    (entry,) = final.of("ENTRYPOINT")
    argv = dockerfile.exec_form(entry) + [
        a for c in final.of("CMD") for a in dockerfile.exec_form(c)
    ]
    assert argv[0] == "stride" and len(argv) > 1, argv


def _dockerignore_allows(path: str) -> bool:
    """Whether the root .dockerignore lets `path` into the context (last match wins)."""
    allowed = True
    for raw in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if pattern == "*" or path == pattern or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def test_build_context_lets_in_what_images_copy(image: str) -> None:
    for stage in _stages(image):
        for copy in stage.of("COPY"):
            if "--from=" in copy.value:
                continue
            sources = [w for w in copy.value.split() if not w.startswith("--")][:-1]
            for source in sources:
                path = source.rstrip("/")
                assert (REPO_ROOT / path).exists(), f"{image}: COPY {path}: not in the repository"
                assert _dockerignore_allows(path), f"{image}: .dockerignore keeps out {path}"
    assert not _dockerignore_allows(".venv") and not _dockerignore_allows("runs")
