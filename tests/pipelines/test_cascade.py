from __future__ import annotations

import csv

import numpy as np
import pytest

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.pipelines.cascade import CascadeModel, assemble_cascade
from crysgen.pipelines.diffusion import DiffusionModel
from crysgen.pipelines.generators import load_generator
from crysgen.training.config import DiffusionTrainConfig
from crysgen.training.diffusion import train_diffusion
from tests.conftest import load_cif

UNET = {"block_out_channels": [8, 16], "attention": [False, True], "norm_num_groups": 4,
        "layers_per_block": 1}
OPTIM = {"batch_size": 2, "max_steps": 2, "checkpoint_every": 2, "warmup_steps": 1}


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cascade")
    cs = CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=52)
    data = cs.save(tmp / "two.npz")
    base = DiffusionTrainConfig.from_dict({"unet": UNET | {"sample_size": 32}, "optim": OPTIM,
                                           "stage": {"role": "base"}})
    sr = DiffusionTrainConfig.from_dict({"unet": UNET | {"cond_channels": 4}, "optim": OPTIM,
                                         "stage": {"role": "sr", "aug_sample": 0.1}})
    return tuple(train_diffusion(data, tmp / name, config=cfg, progress=False, accelerator="cpu")
                 for name, cfg in (("base", base), ("sr", sr)))


def test_assembled_cascade_samples_and_reloads(stages, tmp_path):
    out = assemble_cascade(*stages, tmp_path / "cascade")
    model = load_generator(out)
    assert isinstance(model, CascadeModel) and model.aug_sample == 0.1
    x = model.sample(3, steps=2, seed=4)
    assert x.shape == (3, 4, 64, 64) and x.min() >= 0 and x.max() <= 1
    again = CascadeModel.from_pretrained(model.save_pretrained(tmp_path / "saved", half=False))
    np.testing.assert_array_equal(again.sample(3, steps=2, seed=4), x)
    with pytest.raises(CrysgenError, match="not empty"):
        assemble_cascade(*stages, out)


def test_cascade_parts_are_checked(stages, tmp_path):
    base, sr = stages
    with pytest.raises(CrysgenError, match="'base' and an 'sr'"):
        assemble_cascade(sr, base, tmp_path / "swapped")
    with pytest.raises(CrysgenError, match="stage of a cascade"):
        DiffusionModel.from_pretrained(base).sample(1, steps=1)


def test_sample_cli_on_a_cascade(stages, tmp_path, capsys):
    from crysgen.cli import main

    assert main(["model", "cascade", str(stages[0]), str(stages[1]), "--out",
                 str(tmp_path / "c")]) == 0
    assert main(["sample", str(tmp_path / "c"), "-n", "2", "--steps", "2", "--out",
                 str(tmp_path / "s"), "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "s" / "samples.csv").open()))
    assert [r["id"] for r in rows] == ["sample_000000", "sample_000001"]
