"""The README stays short enough to read and says what the code does (#19): its size, its links
(files and anchors), and the names it documents (metrics, settings, commands)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config import ServiceConfig

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: Markdown files whose relative links are checked.
DOCUMENTS = [README, REPO / "tests" / "benchmarks" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks, inline code removed."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats
    numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().replace("`", "").lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_the_readme_is_under_20_kb() -> None:
    size = len(README.read_bytes())
    assert size < 20_000, (
        f"README.md is {size:,} bytes; keep it under 20,000: move research and long reference "
        "material to tests/benchmarks/README.md"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for line in _prose(document):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            file_part, _, anchor = target.partition("#")
            linked = (document.parent / file_part).resolve() if file_part else document
            if not linked.exists():
                broken.append(f"{target} (no file {file_part})")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{target} (no heading #{anchor} in {linked.name})")
    assert not broken, f"{document.relative_to(REPO)} links to what is not there: {broken}"


def test_the_readme_names_every_metric() -> None:
    source = (REPO / "service" / "metrics.py").read_text(encoding="utf-8")
    metrics = re.findall(r'^\s+"(anomaly_[a-z_]+)",?$', source, re.MULTILINE)
    metrics += re.findall(r'Counter\(\s*"(anomaly_[a-z_]+)"', source)
    assert {"anomaly_key_anomalies_total", "anomaly_model_loaded"} <= set(metrics)
    text = README.read_text(encoding="utf-8")
    missing = sorted(m for m in set(metrics) if f"`{m}" not in text)
    assert not missing, f"the README's Monitoring section does not list {missing}"


def test_the_readme_names_every_setting() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [name for name in ServiceConfig.model_fields if f"`{name}" not in text]
    assert not missing, f"the README's settings table does not list {missing}"


def test_the_metric_streams_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    """The section's `anomaly train` and `anomaly evaluate` lines, as written (2 epochs)."""
    import shlex

    from detector.cli.main import main

    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Metric streams") : text.index("## Scoring service")]
    block = section[
        section.index("```bash") + 7 : section.index("```", section.index("```bash") + 7)
    ]
    lines = block.replace("\\\n", " ").splitlines()
    commands = [
        line.split("#")[0]
        for line in lines
        if line.startswith(("anomaly train", "anomaly evaluate"))
    ]
    assert len(commands) == 2
    monkeypatch.chdir(REPO)
    for command in commands:
        argv = shlex.split(command.replace("models/fleet", str(tmp_path / "fleet")))[1:]
        if argv[0] == "train":
            argv[argv.index("--epochs") + 1] = "2"
        assert main(argv) == 0, capsys.readouterr()
    assert "AUROC" in capsys.readouterr().out
