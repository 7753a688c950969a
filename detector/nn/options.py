"""Every training option, defined once: its default, what it sets, its ``anomaly train`` flag and
the model it belongs to.

``training_options.TrainingOptions`` holds the options every model takes. Each model adds one
dataclass of its own (a ``ModelOptions``) with the checks of its values; ``MODEL_OPTIONS``
registers them by the name ``--model`` takes, and each model class in ``detector.nn.models``
names its own as ``options_class`` (a test keeps the two registries equal; the dataclasses live
here, not in the model modules, because those import TensorFlow and ``anomaly --help`` must
not).

Everything else is derived from these fields, never retyped: ``training.TrainingConfig``
inherits them all, ``VAEDetector``'s parameters are their signature, ``anomaly train``'s flags
are built from ``training_options()`` and the README's table of the models' options is
``markdown_table()``; tests/detector/test_options.py checks all of them against this module.
"""

from __future__ import annotations

import argparse
import math
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Self, get_args, get_origin, get_type_hints

import numpy as np

from detector.wording import option

#: The flag of an option is its name with dashes unless its field says otherwise.
FLAG_FROM_NAME = "from the name"


def opt(
    default: Any,
    text: str,
    *,
    flag: str | None = FLAG_FROM_NAME,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    shown: str | None = None,
) -> Any:
    """A field of an options dataclass. ``text`` says what it sets (the default is added where
    it is shown); ``flag``: ``anomaly train``'s, ``None`` where only Python offers the option;
    ``parse``: how the flag's text becomes the value where the field's type does not say;
    ``shown``: the default in words, where the value alone says too little."""
    spec = {"text": text, "flag": flag, "metavar": metavar, "parse": parse}
    return field(default=default, metadata={**spec, "choices": choices, "shown": shown})


def share(text: str) -> float:
    """A rate's value as a number or a percentage: ``0.01`` or ``1%``."""
    percent = text.strip().endswith("%")
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; give a share such as 0.01, or 1%"
        ) from None
    return value / 100 if percent else value


def sizes(text: str) -> tuple[int, ...]:
    """``--hidden-units``'s value: ``64,32`` -> ``(64, 32)``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of sizes"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return values


@dataclass(frozen=True)
class Options:
    """A set of options: ``of`` takes them from any object that has them (a ``TrainingConfig``),
    ``problems`` says what is wrong with their values for a model."""

    @classmethod
    def of(cls, source: object) -> Self:
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})


def type_problems(options: object) -> list[str]:
    """The options whose value is not of its field's type, each named: a Python caller's
    ``epochs="2"`` otherwise failed as "'<' not supported between 'str' and 'int'" (or, for
    ``epochs=2.5``, deep in training)."""
    hints = get_type_hints(type(options))
    found = []
    for f in fields(options):  # type: ignore[arg-type]
        value, hint = getattr(options, f.name), hints[f.name]
        if not _holds(value, hint):
            found.append(f"{f.name}={value!r} must be {_named_type(hint)}")
    return found


def _holds(value: Any, hint: Any) -> bool:
    if isinstance(hint, types.UnionType):
        return any(_holds(value, kind) for kind in get_args(hint))
    if hint is type(None):
        return value is None
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        return isinstance(value, tuple) and all(_holds(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool | np.bool_)
    if hint is int:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        )
    if hint is str:
        return isinstance(value, str)
    return True


def _named_type(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(_named_type(kind) for kind in get_args(hint))
    if hint is type(None):
        return "None"
    if get_origin(hint) is tuple:
        plural = {int: "integers", float: "numbers", str: "names"}
        return f"a tuple of {plural.get(get_args(hint)[0], 'values')}"
    names = {bool: "True or False", int: "an integer", float: "a number", str: "text"}
    return names.get(hint, str(hint))

    def problems(self, model: str) -> list[str]:
        return []


@dataclass(frozen=True)
class ModelOptions(Options):
    """The options one model adds; the first line of a subclass's docstring says in a few words
    what the model is (``--model``'s help, the README's table). Given to another model, an
    option set away from its default is refused: it would be silently ignored."""

    @classmethod
    def owner(cls) -> str:
        """The model these options are for, as ``MODEL_OPTIONS`` names it."""
        return next(name for name, registered in MODEL_OPTIONS.items() if registered is cls)

    def problems(self, model: str) -> list[str]:
        changed = [f.name for f in fields(self) if getattr(self, f.name) != f.default]
        if model == self.owner() or not changed:
            return []
        return [
            f"{_and(option(f.name) for f in fields(self))} are for model {self.owner()!r}, "
            f"not {model!r}: drop {_and(option(name) for name in changed)}"
        ]


@dataclass(frozen=True)
class VAEOptions(ModelOptions):
    """the plain VAE

    It has no options of its own."""


@dataclass(frozen=True)
class SVDDOptions(ModelOptions):
    """VAE + Deep SVDD hypersphere

    ``detector.nn.models.svdd`` says what the weight and nu do."""

    svdd_weight: float = opt(0.1, "weight eta of the hypersphere term mean ||mu - c||^2")
    svdd_nu: float | None = opt(
        None,
        "soft-boundary share nu in (0, 1] of records allowed outside the sphere",
        shown="none, one-class Deep SVDD",
    )

    def problems(self, model: str) -> list[str]:
        problems = super().problems(model)
        if not (math.isfinite(self.svdd_weight) and self.svdd_weight >= 0):
            problems.append(f"svdd_weight {self.svdd_weight} must be a number >= 0")
        if self.svdd_nu is not None and not 0 < self.svdd_nu <= 1:
            problems.append(f"svdd_nu {self.svdd_nu} must be in (0, 1], or None for no radius")
        return problems


@dataclass(frozen=True)
class AdVAEOptions(ModelOptions):
    """self-adversarial VAE, Wang et al. 2020

    The weights and margins are the paper's (``detector.nn.models.advae``)."""

    #: The paper tunes lambda per data set (.003 to .1); .01 is its most common value.
    advae_lambda: float = opt(0.01, "weight lambda of the transformer's KL term")
    advae_gamma: float = opt(0.001, "weight gamma of the encoder-adversarial KL terms")
    #: In squared standardised units summed over features (paper: 2, on min-max scaled ones).
    advae_margin_x: float = opt(2.0, "margin m_x between G(z) and G(z_T), squared units")
    #: The paper tunes m_z per data set (20 or 40); 40 is its most common value.
    advae_margin_z: float = opt(40.0, "margin m_z in nats of a generated record's KL")

    def problems(self, model: str) -> list[str]:
        return super().problems(model) + _negative_fields(self)


