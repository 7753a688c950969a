"""The Makefile's two commands, read with `make -n` (a dry run: prints the commands, runs none).

`make run` installs what running needs and no more: the dev extra (pyspark, mypy, the schema
validators...) costs minutes on a fresh machine and serves nothing (#20). `make test` adds it.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _dry_run(target: str, tmp_path: Path) -> list[str]:
    """The commands `make TARGET` would run for a virtual environment under ``tmp_path`` (a
    fresh one unless the test put files there) and a model that does not exist yet."""
    # An outer `make test` passes its flags down; this make is a separate one.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    paths = [f"VENV={tmp_path / 'venv'}", f"MODEL={tmp_path / 'model'}"]
    out = subprocess.run(
        ["make", "-n", "-C", str(REPO), target, *paths, f"SCORED={tmp_path / 'scored.csv'}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    # A recipe line continued with a backslash is one command.
    return out.replace("\\\n", " ").splitlines()


def _installs(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\b(pip|uv)\b.*\binstall\b", c)]


def _dev_packages() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    dev = pyproject["project"]["optional-dependencies"]["dev"]
    return [re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0] for requirement in dev]


def test_make_run_installs_the_package_but_not_the_dev_extra(tmp_path: Path) -> None:
    commands = _dry_run("run", tmp_path)
    installs = _installs(commands)
    assert not [c for c in installs if "[dev]" in c], "make run installs the dev extra"
    # Package names as words, not inside a path (pytest's temporary folders are named pytest-*).
    named = [
        p
        for p in _dev_packages()
        if any(re.search(rf"(?<![\w/.-]){re.escape(p)}\b", c) for c in installs)
    ]
    assert named == [], f"make run installs dev packages: {named}"
    assert any(re.search(r"-e \.(\s|;|$)", c) for c in installs), installs


def test_make_test_installs_the_dev_extra(tmp_path: Path) -> None:
    assert [c for c in _installs(_dry_run("test", tmp_path)) if "[dev]" in c]


def _stamps(commands: list[str]) -> list[Path]:
    return [Path(c.split()[1]) for c in commands if c.startswith("touch ")]


def _install_for(target: str, tmp_path: Path) -> None:
    """Leave in ``tmp_path/venv`` what `make TARGET` leaves: the interpreter and its stamps."""
    stamps = _stamps(_dry_run(target, tmp_path))
    assert stamps, f"make {target} leaves no stamp: it would reinstall every time"
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    for stamp in stamps:
        stamp.touch()


def test_make_run_after_make_test_installs_nothing(tmp_path: Path) -> None:
    _install_for("test", tmp_path)
    commands = _dry_run("run", tmp_path)
    assert _installs(commands) == []
    assert any(" serve " in c for c in commands)


def test_make_test_after_make_run_adds_only_the_dev_extra(tmp_path: Path) -> None:
    _install_for("run", tmp_path)
    installs = _installs(_dry_run("test", tmp_path))
    assert len(installs) == 1, installs
    assert "[dev]" in installs[0]
