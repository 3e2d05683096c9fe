"""Regenerate the Python code for every .proto under protos/ into services/generated/.

protoc writes absolute imports (`from inference import model_config_pb2`); we
rewrite them to package-relative ones so that the generated code lives inside
the `services` package. `--check` regenerates into a temporary folder and exits
1 when the committed code differs (the test suite runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "services" / "generated"


def generate(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc  # dev dependency, pinned in pyproject

    # The well-known types (google/protobuf/timestamp.proto, ...) ship inside grpc_tools.
    well_known = Path(grpc_tools.__file__).parent / "_proto"

    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    if not sources:
        raise SystemExit("no .proto files under protos/")
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    packages = {p.parts[0] for p in (Path(s) for s in sources) if len(p.parts) > 1}
    for path in out.rglob("*.py*"):
        _relativise(path, out, packages)
    for folder in [out, *[d for d in out.rglob("*") if d.is_dir()]]:
        (folder / "__init__.py").touch()


def _relativise(path: Path, out: Path, packages: set[str]) -> None:
    depth = len(path.relative_to(out).parts) - 1
    dots = "." * (depth + 1)
    text = path.read_text()
    for pkg in packages:
        text = re.sub(
            rf"^from ({re.escape(pkg)}(?:\.\w+)*) import ",
            rf"from {dots}\1 import ",
            text,
            flags=re.M,
        )
    path.write_text(text)


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            if not OUT.exists() or not same_tree(Path(tmp), OUT):
                print("services/generated is stale: run `make protos`", file=sys.stderr)
                return 1
        return 0
    if OUT.exists():
        shutil.rmtree(OUT)
    generate(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
