"""How a message names an option, for whoever reads it.

The same error reaches three kinds of reader: someone at the ``anomaly`` command line
(``--keep-column X``), a Python caller of ``VAEDetector``, ``train`` or ``score_frame``
(``passthrough=['X']``) and an HTTP client of the service, whose operator sets
``passthrough_fields``. ``OPTIONS`` spells each option once for all three; a message asks
``option()`` for the name, and the surface active in the current context says which spelling it
gets. The command line (``detector.cli.main.run``) and the service (``service.app``) set theirs with
``speaking_to``; anything else is a Python caller.

A context variable, so that threads and requests keep their own: a thread started inside a block
sees the block's surface only when it runs in a copy of the caller's context
(``contextvars.copy_context().run``, as ``detector.io.threads`` does).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, get_args

Surface = Literal["cli", "python", "http"]


@dataclass(frozen=True)
class Option:
    """One option as each surface spells it: the command-line flag, the Python parameter and
    the service setting, ``None`` where that surface has no such option. ``many``: it takes
    several values (a repeatable flag, a list parameter)."""

    cli: str
    python: str | None
    http: str | None = None
    many: bool = False


def _hyperparameter(name: str) -> Option:
    # A training option (detector.nn.options, which imports this module, so it cannot be asked):
    # VAEDetector's parameter and TrainingConfig's field, whose `anomaly train` flag is the
    # name with dashes (tests/detector/test_options.py checks each against detector.nn.options).
    return Option(cli="--" + name.replace("_", "-"), python=name)


#: Every option a message names, by its Python name (the flag's where Python has none).
OPTIONS: dict[str, Option] = {
    "passthrough": Option("--keep-column", "passthrough", "passthrough_fields", many=True),
    "impute": Option("--impute", "impute"),
    "stream_format": Option("--output-format", "stream_format"),
    "max_series": Option("--max-series", "max_series", "series_max_keys"),
    "ignore_column": Option("--ignore-column", None, many=True),
    "max_rows": Option("--max-rows", None),
    "categorical": Option("--categorical", "categorical", many=True),
    "context": Option("--context", "context", many=True),
    "series_columns": Option("--series-column", "series_columns", many=True),
    "n_samples": Option("--samples", "n_samples"),
    "random_state": Option("--seed", "random_state"),
    "score_kind": Option("--score", "score_kind"),
    **{
        name: _hyperparameter(name)
        for name in (
            "model",
            "neighbours",
            "epochs",
            "learning_rate",
            "kl_warmup_epochs",
            "patience",
            "max_updates",
            "min_scale",
            "target_fpr",
            "context_dropout",
            "svdd_weight",
            "svdd_nu",
            "advae_lambda",
            "advae_gamma",
            "advae_margin_x",
            "advae_margin_z",
            "iwae_samples",
            "lsvae_weight_decay",
            "fae_weight",
            "fae_target_z",
            "fae_target_x",
            "time_column",
            "window",
            "short_window",
            "deviation_window",
            "column_window",
            "level_hours",
            "max_gap_seconds",
            "calendar",
            "raw_tails",
            "far_weight",
        )
    },
    # score_file's; score_frame's is passthrough above
    "keep_columns": Option("--keep-column", "keep_columns", "passthrough_fields", many=True),
    "chunk_rows": Option("--chunk-rows", "chunk_rows"),
    "encoding": Option("--encoding", "encoding"),
    "max_reject_rate": Option("--max-reject-rate", "max_reject_rate"),
    "max_ahead_seconds": Option(
        "--max-ahead-seconds", "max_ahead_seconds", "series_max_ahead_seconds"
    ),
    "out": Option("--out", "path"),
}

_surface: ContextVar[Surface] = ContextVar("detector_surface", default="python")


def current_surface() -> Surface:
    """Who reads this context's messages: ``"python"`` unless a block says otherwise."""
    return _surface.get()


@contextlib.contextmanager
def speaking_to(surface: Surface) -> Iterator[None]:
    """While the block runs (in this context), messages name options as ``surface`` does."""
    if surface not in get_args(Surface):
        raise ValueError(f"surface {surface!r} is not one of {get_args(Surface)}")
    token = _surface.set(surface)
    try:
        yield
    finally:
        _surface.reset(token)


def offered(name: str) -> bool:
    """Whether the current surface has the option ``name`` (the service cannot impute)."""
    return getattr(OPTIONS[name], current_surface()) is not None


