"""`crysgen train property` on the shared run machinery: resolved config, resume, exports, errors.

Tiny and hermetic: eight crystals, an 8-wide random element table in place of cgcnn's
atom_init.json, a one-convolution network; every run takes a few CPU seconds.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from crysgen.cli import main
from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.properties.model import PropertyModel
from crysgen.training.config import PropertyTrainConfig, load_config
from crysgen.training.property import train_property
from tests.conftest import FILES, load_cif

TINY = "epochs: 2\nbatch_size: 2\nval_fraction: 0.25\natom_fea_len: 8\nn_conv: 1\nlog_every: 1\n"
"""6 training crystals in batches of 2: 3 steps an epoch, 6 in all, a checkpoint every epoch."""


@pytest.fixture
def models_dir(tmp_path):
    """A models directory with a small random element table (rows Z = 1..100)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "models"
    folder.mkdir()
    table = {str(z): rng.random(8).round(3).tolist() for z in range(1, 101)}
    (folder / "atom_init.json").write_text(json.dumps(table))
    return folder


@pytest.fixture
def tiny(tmp_path):
    """Eight crystals (four structures, each also 5 % expanded) with a property ``e``."""
    structures = []
    for name in ("NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO"):
        s = load_cif(name)
        bigger = s.copy()
        bigger.scale_lattice(s.volume * 1.05)
        structures += [s, bigger]
    return CrystalSet.from_structures(structures, ids=[f"c{i}" for i in range(8)],
                                      properties={"e": np.linspace(-2.0, 1.0, 8)}).save(tmp_path / "tiny.npz")


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _cli(tiny, run, models_dir, *extra):
    return main(["train", "property", "--data", str(tiny), "--out", str(run), "--models-dir",
                 str(models_dir), "--quiet", *extra])


def test_train_then_resume_continues_from_the_saved_step_with_the_saved_config(
        tiny, models_dir, config_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert _cli(tiny, run, models_dir, "--target", "e", "--unit", "eV", "--config", str(config_file),
                "--lr", "0.01") == 0
    assert "held-out (2 crystals) at step 6" in capsys.readouterr().out
    saved = load_config(run / "config.yaml", PropertyTrainConfig)
    # the options over the YAML, and the steps resolved from 2 epochs of 3 batches
    assert (saved.target, saved.unit, saved.lr, saved.batch_size) == ("e", "eV", 0.01, 2)
    assert (saved.max_steps, saved.checkpoint_every) == (6, 3)
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"step0000003.ckpt", "step0000006.ckpt",
                                                                "last.ckpt"}
    assert (run / "curves.png").is_file() and (run / "parity.png").is_file()
    first = PropertyModel.from_pretrained(run / "model")
    assert first.info["step"] == 6 and first.info["count"] == 8 and first.target == "e"
    state = json.loads((run / "target.json").read_text())
    assert (state["n_train"], state["n_val"]) == (6, 2)

    # a resumed run names neither the target nor the config: both come from the run directory
    assert _cli(tiny, run, models_dir, "--resume", "--max-steps", "9") == 0
    assert load_config(run / "config.yaml", PropertyTrainConfig) == replace(saved, max_steps=9)
    assert json.loads((run / "target.json").read_text()) == state
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 9
    assert all(float(s["step"]) == 9 for s in ckpt["optimizer_states"][0]["state"].values())
    runs = json.loads((run / "train_summary.json").read_text())["runs"]
    # 3 more steps from step 6, not 9 from a fresh start
    assert [(r["steps"], r["end_step"]) for r in runs] == [(6, 6), (3, 9)]
    resumed = PropertyModel.from_pretrained(run / "model")
    assert resumed.info["step"] == 9 and resumed.mean == first.mean
    assert not torch.equal(resumed.net.fc_out.weight, first.net.fc_out.weight)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 9 and np.isfinite(metrics["val_mae"])


def test_transfer_learning_keeps_the_frozen_layers_through_a_resume(tiny, models_dir, config_file, tmp_path):
    base = tmp_path / "base"
    assert _cli(tiny, base, models_dir, "--target", "e", "--config", str(config_file),
                "--max-steps", "2") == 0
    run = tmp_path / "run"
    assert _cli(tiny, run, models_dir, "--target", "e", "--config", str(config_file), "--init",
                str(base / "model"), "--freeze-conv", "--max-steps", "2") == 0
    assert _cli(tiny, run, models_dir, "--resume", "--max-steps", "4") == 0
    init, model = (PropertyModel.from_pretrained(p / "model") for p in (base, run))
    assert model.info["step"] == 4 and model.info["init"] == str(base / "model") and model.info["freeze_conv"]
    before, after = init.net.state_dict(), model.net.state_dict()
    frozen = [k for k in before if k.startswith(("embedding.", "convs."))]
    # the weights and the batch-norm statistics
    assert "convs.0.fc_full.weight" in frozen and "convs.0.bn1.running_mean" in frozen
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(init.net.fc_out.weight, model.net.fc_out.weight)  # the head was trained