@dataclass(frozen=True)
class CVAEOptions(ModelOptions):
    """conditioned on context columns, e.g. a host

    A context column is an input the model is conditioned on, not a column it scores."""

    context: tuple[str, ...] = opt(
        (),
        "a column normal behaviour depends on, e.g. host; the model is conditioned on it, not "
        "scoring it",
        metavar="COL",
        shown="required",
    )
    context_dropout: float = opt(
        0.1,
        "share of training rows each context column is hidden from, so a context value never "
        "seen in training can be scored without it",
    )

    def problems(self, model: str) -> list[str]:
        problems = []
        if model == self.owner() and not self.context:
            problems.append(
                f"model {model!r} is conditioned on context columns: name at least one, "
                f"e.g. {option('context', 'host')}"
            )
        if model != self.owner() and self.context:
            context = option("context")
            problems.append(
                f"model {model!r} takes no context; {context} is for "
                f"{option('model', self.owner())} (or drop {context})"
            )
        else:
            problems += super().problems(model)
        if not 0 <= self.context_dropout < 1:
            problems.append(f"context_dropout {self.context_dropout} must be in [0, 1)")
        return problems


@dataclass(frozen=True)
class IWAEOptions(ModelOptions):
    """VAE trained on the IWAE bound, Burda et al. 2016

    ``detector.nn.models.iwae`` says what the sample count does."""

    iwae_samples: int = opt(5, "importance samples k of the training bound (1: the ELBO)")

    def problems(self, model: str) -> list[str]:
        problems = super().problems(model)
        if not 1 <= self.iwae_samples <= 1000:
            problems.append(f"iwae_samples {self.iwae_samples} must be in [1, 1000]")
        return problems


@dataclass(frozen=True)
class LSVAEOptions(ModelOptions):
    """least-squares VAE with weight decay, Ramachandra 2017

    ``detector.nn.models.lsvae`` says what the decay does."""

    lsvae_weight_decay: float = opt(1e-4, "weight of the L2 penalty on the network's weights")

    def problems(self, model: str) -> list[str]:
        problems = super().problems(model)
        if not (math.isfinite(self.lsvae_weight_decay) and self.lsvae_weight_decay >= 0):
            problems.append(f"lsvae_weight_decay {self.lsvae_weight_decay} must be a number >= 0")
        return problems


@dataclass(frozen=True)
class FAEOptions(ModelOptions):
    """VAE with Fisher-information terms, Zheng et al. 2019

    ``detector.nn.models.fae`` says what the weight and targets do; the defaults are the
    paper's code's (ksi 0.1, F 5)."""

    fae_weight: float = opt(0.1, "weight ksi of each |F - target| term")
    fae_target_z: float = opt(5.0, "target Fisher information of the codes, mean 1/sigma_z^2")
    fae_target_x: float = opt(5.0, "target Fisher information of the decoder, mean 1/sigma_x^2")

    def problems(self, model: str) -> list[str]:
        return super().problems(model) + _negative_fields(self)


@dataclass(frozen=True)
class ConvVAEOptions(ModelOptions):
    """VAE with a Conv1D encoder over the series window

    It has no options of its own: the window is ``--window``."""


def _negative_fields(options: ModelOptions) -> list[str]:
    """A problem for each of ``options``' numbers that is not a finite number >= 0."""
    return [
        f"{f.name} {getattr(options, f.name)} must be a number >= 0"
        for f in fields(options)
        if not (math.isfinite(getattr(options, f.name)) and getattr(options, f.name) >= 0)
    ]


#: The models by the name ``anomaly train --model`` takes, in ``--help``'s order.
MODEL_OPTIONS: dict[str, type[ModelOptions]] = {
    "vae": VAEOptions,
    "vae-svdd": SVDDOptions,
    "advae": AdVAEOptions,
    "cvae": CVAEOptions,
    "iwae": IWAEOptions,
    "lsvae": LSVAEOptions,
    "fae": FAEOptions,
    "conv-vae": ConvVAEOptions,
}


def conditioned_on(config: Any) -> tuple[str, ...]:
    """The columns a model is conditioned on: cvae's context."""
    return tuple(config.context)


def describe(model: str) -> str:
    """What ``model`` is, in a few words (its options class's docstring)."""
    return (MODEL_OPTIONS[model].__doc__ or "").strip().splitlines()[0]


def _and(names: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    listed = list(names)
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} and {listed[-1]}"
