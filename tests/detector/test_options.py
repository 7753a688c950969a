"""One definition per option (#19): ``detector.nn.options`` defines every training option once, and
the CLI flags, the estimator's parameters, ``TrainingConfig``, the wording of messages and the
README's table are all checked against it here."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from sklearn.base import clone

from detector.cli.main import MODEL_NAMES, build_parser
from detector.cli.train import _flag_value
from detector.errors import ConfigError
from detector.estimator import VAEDetector
from detector.nn.option_specs import TrainingOption, markdown_table, training_options
from detector.nn.options import MODEL_OPTIONS, sizes
from detector.wording import OPTIONS, speaking_to

README = Path(__file__).resolve().parents[2] / "README.md"
OPTION_IDS = [o.name for o in training_options()]


def _train_actions() -> dict[str, argparse.Action]:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if a.choices and "train" in a.choices)
    return {f: a for a in commands.choices["train"]._actions for f in a.option_strings}


def _config(**settings: Any) -> Any:
    from detector.nn.training import TrainingConfig

    return TrainingConfig(**settings)


def _changed(o: TrainingOption) -> Any:
    """A value of ``o`` other than its default."""
    if o.many:
        return ("host",)
    if isinstance(o.default, int) and not isinstance(o.default, bool):
        return o.default + 1  # an integer option takes integers only
    return 0.5 if o.default is None else o.default / 2


def test_each_option_is_defined_once_with_a_default() -> None:
    assert len(OPTION_IDS) == len(set(OPTION_IDS))
    assert all(o.text and not o.text.endswith(".") for o in training_options())


@pytest.mark.parametrize("o", training_options(), ids=OPTION_IDS)
def test_the_estimator_and_the_config_take_the_option_with_its_default(o: TrainingOption) -> None:
    assert VAEDetector().get_params()[o.name] == o.default
    config_fields = {f.name: f for f in fields(_config())}
    assert config_fields[o.name].default == o.default


def test_the_estimator_and_the_config_take_no_other_parameters() -> None:
    assert set(VAEDetector().get_params()) == set(OPTION_IDS)
    assert {f.name for f in fields(_config())} == set(OPTION_IDS)


@pytest.mark.parametrize("o", training_options(), ids=OPTION_IDS)
def test_the_train_flag_has_the_options_type_and_default(o: TrainingOption) -> None:
    actions = _train_actions()
    if o.flag is None:
        assert "--" + o.name.replace("_", "-") not in actions
        return
    action = actions[o.flag]
    assert action.dest == o.dest
    if o.many:
        assert isinstance(action, argparse._AppendAction) and action.default == []
    elif o.switch:
        assert isinstance(action, argparse._StoreTrueAction) and o.default is False
    else:
        assert action.default == o.default
        assert action.type is o.kind
        assert action.choices == o.choices
    assert o.default_text in (action.help or "") or o.many


def test_every_training_flag_is_an_option_and_train_with_no_flags_is_the_default() -> None:
    others = {"-h", "--help", "--out", "--label-column", "--ignore-column", "--json", "--quiet"}
    others |= {"--anomaly-value", "--normal-value"}  # how --label-column is read
    others |= {"--report", "--report-data", "--report-label-column"}
    others |= {"--encoding", "--max-rows"}  # how the file is read
    flags = {o.flag for o in training_options() if o.flag is not None}
    assert set(_train_actions()) - others == flags
    args = build_parser().parse_args(["train", "d.csv", "--out", "m"])
    given = {o.name: _flag_value(args, o) for o in training_options() if o.flag is not None}
    assert _config(**given, progress=True) == _config(progress=True)


def test_flags_reach_the_config_as_the_options_hold_them() -> None:
    args = build_parser().parse_args(
        ["train", "d.csv", "--out", "m", "--hidden-units", "8,4", "--samples", "3", "--seed",
         "7", "--score", "elbo", "--categorical", "a", "--categorical", "b"]
    )  # fmt: skip
    given = {o.name: _flag_value(args, o) for o in training_options() if o.flag is not None}
    assert (given["hidden_units"], given["n_samples"], given["random_state"]) == ((8, 4), 3, 7)
    assert (given["score_kind"], given["categorical"]) == ("elbo", ("a", "b"))
    assert sizes("64,32") == (64, 32)


def test_the_model_registries_agree() -> None:
    from detector.nn.models import MODELS

    assert sorted(MODELS) == sorted(MODEL_OPTIONS) and tuple(MODEL_OPTIONS) == MODEL_NAMES
    for name, model in MODELS.items():
        assert model.options_class is MODEL_OPTIONS[name], name


def test_defaults_named_elsewhere_agree() -> None:
    # schema and neighbours keep their own constants for their functions' defaults.
    from detector.features.schema import DEFAULT_CLIP, DEFAULT_RANGE_FLOOR
    from detector.scoring.neighbours import DEFAULT_K

    defaults = {o.name: o.default for o in training_options()}
    assert (defaults["clip"], defaults["range_floor"]) == (DEFAULT_CLIP, DEFAULT_RANGE_FLOOR)
    assert defaults["neighbours"] == DEFAULT_K


def test_messages_spell_options_as_the_options_do() -> None:
    by_name = {o.name: o for o in training_options()}
    named = [name for name, spec in OPTIONS.items() if spec.python in by_name]
    # A refusal names every option of a model (ModelOptions.problems).
    assert {o.name for o in training_options() if o.model} | {"model", "epochs"} <= set(named)
    for name in named:
        o = by_name[OPTIONS[name].python or ""]
        assert (OPTIONS[name].cli, OPTIONS[name].many) == (o.flag, o.many), name


@pytest.mark.parametrize(
    "o", [o for o in training_options() if o.model], ids=lambda o: o.name
)  # fmt: skip
def test_a_models_option_is_refused_for_the_other_models(o: TrainingOption) -> None:
    assert o.model is not None
    # What the owner needs besides the option: cvae its context.
    needs = {"cvae": {"context": ("host",)}}
    owner_needs = {k: v for k, v in needs.get(o.model, {}).items() if k != o.name}
    assert _config(model=o.model, **{**owner_needs, o.name: _changed(o)}).problems() == []
    for model in set(MODEL_OPTIONS) - {o.model}:
        config = _config(model=model, **{o.name: _changed(o)})
        expected = "takes no context" if o.name == "context" else f"are for model {o.model!r}"
        with pytest.raises(ConfigError, match=expected):
            config.check()


def test_the_refusal_names_the_options_as_the_reader_spells_them() -> None:
    config = _config(model="vae", advae_gamma=0.1)
    (problem,) = config.problems()
    assert problem == (
        "advae_lambda, advae_gamma, advae_margin_x and advae_margin_z are for model 'advae', "
        "not 'vae': drop advae_gamma"
    )
    with speaking_to("cli"):
        (problem,) = _config(model="vae-svdd", context_dropout=0.2).problems()
    assert problem == (
        "--context and --context-dropout are for model 'cvae', not 'vae-svdd': drop "
        "--context-dropout"
    )


def test_the_estimator_is_a_scikit_learn_estimator_of_the_options() -> None:
    detector = VAEDetector(model="advae", advae_gamma=0.1, hidden_units=(8,))
    copy = clone(detector).set_params(epochs=2)
    assert copy.get_params() == {**detector.get_params(), "epochs": 2}
    assert "advae_gamma=0.1" in repr(detector) and "epochs" not in repr(detector)
    with pytest.raises(TypeError, match="epoch"):
        VAEDetector(epoch=3)


def test_the_readme_holds_the_options_table_as_rendered() -> None:
    text = README.read_text(encoding="utf-8")
    assert markdown_table() in text, (
        "README.md's table of the models' options is out of date; paste the output of "
        "`python -c 'from detector.nn.option_specs import markdown_table; print(markdown_table())'`"
    )
    for o in training_options():
        if o.model:
            row = next(r for r in markdown_table().splitlines() if r.startswith(f"| `{o.model}`"))
            # Its default is in `anomaly train --help`, rendered from the same spec.
            assert f"`{o.flag}" in row, o.name


def test_defaults_the_readme_states_are_the_options() -> None:
    text = README.read_text(encoding="utf-8")
    by_flag = {o.flag: o for o in training_options() if o.flag}
    stated = re.findall(r"`(--[a-z-]+)[^`]*`\s+\(default:?\s+([^;),]+)", text)
    checked = [(flag, value) for flag, value in stated if flag in by_flag]
    for flag, value in checked:
        assert value.strip() == by_flag[flag].default_text, flag


def test_rates_are_taken_as_shares_or_percentages() -> None:
    # "--target-fpr 1%" was "invalid float value: '1%'".
    parser = build_parser()
    train = parser.parse_args(["train", "d.csv", "--out", "m", "--target-fpr", "2.5%"])
    assert train.target_fpr == pytest.approx(0.025)
    assert parser.parse_args(["threshold", "m", "--fpr", "0.1%"]).fpr == pytest.approx(0.001)
    score = parser.parse_args(["score", "m", "d.csv", "--output", "o", "--max-reject-rate", "5%"])
    assert score.max_reject_rate == pytest.approx(0.05)
    assert parser.parse_args(["threshold", "m", "--fpr", "0.02"]).fpr == 0.02