def printable(text: object) -> str:
    """``text`` for a terminal: control characters (an escape sequence in a column name, a
    NUL, a newline) shown escaped, as ``repr`` shows them, rather than acted on."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def quoted(value: object) -> str:
    """``value`` as a command line takes it: printable, and quoted where a shell needs it."""
    return shlex.quote(printable(value))


def printable_message(text: str) -> str:
    """An error message for a terminal: its own line breaks kept, any other control character
    (one a file's column name brought in: a colour, a window title) shown escaped."""
    return "\n".join(printable(line) for line in text.split("\n"))


def option(name: str, *values: object) -> str:
    """The option ``name`` set to ``values`` as the current surface spells it:
    ``option("passthrough", "id")`` is ``--keep-column id`` on the command line,
    ``passthrough=['id']`` in Python and ``the service setting passthrough_fields = ['id']``
    over HTTP; with no values, the bare name. Where the surface lacks the option (check with
    ``offered``), Python's spelling, else the flag."""
    spec = OPTIONS[name]
    surface = current_surface()
    spelled = getattr(spec, surface)
    if spelled is None:
        surface, spelled = ("python", spec.python) if spec.python else ("cli", spec.cli)
    if not values:
        return spelled
    if surface == "cli":
        # Quoted as a shell needs: `--keep-column my col` kept two columns, `lab"el` opened a
        # quote the shell never closed.
        return " ".join(f"{spelled} {shlex.quote(printable(value))}" for value in values)
    value = list(values) if spec.many else values[0]
    if surface == "http":
        return f"the service setting {spelled} = {value!r}"
    return f"{spelled}={value!r}"


def train_command(path: object) -> str:
    """How to train a bundle into ``path``, as the current reader would (an HTTP client's
    operator trains on the command line)."""
    if current_surface() == "python":
        return f"`VAEDetector().fit(data).save({str(path)!r})`"
    return f"`anomaly train DATA --out {path}`"


def retarget_command() -> str:
    """How to change a trained bundle's target false-positive rate, as the reader would."""
    if current_surface() == "python":
        return "`detector.set_target_fpr(path, fpr)`"
    return "`anomaly threshold MODEL --fpr`"


def leave_one_out_note(rows: int, fit: int, validation: int, calibration: int) -> str:
    """The note a row count gets where the calibration rows overlap the others (a small
    table's, or a bank keeping them beside the fitted rows): each was measured against the
    rest."""
    return ", leave-one-out" if fit + validation + calibration > rows else ""


def measured_at_note(trained_at: float, in_force: float) -> str:
    """What a training's validation FPR needs beside it once ``anomaly threshold`` has moved the
    target: it was measured at the training's threshold, not the one in force."""
    return "" if trained_at == in_force else f" at the training's target FPR {percent(trained_at)}"


def scored_note(scored: object, validation_rows: object) -> str:
    """What a training's held-out FPR needs beside it where it was measured on a sample of the
    validation rows (the training summary's ``validation_scored``; ``None``: on every one)."""
    if not isinstance(scored, int) or not isinstance(validation_rows, int):
        return ""
    return f" (a uniform sample of {scored:,} of the {validation_rows:,} validation rows)"


def percent(share: float) -> str:
    """``share`` as a percentage to 3 decimals (2.000%), or to 2 significant digits where those
    would show a rate that is not zero as zero: a target FPR of 1e-6 read "0.000%"."""
    return f"{share:.3%}" if share >= 1e-5 or share == 0 else f"{100 * share:.2g}%"


def training_end(stopped_early: bool, best_epoch: object, budget: object = None) -> str:
    """How a training ended, as ``anomaly train``, ``anomaly info`` and the report say it:
    early stopping (and its best epoch, where ``best_epoch`` is not ``None``), the epoch limit,
    or the training summary's ``budget`` of mini-batch updates (``max_updates``), which cut
    the epochs."""
    best = "" if best_epoch is None else f", best epoch {best_epoch}"
    if not isinstance(budget, dict):
        return f"early stop{best}" if stopped_early else "epoch limit reached"
    cap = f"the budget of {budget['max_updates']:,} updates"
    run = f"{budget['updates']:,} run, {budget['batches_per_epoch']:,} an epoch"
    no_cap = f"{option('max_updates', 0)} for no cap"
    if stopped_early:
        return f"early stop{best}, within {cap} ({run}); {no_cap}"
    return f"stopped at {cap} ({run}); {no_cap}"
