"""The rules of the house that code review alone would let slip."""

from __future__ import annotations

import ast
from pathlib import Path

import detector

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_DETECTOR = {
    "flask",
    "prometheus_client",
    "service",
    "gunicorn",
    "pickle",
    "joblib",
    "dill",
    "cloudpickle",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_detector_never_imports_the_service_layer_or_pickle() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & FORBIDDEN_IN_DETECTOR)
        for path in (REPO / "detector").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_public_surface_resolves() -> None:
    for name in detector.__all__:
        assert getattr(detector, name) is not None, name


def test_no_helper_dumping_grounds() -> None:
    bad = [
        p
        for p in REPO.rglob("*.py")
        if p.name in {"utils.py", "helpers.py"} and ".venv" not in p.parts
    ]
    assert bad == []


def _runtime_imports(path: Path, package_modules: set[str]) -> set[str]:
    """The project modules ``path`` imports when it runs, at module level or inside functions;
    imports under ``if TYPE_CHECKING:`` run only for the type checker and are left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & package_modules


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_among_the_project_modules() -> None:
    # A cycle makes import order matter and hides which way the data flows; function-level
    # imports count, since they only postpone the cycle to the first call.
    paths = {_module_name(p): p for d in ("detector", "service") for p in (REPO / d).rglob("*.py")}
    modules = set(paths)
    graph = {name: _runtime_imports(path, modules) - {name} for name, path in paths.items()}
    cycles = []
    for start in sorted(graph):
        # Depth-first from each module: a path back to it is a cycle through it.
        stack = [(start, (start,))]
        seen = set()
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycles.append(" -> ".join((*trail, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))
    assert cycles == []
