"""Each CLI default is written once, in the options dataclass the command builds."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from crysgen.cli import build_parser
from crysgen.data.prepare import PrepareOptions
from crysgen.evaluation.stability import RelaxOptions
from crysgen.evaluation.suite import EvalOptions
from crysgen.pipelines.protocol import SampleOptions
from crysgen.representations.crystens import DecodeOptions

# (argv with the required arguments, dataclass, {argparse dest: dataclass field})
COMMANDS = [
    (["evaluate", "S", "--reference", "R", "--out", "O"], EvalOptions,
     {"comp_scaler": "comp_scaler", "cov_over": "cov_over", "smact_tables": "smact_tables",
      "csp_validity": "csp_validity", "workers": "workers", "device": "device",
      "relax_steps": "relax_steps", "relax_time_limit": "relax_time_limit_s",
      "relax_batch": "relax_batch_size", "potential": "potential"}),
    (["sample", "--out", "O"], SampleOptions,
     {"sigma": "sigma2", "prior": "prior", "per_target": "per_target", "guidance": "guidance",
      "steps": "steps", "sampler": "sampler", "chunk_size": "chunk_size", "seed": "seed",
      "decode_mode": "decode_mode"}),
    (["data", "prepare", "SRC", "--out", "O.npz"], PrepareOptions,
     {"cell": "cell", "max_sites": "max_sites", "symprec": "symprec", "min_distance": "min_distance",
      "max_z": "max_z"}),
    (["codec", "roundtrip", "F"], DecodeOptions, {"mode": "mode", "elements": "elements"}),
]


@pytest.mark.parametrize(("argv", "cls", "names"), COMMANDS,
                         ids=["evaluate", "sample", "data prepare", "codec roundtrip"])
def test_cli_defaults_are_read_from_the_dataclass(argv, cls, names, monkeypatch):
    """With every default of the dataclass changed, the parser's defaults change with it."""
    defaults = {f.name: f.default for f in fields(cls)}
    assert {names[d]: getattr(build_parser().parse_args(argv), d) for d in names} == {
        names[d]: defaults[names[d]] for d in names}
    marks = {field: object() for field in names.values()}
    for field, mark in marks.items():
        monkeypatch.setattr(cls, field, mark)  # the class attribute a dataclass default lives in
    args = build_parser().parse_args(argv)
    assert {names[d]: getattr(args, d) for d in names} == marks


def test_evaluation_relaxes_with_the_relaxation_defaults():
    e, r = EvalOptions(), RelaxOptions()
    assert (e.relax_steps, e.relax_fmax, e.relax_time_limit_s, e.relax_batch_size) == (
        r.steps, r.fmax, r.time_limit_s, r.batch_size)


def test_train_property_help_names_the_config_defaults():
    """`train property` leaves its options None (the config fills them, importing torch at run time
    only); its help quotes the config's defaults, which must be the config's."""
    from crysgen.training.config import PropertyTrainConfig

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = next(a for a in sub.choices["train"]._actions if isinstance(a, argparse._SubParsersAction))
    actions = {a.dest: a for a in train.choices["property"]._actions}
    config = PropertyTrainConfig()
    for dest in ("epochs", "batch_size", "lr", "seed"):
        assert actions[dest].default is None
        assert f"(default: {getattr(config, dest)})" in actions[dest].help, dest
