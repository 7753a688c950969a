"""The commands the documentation gives are accepted as written: every `python
tests/benchmarks/X.py ...` quoted in tests/benchmarks/README.md or README.md or run by the
Makefile's bench targets, and every `anomaly ...` line of README.md's code blocks, is parsed by
its own script's or the CLI's parser (none is run), with its `--param` settings checked as
training checks them. Options get renamed and removed; a "Reproduce:" line should say so."""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parents[1]
sys.path.insert(0, str(BENCH))

DOCUMENTS = (REPO / "README.md", BENCH / "README.md")
FENCE = re.compile(r"^\s*(```|~~~)")
#: An option's placeholder in a synopsis (`--param svdd_weight=W`, `-n N`): not a value.
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$")


def _code(path: Path, inline: bool = True) -> list[str]:
    """The document's code: each line of its code blocks (backslash continuations joined, a
    console's `$ ` prompt dropped) and, if ``inline``, each inline span (which may wrap
    across lines), whitespace collapsed."""
    prose, blocks, block, fenced = [], [], [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            if fenced:
                joined = "\n".join(block).replace("\\\n", " ")
                blocks += [code.strip().removeprefix("$ ") for code in joined.splitlines()]
                block = []
            fenced = not fenced
            prose.append("")
        elif fenced:
            block.append(line)
        else:
            prose.append(line)
    spans = re.findall(r"(?<!`)`([^`]+)`(?!`)", "\n".join(prose)) if inline else []
    return [" ".join(text.split()) for text in spans + blocks if text.strip()]


def _makefile_commands(program: str) -> list[str]:
    """The commands of ``$(BIN)/PROGRAM`` the Makefile runs, its variables as by default and
    the model loop's variable as its first model."""
    text = (REPO / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    defaults = dict(re.findall(r"^(\w+) \??= *(.*)$", text, re.MULTILINE))
    assert "MODELS_BENCHED" in defaults, "the Makefile's model loop moved: update this test"
    commands = []
    for found in re.findall(rf"\$\(BIN\)/{program} ([^;|\n]+)", text):
        command = re.sub(r"\$\((\w+)\)", lambda m: defaults.get(m[1], m[0]), found)
        command = command.replace("$$m", defaults["MODELS_BENCHED"].split()[0])
        commands.append(f"{program} " + " ".join(command.split()))
    return commands


def _documented(prefix: str, documents: tuple[Path, ...], inline: bool = True) -> list[str]:
    return sorted(
        {
            c.split(" #")[0].strip()
            for path in documents
            for c in _code(path, inline)
            if c.startswith(prefix)
        }
    )


SCRIPT_COMMANDS = sorted(
    set(_documented("python tests/benchmarks/", DOCUMENTS))
    | {c for c in _makefile_commands("python") if c.startswith("python tests/benchmarks/")}
)
#: README.md's code blocks hold whole commands; its inline `anomaly ...` are fragments.
CLI_COMMANDS = sorted(
    set(_documented("anomaly ", DOCUMENTS[:1], inline=False)) | set(_makefile_commands("anomaly"))
)


def _argv(command: str) -> list[str]:
    """The command's words, an optional part (`[--seeds 0]`) given, a `...` left out."""
    expanded = re.sub(r"\[([^\]]*)\]", r"\1", command)
    return [word for word in shlex.split(expanded) if word != "..."]


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def _parse(module: Any, args: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The script's own ``parse_args`` (its checks after parsing included) where it has one;
    else its ``main`` stopped as soon as its parser has parsed."""
    if hasattr(module, "parse_args"):
        return module.parse_args(args)
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *a: Any, **k: Any) -> argparse.Namespace:
        raise _Parsed(parse(self, *a, **k))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [module.__file__, *args])
    try:
        module.main(args) if inspect.signature(module.main).parameters else module.main()
    except _Parsed as parsed:
        return parsed.namespace
    raise AssertionError(f"{module.__name__}.main() finished without parsing its arguments")


def _check_params(params: dict[str, Any], models: list[str] | None) -> None:
    """The settings as training takes them (names and values) for each model the command
    names, placeholders left out."""
    from detector.estimator import VAEDetector, _as_options
    from detector.nn.training import TrainingConfig

    unknown = sorted(set(params) - set(VAEDetector().get_params()))
    assert not unknown, f"--param {unknown}: not a VAEDetector parameter (renamed?)"
    given = {k: v for k, v in params.items() if not PLACEHOLDER.match(str(v))}
    for model in models or [given.get("model", "vae")]:
        options = VAEDetector(**{**given, "model": model}).get_params()
        TrainingConfig(**_as_options(options)).check()


def test_the_documents_give_benchmark_commands() -> None:
    scripts = {_argv(c)[1] for c in SCRIPT_COMMANDS}
    assert "tests/benchmarks/bench_quality.py" in scripts and len(SCRIPT_COMMANDS) > 20
    assert any(c.startswith("anomaly serve") for c in CLI_COMMANDS), CLI_COMMANDS


def _refusal(command: str, capsys: pytest.CaptureFixture[str]) -> str | None:
    """Why the benchmark command is refused, or None."""
    _, script, *args = _argv(command)
    path = REPO / script
    if not path.is_file():
        return f"{script} does not exist (renamed or retired?)"
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            namespace = _parse(importlib.import_module(path.stem), args, monkeypatch)
        params = getattr(namespace, "params", None)
        if params is None:
            params = dict(getattr(namespace, "param", []) or [])
        _check_params(dict(params), getattr(namespace, "models", None))
    except SystemExit:
        return capsys.readouterr().err.strip().splitlines()[-1]
    except (AssertionError, ValueError) as exc:  # ConfigError is a ValueError
        return str(exc)
    return None


# One test each, not one per command: every test's end collects garbage (conftest), about a
# second each once TensorFlow is loaded.
def test_every_benchmark_command_parses_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    refused = {c: why for c in SCRIPT_COMMANDS if (why := _refusal(c, capsys)) is not None}
    assert not refused, "fix these commands (or say in the text what became of them): " + "".join(
        f"\n  `{command}`: {why}" for command, why in refused.items()
    )


def test_every_readme_cli_command_parses_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from detector.cli.main import build_parser
    from service.cli import add_serve_command

    refused = {}
    for command in CLI_COMMANDS:
        try:
            build_parser(add_serve_command).parse_args(_argv(command)[1:])
        except SystemExit:
            refused[command] = capsys.readouterr().err.strip().splitlines()[-1]
    assert not refused, refused
