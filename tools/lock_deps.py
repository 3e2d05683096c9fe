"""Resolve the container images' dependencies into hash-pinned locks, deploy/locks/*.txt.

Each image installs its lock with `pip install --require-hashes -r` and then Stride
itself with `--no-deps`, so an image rebuilt next month gets the same wheels, byte for
byte, instead of whatever the index serves that day.

The locks are resolved by `uv pip compile` for the images' interpreter and platform
(CPython 3.12 on x86_64 glibc 2.39), from uv's default index, PyPI (leave UV_INDEX_URL
and UV_DEFAULT_INDEX unset): uv reads no pip configuration, so
a machine's pip settings (a mirror, a cap on torch) never enter a lock. Each lock's
header lists the requirements it was resolved from; tests/test_dependencies.py rebuilds
that list from pyproject.toml and fails when a lock is stale.

    python tools/lock_deps.py             every image, keeping the pins that still fit
    python tools/lock_deps.py serve       one image
    python tools/lock_deps.py --upgrade   the newest versions pyproject allows
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "deploy" / "locks"
PYTHON_VERSION = "3.12"  # python:3.12.12-slim-trixie, and Ubuntu 24.04's python3 (3.12.3)
PLATFORM = "x86_64-manylinux_2_39"  # glibc of Ubuntu 24.04 (2.39); Debian trixie has 2.41
REQUIREMENTS_LINE = "# requirements:"


@dataclass(frozen=True)
class Image:
    """What one image installs: pyproject extras, plus or minus a few requirements."""

    extras: tuple[str, ...]
    add: tuple[str, ...] = ()  # requirements beside pyproject's
    drop: tuple[str, ...] = ()  # names of pyproject requirements the image replaces


IMAGES = {
    "serve": Image(extras=("serve", "analysis")),
    # onnxruntime-gpu installs the same `onnxruntime` module as the CPU wheel, so it takes
    # its place; its CUDA major must match the base image's (1.31.1: CUDA 13, cuDNN 9).
    "serve-gpu": Image(
        extras=("serve", "analysis"), add=("onnxruntime-gpu==1.31.1",), drop=("onnxruntime",)
    ),
    "train": Image(extras=("train",)),
}


def lock_path(name: str) -> Path:
    """The lock of the image deploy/images/<name>.Dockerfile."""
    return LOCKS / f"{name}.txt"


def load_pyproject() -> dict[str, Any]:
    """pyproject.toml, parsed."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _extra(project: dict[str, Any], extra: str) -> list[str]:
    """An extra's requirements, with `stride[other]` replaced by other's."""
    found: list[str] = []
    for text in project["optional-dependencies"][extra]:
        req = Requirement(text)
        if canonicalize_name(req.name) == canonicalize_name(project["name"]):
            for other in sorted(req.extras):
                found += _extra(project, other)
        else:
            found.append(text)
    return found


def requirements(pyproject: dict[str, Any], image: Image) -> list[str]:
    """The requirements a lock is resolved from, normalised and sorted.

    The build backend is among them because the Dockerfiles build Stride without build
    isolation, from the locked setuptools.
    """
    project = pyproject["project"]
    found = [*pyproject["build-system"]["requires"], *project["dependencies"]]
    for extra in image.extras:
        found += _extra(project, extra)
    dropped = {canonicalize_name(name) for name in image.drop}
    kept = {str(r) for r in map(Requirement, found) if canonicalize_name(r.name) not in dropped}
    return sorted(kept | {str(Requirement(r)) for r in image.add}, key=str.lower)


def uv_command(name: str, upgrade: bool = False) -> list[str]:
    """The `uv pip compile` command line that writes a lock (requirements on stdin)."""
    command = [
        "uv", "pip", "compile", "-",
        "--output-file", f"deploy/locks/{name}.txt",
        "--python-version", PYTHON_VERSION,
        "--python-platform", PLATFORM,
        "--generate-hashes",
        "--no-header",
        "--quiet",
    ]  # fmt: skip
    return [*command, "--upgrade"] if upgrade else command


def header(name: str, pyproject: dict[str, Any]) -> str:
    """The comment block a lock starts with: how to regenerate it and what it was made from."""
    lines = [
        f"# Lock of deploy/images/{name}.Dockerfile, installed there with `pip install",
        "# --require-hashes -r`. Generated, do not edit: after changing pyproject.toml run",
        f"#   python tools/lock_deps.py {name}",
        "# in the repository root, which pipes the requirements below into",
        f"#   {shlex.join(uv_command(name))}",
        REQUIREMENTS_LINE,
        *(f"#   {r}" for r in requirements(pyproject, IMAGES[name])),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Pin:
    """One package of a lock: its version and how many file hashes pip may accept."""

    version: str
    hashes: int


def pins(text: str) -> dict[str, Pin]:
    """The packages a lock pins, by canonical name."""
    found: dict[str, Pin] = {}
    name = ""
    for line in text.splitlines():
        if match := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line):
            name = canonicalize_name(match.group(1))
            found[name] = Pin(match.group(2), 0)
        elif line.strip().startswith("--hash=") and name:
            found[name] = Pin(found[name].version, found[name].hashes + 1)
    return found


def recorded_requirements(text: str) -> list[str]:
    """The requirements a lock's header says it was resolved from."""
    lines = text.splitlines()
    if REQUIREMENTS_LINE not in lines:
        return []
    found = []
    for line in lines[lines.index(REQUIREMENTS_LINE) + 1 :]:
        if not line.startswith("#   "):
            break
        found.append(line.removeprefix("#   "))
    return found


def _uv() -> str:
    """The uv binary: the one the `uv` package installed (dev group), else one on PATH."""
    try:
        from uv import find_uv_bin
    except ImportError:
        found = shutil.which("uv")
        if found is None:
            raise SystemExit("uv not found: it is in pyproject's dev group (make setup)") from None
        return found
    return str(find_uv_bin())


def lock(name: str, upgrade: bool) -> None:
    """Resolve one image's lock and write it with its header."""
    pyproject = load_pyproject()
    stdin = "".join(f"{r}\n" for r in requirements(pyproject, IMAGES[name]))
    command = [_uv(), *uv_command(name, upgrade)[1:]]
    if subprocess.run(command, input=stdin, text=True, cwd=ROOT, check=False).returncode:
        raise SystemExit(f"uv could not lock {name} (its message is above)")
    path = lock_path(name)
    path.write_text(header(name, pyproject) + path.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=f"{', '.join(IMAGES)}; all")
    parser.add_argument("--upgrade", action="store_true", help="newest allowed versions")
    args = parser.parse_args()
    unknown = sorted(set(args.images) - set(IMAGES))
    if unknown:
        parser.error(f"unknown image {', '.join(unknown)}; the images: {', '.join(IMAGES)}")
    LOCKS.mkdir(parents=True, exist_ok=True)
    for name in args.images or IMAGES:
        lock(name, args.upgrade)
    return 0


if __name__ == "__main__":
    sys.exit(main())
