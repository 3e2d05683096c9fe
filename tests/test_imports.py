"""The import rules: import-linter's contracts in pyproject.toml, and no import circle
between the modules of a package, imports inside functions included.

The circle check reads the source with `ast`, so it runs where import-linter is not
installed; the contracts test runs `lint-imports` from this interpreter's venv.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stride", "pipeline", "services", "runstore")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_contracts_hold() -> None:
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is not installed (pip install --group dev)")
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of a package by dotted name (a package by its __init__.py)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that a module imports anywhere in it (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name in a module: the module
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    return found


def sibling_cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Circles among the children of each package, as import-linter's acyclic_siblings
    sees them: child A depends on child B when anything in A imports anything in B."""
    graphs: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for importer, imported in edges:
        a, b = importer.split("."), imported.split(".")
        for depth in range(1, min(len(a), len(b))):
            if a[:depth] != b[:depth]:
                break
            if a[depth] != b[depth]:
                graphs[".".join(a[:depth])][a[depth]].add(b[depth])
                break
    cycles = []
    for parent, graph in sorted(graphs.items()):
        cycle = _find_cycle(graph)
        if cycle:
            cycles.append([f"{parent}.{child}" for child in cycle])
    return cycles


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return None


def package_edges(root: Path, package: str) -> set[tuple[str, str]]:
    modules = module_files(root, package)
    return {
        (name, target)
        for name, path in modules.items()
        for target in imported_modules(name, path, modules)
        if target != name
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle_within_a_package(package: str) -> None:
    if not (ROOT / package).is_dir():
        pytest.skip(f"{package}/ is not in this checkout")
    assert sibling_cycles(package_edges(ROOT, package)) == []


def test_the_circle_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The circle config.py -> spec.py -> config.py, hidden in a function, is found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def load():\n    from pkg.spec import validate\n")
    (pkg / "spec.py").write_text("from . import config\n")
    (pkg / "sub" / "a.py").write_text("from ..spec import x\n")
    assert sibling_cycles(package_edges(tmp_path, "pkg")) == [
        ["pkg.config", "pkg.spec", "pkg.config"]
    ]
    (pkg / "config.py").write_text("")
    assert sibling_cycles(package_edges(tmp_path, "pkg")) == []
