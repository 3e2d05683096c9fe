"""pyproject.toml against what the code and the images need, offline and fast.

The committed code in services/generated guards itself at import: a `*_pb2_grpc.py`
raises when grpcio is older than its GRPC_GENERATED_VERSION, a `*_pb2.py` when the
protobuf runtime is older than its gencode (ValidateProtobufRuntimeVersion). Nothing but
these tests stops pyproject from allowing such versions, so they read the guards from the
source text (importing would only test the versions installed here) and compare them with
every requirement in pyproject. A protobuf major may break older gencode (the protobuf
cross-version guarantee holds within a major; grpc's own generated packages cap the
same way), so protobuf must also stay below the gencode's next major.

The image locks in deploy/locks (tools/lock_deps.py) are checked without resolving
anything: each lock's header must list exactly the requirements pyproject gives that
image today, and every one must be pinned, hash-checked, within its specifier.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tools import lock_deps

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "services" / "generated"
GRPC_GUARD = re.compile(r"^GRPC_GENERATED_VERSION = ['\"]([^'\"]+)['\"]", re.MULTILINE)
PROTOBUF_GUARD = re.compile(
    r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.(\w+),"
    r"\s*(\d+),\s*(\d+),\s*(\d+),\s*['\"]([^'\"]*)['\"]"
)
# grpc releases these together with grpcio, from the same gencode and protobuf range.
GRPC_PACKAGES = ("grpcio", "grpcio-health-checking", "grpcio-reflection")
# Where the locks are installed: the images' interpreter and platform.
TARGET = {
    "python_version": lock_deps.PYTHON_VERSION,
    "python_full_version": f"{lock_deps.PYTHON_VERSION}.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _generated(pattern: str) -> list[Path]:
    found = sorted(GENERATED.rglob(pattern))
    assert found, f"no {pattern} under {GENERATED}"
    return found


def _grpc_guards() -> dict[str, Version]:
    """GRPC_GENERATED_VERSION of every *_pb2_grpc.py, by path."""
    guards = {}
    for path in _generated("*_pb2_grpc.py"):
        match = GRPC_GUARD.search(path.read_text())
        assert match, f"{path.relative_to(ROOT)}: no GRPC_GENERATED_VERSION (new grpcio-tools?)"
        guards[str(path.relative_to(ROOT))] = Version(match.group(1))
    return guards


def _protobuf_guards() -> dict[str, Version]:
    """The gencode version each *_pb2.py validates the runtime against, by path."""
    guards = {}
    for path in _generated("*_pb2.py"):
        match = PROTOBUF_GUARD.search(path.read_text())
        where = path.relative_to(ROOT)
        assert match, f"{where}: no ValidateProtobufRuntimeVersion call (new protoc?)"
        domain, major, minor, patch, suffix = match.groups()
        assert domain == "PUBLIC", f"{where}: gencode domain {domain}; PyPI's runtime is PUBLIC"
        guards[str(where)] = Version(f"{major}.{minor}.{patch}{suffix}")
    return guards


def _pyproject_requirements(name: str) -> list[tuple[str, SpecifierSet]]:
    """Every requirement on `name` in pyproject: (where, specifier)."""
    pyproject = lock_deps.load_pyproject()
    project = pyproject["project"]
    sections: dict[str, list[Any]] = {"dependencies": project["dependencies"]}
    for extra, reqs in project["optional-dependencies"].items():
        sections[f"optional-dependencies.{extra}"] = reqs
    for group, reqs in pyproject.get("dependency-groups", {}).items():
        sections[f"dependency-groups.{group}"] = reqs
    found = []
    for section, reqs in sections.items():
        for text in reqs:
            if isinstance(text, str) and canonicalize_name(Requirement(text).name) == name:
                found.append((section, Requirement(text).specifier))
    return found


def admits_older(spec: SpecifierSet, needed: Version) -> bool:
    """Whether `spec` lets in some version older than `needed` (it has no floor that high)."""
    floors = [
        Version(s.version)
        for s in spec
        if s.operator in (">=", ">", "==", "~=", "===") and "*" not in s.version
    ]
    return not floors or max(floors) < needed


def test_floor_check_is_right() -> None:
    needed = Version("1.85.1")
    assert admits_older(SpecifierSet(">=1.66"), needed)
    assert admits_older(SpecifierSet(""), needed)
    assert admits_older(SpecifierSet("<2"), needed)
    assert not admits_older(SpecifierSet(">=1.85.1"), needed)
    assert not admits_older(SpecifierSet(">=1.85.1,<2"), needed)
    assert not admits_older(SpecifierSet("==1.86.0"), needed)


@pytest.mark.parametrize("package", GRPC_PACKAGES)
def test_grpc_floor_covers_generated_code(package: str) -> None:
    reqs = _pyproject_requirements(package)
    assert reqs, f"pyproject requires no {package}, yet the services import it"
    for path, generated in _grpc_guards().items():
        for section, spec in reqs:
            assert not admits_older(spec, generated), (
                f"{path} needs grpcio >= {generated} (GRPC_GENERATED_VERSION), but "
                f"pyproject's {section} allows {package}{spec}: raise its floor to {generated}"
            )


def test_protobuf_range_covers_generated_code() -> None:
    reqs = _pyproject_requirements("protobuf")
    assert reqs, "pyproject requires no protobuf, yet services/generated imports it"
    for path, gencode in _protobuf_guards().items():
        next_major = Version(f"{gencode.major + 1}")
        for section, spec in reqs:
            assert not admits_older(spec, gencode), (
                f"{path} is gencode {gencode}: its runtime may not be older, but "
                f"pyproject's {section} allows protobuf{spec}: raise the floor to {gencode}"
            )
            assert not spec.contains(next_major, prereleases=True), (
                f"{path} is gencode {gencode}, kept only within protobuf {gencode.major}.x, "
                f"but pyproject's {section} allows protobuf{spec}: add <{next_major}"
            )


@pytest.fixture(params=sorted(lock_deps.IMAGES))
def image(request: pytest.FixtureRequest) -> str:
    """Each locked image's name in turn."""
    return str(request.param)


