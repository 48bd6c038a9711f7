from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.cli import main
from crysgen.crystal_set import CrystalSet, reduced_formula
from crysgen.models.composition_lm import CompositionModel
from crysgen.training.compositions import train_composition_model
from crysgen.training.config import CompositionTrainConfig
from tests.conftest import load_cif

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"d_model": 32, "layers": 1, "heads": 2, "dropout": 0.0}


def _crystals(names: tuple[str, ...], repeat: int) -> CrystalSet:
    one = CrystalSet.from_structures([load_cif(n) for n in names], ids=list(names))
    return one.subset(np.tile(np.arange(len(names)), repeat))


def _train(folder, val: bool):
    _crystals(("NaCl", "SrTiO3"), 40).save(folder / "train.npz")
    _crystals(("ZnO_wurtzite", "triclinic_LiFePO"), 2).save(folder / "val.npz")
    config = CompositionTrainConfig(net=SMALL, epochs=25, batch_size=16, lr=3e-3, seed=0)
    with torch.random.fork_rng():
        out = train_composition_model(folder / "train.npz", folder / "model", config=config,
                                      val=folder / "val.npz" if val else None, progress=False)
    return folder, out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("comp"), val=False)


@pytest.fixture(scope="module")
def trained_with_val(tmp_path_factory):
    """Validated on compositions it never sees: the best validation epoch comes early."""
    return _train(tmp_path_factory.mktemp("compval"), val=True)


def test_the_model_learns_its_training_compositions(trained):
    folder, out = trained
    model = CompositionModel.from_pretrained(out)
    z = model.sample(200, generator=torch.Generator().manual_seed(0))
    cells = {tuple(sorted(r[r > 0])) for r in z}
    train = CrystalSet.load(folder / "train.npz")
    known = {tuple(sorted(r[r > 0])) for r in train.atomic_numbers}
    share = np.mean([tuple(sorted(r[r > 0])) in known for r in z])
    assert share > 0.9, f"only {share:.2f} of the samples are training cells ({len(cells)} distinct)"
    assert {reduced_formula(r[r > 0]) for r in z if tuple(sorted(r[r > 0])) in known} == {"NaCl", "SrTiO3"}
    assert set(model.elements) == {8, 11, 17, 22, 38}  # the training crystals' elements only


def test_metrics_fall_and_the_kept_weights_are_the_best_validation_epoch(trained_with_val):
    folder, out = trained_with_val
    with (out / "metrics.csv").open() as fh:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    assert len(rows) == 25 and rows[-1]["train_nll"] < 0.3 * rows[0]["train_nll"]
    val = CrystalSet.load(folder / "val.npz")
    kept = float(CompositionModel.from_pretrained(out).nll(val.atomic_numbers).mean())
    best = min(r["val_nll"] for r in rows)
    assert kept == pytest.approx(best, rel=1e-4)
    assert best < rows[-1]["val_nll"]  # unseen compositions: the last epoch is not the kept one
    assert (out / "curves.png").is_file()


def test_the_cli_trains_one_and_refuses_bad_input(tmp_path, capsys):
    _crystals(("NaCl", "SrTiO3"), 4).save(tmp_path / "train.npz")
    rc = main(["train", "composition", "--data", str(tmp_path / "train.npz"), "--out", str(tmp_path / "m"),
               "--epochs", "2", "--quiet", "--set", "net.d_model=16", "--set", "net.heads=2"])
    assert rc == 0 and "model directory" in capsys.readouterr().out
    assert CompositionModel.from_pretrained(tmp_path / "m").net.cfg.d_model == 16
    assert main(["train", "composition", "--data", str(tmp_path / "absent.npz"), "--out",
                 str(tmp_path / "x")]) == 2
    assert "--data: no such file" in capsys.readouterr().err
    assert main(["train", "composition", "--data", str(tmp_path / "train.npz"), "--out", str(tmp_path / "x"),
                 "--set", "net.width=3"]) == 2
    assert "net.width" in capsys.readouterr().err
    with pytest.raises(CrysgenError, match="too small"):
        train_composition_model(tmp_path / "train.npz", tmp_path / "y",
                                config=CompositionTrainConfig(net={"max_sites": 4}), progress=False)
