"""For the tests of training's caps on rows: a table read in chunks and never whole, watched;
the manifests of one training under several caps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import detector.io.frames
from tests.detector.test_cli import run


def chunks_read_never_whole(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of the chunks training reads from here on; reading a table whole fails."""
    chunks: list[int] = []
    real = detector.io.frames.iter_table

    def spy(*args: Any, **kwargs: Any) -> Iterator[pd.DataFrame]:
        for chunk in real(*args, **kwargs):
            chunks.append(len(chunk))
            yield chunk

    def whole(*args: Any, **kwargs: Any) -> pd.DataFrame:
        raise AssertionError("the whole table was read")

    monkeypatch.setattr(detector.io.frames, "iter_table", spy)
    monkeypatch.setattr(detector.io.frames, "read_table", whole)
    return chunks


def manifests_under_caps(
    capsys: pytest.CaptureFixture[str], argv: list[str], caps: tuple[str, ...], folder: Path
) -> list[tuple[str, dict[str, Any]]]:
    """What ``anomaly train ARGV --max-rows CAP`` said and saved for each cap, the manifest
    without what differs from run to run (its times)."""
    trained = []
    for cap in caps:
        out = folder / f"m{cap}"
        code, said, _ = run(capsys, *argv, "--out", str(out), "--max-rows", cap)
        assert code == 0, said
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["training"].pop("seconds")
        manifest.pop("created_at", None)
        trained.append((said, manifest))
    return trained