def _lock_text(image: str) -> str:
    path = lock_deps.lock_path(image)
    assert path.exists(), f"{path.relative_to(ROOT)} missing: run python tools/lock_deps.py"
    return path.read_text()


def test_lock_is_current(image: str) -> None:
    """The lock was resolved from the requirements pyproject gives this image today."""
    pyproject = lock_deps.load_pyproject()
    text = _lock_text(image)
    wanted = lock_deps.requirements(pyproject, lock_deps.IMAGES[image])
    recorded = lock_deps.recorded_requirements(text)
    rerun = f"run `python tools/lock_deps.py {image}`"
    assert recorded == wanted, (
        f"deploy/locks/{image}.txt is stale ({rerun}); pyproject now has "
        f"{sorted(set(wanted) - set(recorded))}, the lock was made from "
        f"{sorted(set(recorded) - set(wanted))}"
    )
    assert text.startswith(lock_deps.header(image, pyproject)), (
        f"the lock's header differs: {rerun}"
    )


def test_lock_pins_every_requirement(image: str) -> None:
    spec = lock_deps.IMAGES[image]
    pins = lock_deps.pins(_lock_text(image))
    for text in lock_deps.requirements(lock_deps.load_pyproject(), spec):
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({**TARGET, "extra": ""}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"deploy/locks/{image}.txt does not pin {name} ({text})"
        version = pins[name].version
        assert req.specifier.contains(version, prereleases=True), (
            f"deploy/locks/{image}.txt pins {name}=={version}, outside {text}"
        )
    for dropped in spec.drop:
        assert canonicalize_name(dropped) not in pins, f"{image} replaces {dropped}, yet pins it"
    unhashed = sorted(name for name, pin in pins.items() if not pin.hashes)
    assert not unhashed, f"pip --require-hashes refuses pins without a hash: {unhashed}"


def test_staleness_check_sees_a_changed_floor() -> None:
    """Editing a floor in pyproject changes what a lock must record (so the test above fails)."""
    pyproject = lock_deps.load_pyproject()
    edited = copy.deepcopy(pyproject)
    serve = edited["project"]["optional-dependencies"]["serve"]
    index = next(i for i, r in enumerate(serve) if Requirement(r).name == "pillow")
    serve[index] = "pillow>=99"
    image = lock_deps.IMAGES["serve"]
    assert lock_deps.requirements(edited, image) != lock_deps.requirements(pyproject, image)
