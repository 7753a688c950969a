"""Every training option, defined once: its default, what it sets, its ``anomaly train`` flag and
the model it belongs to.

``TrainingOptions`` holds the options every model takes. Each model adds one dataclass of its
own (a ``ModelOptions``) with the checks of its values; ``MODEL_OPTIONS`` registers them by the
name ``--model`` takes, and each model class in ``detector.nn.models`` names its own as
``options_class`` (a test keeps the two registries equal; the dataclasses live here, not in the
model modules, because those import TensorFlow and ``anomaly --help`` must not).

Everything else is derived from these fields, never retyped: ``training.TrainingConfig``
inherits them all, ``VAEDetector``'s parameters are their signature, ``anomaly train``'s flags
are built from ``training_options()`` and the README's table of the models' options is
``markdown_table()``; tests/detector/test_options.py checks all of them against this module.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Self

from detector.wording import option

#: The flag of an option is its name with dashes unless its field says otherwise.
FLAG_FROM_NAME = "from the name"


def _opt(
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

    svdd_weight: float = _opt(0.1, "weight eta of the hypersphere term mean ||mu - c||^2")
    svdd_nu: float | None = _opt(
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
    advae_lambda: float = _opt(0.01, "weight lambda of the transformer's KL term")
    advae_gamma: float = _opt(0.001, "weight gamma of the encoder-adversarial KL terms")
    #: In squared standardised units summed over features (paper: 2, on min-max scaled ones).
    advae_margin_x: float = _opt(2.0, "margin m_x between G(z) and G(z_T), squared units")
    #: The paper tunes m_z per data set (20 or 40); 40 is its most common value.
    advae_margin_z: float = _opt(40.0, "margin m_z in nats of a generated record's KL")

    def problems(self, model: str) -> list[str]:
        return super().problems(model) + [
            f"{f.name} {getattr(self, f.name)} must be a number >= 0"
            for f in fields(self)
            if not (math.isfinite(getattr(self, f.name)) and getattr(self, f.name) >= 0)
        ]


@dataclass(frozen=True)
class CVAEOptions(ModelOptions):
    """conditioned on context columns, e.g. a host

    A context column is an input the model is conditioned on, not a column it scores."""

    context: tuple[str, ...] = _opt(
        (),
        "a column normal behaviour depends on, e.g. host; the model is conditioned on it, not "
        "scoring it",
        metavar="COL",
        shown="required",
    )
    context_dropout: float = _opt(
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

    iwae_samples: int = _opt(5, "importance samples k of the training bound (1: the ELBO)")

    def problems(self, model: str) -> list[str]:
        problems = super().problems(model)
        if not 1 <= self.iwae_samples <= 1000:
            problems.append(f"iwae_samples {self.iwae_samples} must be in [1, 1000]")
        return problems


@dataclass(frozen=True)
class VFAEOptions(ModelOptions):
    """codes invariant to a nuisance column, Louizos et al. 2016

    ``detector.nn.models.vfae`` says what the nuisance column and the weight do."""

    nuisance_column: str | None = _opt(
        None,
        "a column (a datacenter, a hardware type) the latent codes must not reveal; the model "
        "is conditioned on it, not scoring it",
        metavar="COL",
        shown="required",
    )
    mmd_weight: float = _opt(10.0, "weight of the MMD between the codes of the nuisance's values")

    def problems(self, model: str) -> list[str]:
        problems = super().problems(model)
        if model == self.owner() and not self.nuisance_column:
            problems.append(
                f"model {model!r} needs the column to be invariant to: "
                f"e.g. {option('nuisance_column', 'datacenter')}"
            )
        if not (math.isfinite(self.mmd_weight) and self.mmd_weight >= 0):
            problems.append(f"mmd_weight {self.mmd_weight} must be a number >= 0")
        return problems


#: The models by the name ``anomaly train --model`` takes, in ``--help``'s order.
MODEL_OPTIONS: dict[str, type[ModelOptions]] = {
    "vae": VAEOptions,
    "vae-svdd": SVDDOptions,
    "advae": AdVAEOptions,
    "cvae": CVAEOptions,
    "iwae": IWAEOptions,
    "vfae": VFAEOptions,
}


def conditioned_on(config: Any) -> tuple[str, ...]:
    """The columns a model is conditioned on: cvae's context, or vfae's nuisance column."""
    if config.model == "vfae" and config.nuisance_column:
        return (config.nuisance_column,)
    return tuple(config.context)


def describe(model: str) -> str:
    """What ``model`` is, in a few words (its options class's docstring)."""
    return (MODEL_OPTIONS[model].__doc__ or "").strip().splitlines()[0]


@dataclass(frozen=True)
class TrainingOptions(Options):
    """The options every model takes; ``None`` sizes the network from the data."""

    model: str = _opt(
        "vae",
        "the model: "
        + ", ".join(f"{name} ({describe(name)})" for name in MODEL_OPTIONS)
        + "; each one's own options are listed under its name",
        choices=tuple(MODEL_OPTIONS),
    )
    categorical: tuple[str, ...] = _opt(
        (), "treat a numeric-looking column as categorical", metavar="COL"
    )
    epochs: int = _opt(300, "maximum epochs")
    batch_size: int = _opt(128, "rows per mini-batch")
    learning_rate: float = _opt(1e-3, "Adam's learning rate")
    latent_dim: int | None = _opt(None, "latent width", shown="from the data")
    hidden_units: tuple[int, ...] | None = _opt(
        None,
        "encoder layer sizes, e.g. 64,32",
        metavar="N,N",
        parse=sizes,
        shown="from the data",
    )
    activation: str = _opt("relu", "the hidden layers' activation (a Keras name)", flag=None)
    kl_warmup_epochs: int = _opt(10, "epochs over which the KL term's weight rises to 1")
    patience: int = _opt(20, "epochs without a better validation ELBO before training stops")
    min_scale: float = _opt(0.3, "decoder standard-deviation floor, standardised units")
    max_scale: float = _opt(2.0, "decoder standard-deviation ceiling", flag=None)
    #: ``schema.fit_schema`` says why, README "Column scaling" when to raise it.
    range_floor: float = _opt(
        0.05,
        "each numeric column's scale is at least this fraction of its training range; 0.25 "
        "scales nearly every column by its range, as min-max scaling does",
    )
    clip: float = _opt(10.0, "standardised values are clipped to +-clip", flag=None)
    validation_fraction: float = _opt(
        0.15, "share of the rows early stopping watches, in [0.05, 0.4]", flag=None
    )
    calibration_fraction: float = _opt(
        0.15, "share of the rows the threshold is calibrated on, in [0.05, 0.4]", flag=None
    )
    target_fpr: float = _opt(0.01, "false-positive rate the threshold is set for")
    n_samples: int = _opt(8, "latent samples L per scored record", flag="--samples")
    score_kind: str | None = _opt(
        None,
        "score: knn (distance to the nearest normal rows), elbo_knn, recon_prob, mean_log_lik, "
        "elbo or iwae, or a model's own (vae-svdd: svdd_distance, combined, either; advae: "
        "recon_error)",
        flag="--score",
        metavar="KIND",
        shown="knn; elbo for the other models and with --neighbours 0",
    )
    #: The bundle keeps a bank of training rows only when its score uses it.
    neighbours: int = _opt(
        5,
        "k of the distance to the nearest normal training rows, which the bundle keeps; 0 "
        "keeps no training rows in the bundle and scores with the model alone",
        metavar="K",
    )
    random_state: int = _opt(0, "random seed", flag="--seed")
    #: ``anomaly train`` shows progress unless --quiet or --json.
    progress: bool = _opt(False, "show training progress on stderr", flag=None)

    def problems(self, model: str) -> list[str]:
        problems = []
        if model not in MODEL_OPTIONS:
            problems.append(f"model {model!r} is not one of {sorted(MODEL_OPTIONS)}")
        for name in ("validation_fraction", "calibration_fraction"):
            value = getattr(self, name)
            if not 0.05 <= value <= 0.4:
                problems.append(f"{name} {value} must be in [0.05, 0.4]")
        if self.neighbours < 0:
            problems.append("neighbours must be 0 (no bank) or at least 1")
        for name in ("epochs", "batch_size", "n_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.latent_dim is not None and self.latent_dim < 1:
            problems.append("latent_dim must be at least 1")
        if self.hidden_units is not None and (not self.hidden_units or min(self.hidden_units) < 1):
            problems.append("hidden_units must be a non-empty list of positive sizes")
        if not 0 < self.min_scale < self.max_scale:
            problems.append("need 0 < min_scale < max_scale")
        if not 0 <= self.range_floor <= 1:
            problems.append(f"range_floor {self.range_floor} must be a fraction in [0, 1]")
        if not 0 < self.target_fpr < 0.5:
            problems.append(f"target_fpr {self.target_fpr} must be in (0, 0.5)")
        if self.learning_rate <= 0:
            problems.append("learning_rate must be positive")
        return problems


def _and(names: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    listed = list(names)
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} and {listed[-1]}"
