"""Training's progress lines on stderr, in a module of its own without Keras: the command line
says what it reads before TensorFlow's import (~20 s), which ``callbacks`` would bring."""

from __future__ import annotations

import sys


def progress_line(text: str, *, enabled: bool) -> None:
    """A line of training's progress on stderr (what it does before and after the epochs, which
    took a minute each at 1,000,000 rows), where progress is shown."""
    if enabled:
        print(f"training: {text}", file=sys.stderr, flush=True)
