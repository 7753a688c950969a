"""Every training option as its users see it (``detector.nn.options`` defines them): the flags
``anomaly train`` offers, the parameters ``VAEDetector`` takes, and the README's table of the
models' own options."""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from functools import cache
from typing import Any, get_args, get_origin, get_type_hints

from detector.nn.options import (
    FLAG_FROM_NAME,
    MODEL_OPTIONS,
    Options,
    describe,
)
from detector.nn.training_options import TrainingOptions


@dataclass(frozen=True)
class TrainingOption:
    """One option as every surface derives it. ``model``: the one model it is for, ``None``
    for every model; ``flag``: ``anomaly train``'s, ``None`` where only Python offers it;
    ``kind``: what turns the flag's text into the value; ``many``: a repeatable flag, a tuple;
    ``switch``: a flag that takes no value and sets ``True``; ``hint``: the field's type."""

    name: str
    default: Any
    hint: Any
    text: str
    model: str | None
    flag: str | None
    metavar: str | None
    kind: Callable[[str], Any]
    choices: tuple[str, ...] | None
    many: bool
    shown: str | None
    switch: bool = False

    @property
    def dest(self) -> str:
        """The flag's attribute on ``argparse``'s namespace: the flag with underscores."""
        assert self.flag is not None, f"option {self.name} has no flag"
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def default_text(self) -> str:
        if self.shown is not None:
            return self.shown
        return "none" if self.default in (None, ()) else str(self.default)

    @property
    def help(self) -> str:
        """The flag's help: what it sets and its default."""
        return f"{self.text} ({'repeatable' if self.many else 'default: ' + self.default_text})"


@cache
def training_options() -> tuple[TrainingOption, ...]:
    """Every option: ``TrainingOptions``'s, then each model's in ``MODEL_OPTIONS`` order."""
    owners: list[tuple[str | None, type[Options]]] = [(None, TrainingOptions)]
    owners += MODEL_OPTIONS.items()
    found = []
    for model, cls in owners:
        hints = get_type_hints(cls)
        for f in fields(cls):
            assert f.default is not MISSING, f"option {f.name} needs a default"
            hint = hints[f.name]
            # `int | None` -> int; `tuple[str, ...]` -> a repeatable flag of str
            union = isinstance(hint, types.UnionType)
            base = next(a for a in get_args(hint) if a is not type(None)) if union else hint
            many = get_origin(base) is tuple and f.metadata["parse"] is None
            flag = f.metadata["flag"]
            found.append(
                TrainingOption(
                    name=f.name,
                    default=f.default,
                    hint=hint,
                    text=f.metadata["text"],
                    model=model,
                    flag="--" + f.name.replace("_", "-") if flag == FLAG_FROM_NAME else flag,
                    metavar=f.metadata["metavar"],
                    kind=f.metadata["parse"] or (base if base in (int, float) else str),
                    choices=f.metadata["choices"],
                    many=many,
                    shown=f.metadata["shown"],
                    switch=base is bool,
                )
            )
    return tuple(found)


def markdown_table() -> str:
    """The README's table of the models that have options of their own, one row per model;
    their defaults are in ``anomaly train --help`` (the README has room for one of the two)."""
    rows = ["| `--model` | model | own options |", "|---|---|---|"]
    for model in MODEL_OPTIONS:
        own = [o for o in training_options() if o.model == model]
        listed = ", ".join(
            f"`{o.flag}{' ' + o.metavar if o.metavar else ''}`"
            + (" (required)" if o.default_text == "required" else "")
            for o in own
        )
        if own:
            rows.append(f"| `{model}` | {describe(model)} | {listed} |")
    return "\n".join(rows) + "\n"
