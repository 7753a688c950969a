"""What an installed package carries beyond its code: its version, and its types."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

import detector
from detector.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_written_once_and_the_cli_tells_it(capsys) -> None:
    # `anomaly --version` was "the following arguments are required: COMMAND".
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"anomaly {detector.__version__}"
    assert importlib.metadata.version("anomaly-detector") == detector.__version__


def test_each_package_ships_its_type_marker() -> None:
    # Installed from the wheel, mypy skipped the Python API as untyped ("missing library stubs
    # or py.typed marker"): PEP 561's marker, in each package and in what setuptools packs.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packed = project["tool"]["setuptools"]["package-data"]
    for package in ("detector", "service"):
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in packed[package]
