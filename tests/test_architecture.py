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