def test_a_run_stopped_by_the_clock_exports_a_model_predict_and_label_can_use(tiny, models_dir, tmp_path):
    run = tmp_path / "run"
    config = PropertyTrainConfig.from_dict({"epochs": 100, "batch_size": 2, "val_fraction": 0.25,
                                           "atom_fea_len": 8, "n_conv": 1})
    train_property(tiny, run, target="e", unit="eV", config=config, models_dir=models_dir, max_minutes=1e-6,
                   progress=False, accelerator="cpu")
    stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 1 <= stopped < load_config(run / "config.yaml", PropertyTrainConfig).max_steps == 300
    model = PropertyModel.from_pretrained(run / "model")
    assert model.info["step"] == stopped and np.isfinite(model.info["val_metrics"]["val_mae"])
    out = tmp_path / "props.csv"
    assert main(["predict", str(FILES / "NaCl.cif"), str(FILES / "SrTiO3.cif"),
                 "--models", str(run / "model"), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and all(np.isfinite(float(r["e_eV"])) for r in rows)
    assert main(["data", "label", str(tiny), "--model", str(run / "model"), "--property", "f",
                 "--out", str(tmp_path / "labelled.npz")]) == 0
    assert np.isfinite(CrystalSet.load(tmp_path / "labelled.npz").properties["f"]).all()


def test_bad_options_get_a_clear_error_before_anything_is_written(tiny, models_dir, config_file, tmp_path,
                                                                   capsys):
    run = tmp_path / "run"
    cases = [
        (["--config", str(config_file)], "needs a target"),
        (["--target", "e", "--lr", "0"], "lr must be positive"),
        (["--target", "e", "--freeze-conv"], "--freeze-conv needs --init"),
        (["--target", "nope"], "no property 'nope'"),
        (["--resume"], "no checkpoint"),
        (["--resume", "--epochs", "3", "--lr", "0.1"], "--epochs, --lr set a new run's settings"),
    ]
    for extra, message in cases:
        assert _cli(tiny, run, models_dir, *extra) == 2, extra
        assert message in capsys.readouterr().err, extra
        assert not (run / "checkpoints").exists()
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("target: e\nepoch: 3\n")
    assert _cli(tiny, run, models_dir, "--config", str(bad_yaml)) == 2
    assert "unknown config key(s): epoch" in capsys.readouterr().err

    assert _cli(tiny, run, models_dir, "--target", "e", "--config", str(config_file), "--max-steps", "1") == 0
    capsys.readouterr()
    for extra, message in [(["--target", "e"], "already holds a run"),
                           (["--resume", "--target", "other"], "--target 'other' (the run's: 'e')"),
                           (["--resume", "--val", str(tiny)], "--val"),
                           (["--resume", "--init", "x"], "cannot be combined with --resume")]:
        assert _cli(tiny, run, models_dir, *extra) == 2, extra
        assert message in capsys.readouterr().err, extra
    with pytest.raises(CrysgenError, match="val_fraction must be between 0 and 1"):
        PropertyTrainConfig(val_fraction=1.0)


def test_the_help_names_the_config_defaults():
    import argparse

    from crysgen.cli import build_parser

    def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[name]

    helps = {a.dest: a.help for a in subparser(subparser(build_parser(), "train"), "property")._actions}
    d = PropertyTrainConfig()
    for dest in ("epochs", "batch_size", "lr", "seed"):
        assert f"(default: {getattr(d, dest):g})" in helps[dest], dest
    assert f"{d.val_fraction:.0%}".replace("%", " %%") in helps["val"]


def test_export_of_a_checkpoint_is_the_run_s_own_export_at_that_step(tiny, models_dir, tmp_path, capsys):
    import shutil

    every2 = tmp_path / "every2.yaml"
    every2.write_text(TINY + "checkpoint_every: 2\n")
    run = tmp_path / "run"
    assert _cli(tiny, run, models_dir, "--target", "e", "--config", str(every2), "--max-steps", "2") == 0
    shutil.copytree(run / "model", tmp_path / "own2")
    assert _cli(tiny, run, models_dir, "--resume", "--max-steps", "4") == 0
    report = (run / "metrics.json").read_text()
    other = CrystalSet.load(tiny).subset(np.arange(7)).save(tmp_path / "other.npz")

    def export(*extra: str) -> int:
        return main(["model", "export", str(run), "--out", str(tmp_path / "at2"), *extra])

    capsys.readouterr()
    # the held-out crystals are a share of the training set, which the run directory does not keep
    assert export("--step", "2") == 2
    assert "pass --data with the run's training set (tiny.npz, 8 crystals" in capsys.readouterr().err
    assert export("--step", "2", "--data", str(other)) == 2
    assert "holds other crystals than the run's training set" in capsys.readouterr().err
    assert export("--step", "2", "--data", str(tiny)) == 0
    own, at2, last = (PropertyModel.from_pretrained(p) for p in (tmp_path / "own2", tmp_path / "at2",
                                                                  run / "model"))
    # step 2, its held-out scores (of the step-2 weights on the run's held-out crystals), sizes, config
    assert at2.info == own.info and at2.info["step"] == 2 and last.info["step"] == 4
    assert (at2.target, at2.unit, at2.mean, at2.std) == (own.target, own.unit, own.mean, own.std)
    for (k, a), b in zip(own.net.state_dict().items(), at2.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)  # the weights of step 2, not those of step 4
    assert not torch.equal(at2.net.fc_out.weight, last.net.fc_out.weight)
    assert (run / "metrics.json").read_text() == report  # the run's own report is its latest export's
    assert export("--step", "3", "--data", str(tiny)) == 2
