"""`crysgen train diffusion --sites N --element-code`: the run's config, scaling and model carry S."""

from __future__ import annotations

import json

import pytest
import yaml

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.pipelines.diffusion import DiffusionModel
from crysgen.representations.crystens import CrysTensScaling
from crysgen.representations.crystens.layout import CrysTensLayout
from crysgen.training.config import DiffusionTrainConfig
from tests.conftest import load_cif

TINY = {"unet": {"block_out_channels": [8, 16], "attention": [False, True],
                 "norm_num_groups": 4, "layers_per_block": 1},
        "optim": {"batch_size": 2, "max_steps": 2, "checkpoint_every": 2, "log_every": 1,
                  "warmup_steps": 1}}


def test_config_takes_its_network_size_from_the_layout():
    cfg = DiffusionTrainConfig.from_dict({"crystens": {"sites": 32}})
    assert cfg.unet.sample_size == 44 and cfg.crystens == CrysTensLayout(sites=32)
    assert DiffusionTrainConfig.from_dict({}).unet.sample_size == 64  # the paper's default
    coded = DiffusionTrainConfig.from_dict({}).with_layout(CrysTensLayout(sites=20, element_code=True))
    assert coded.unet.sample_size == 42
    assert DiffusionTrainConfig.from_dict(coded.to_dict()) == coded  # the saved config.yaml reloads
    with pytest.raises(CrysgenError, match=r"needs unet\.sample_size 44"):
        DiffusionTrainConfig.from_dict({"crystens": {"sites": 32}, "unet": {"sample_size": 64}})
    with pytest.raises(CrysgenError, match="paper's CrysTens layout"):
        DiffusionTrainConfig.from_dict({"crystens": {"sites": 32}, "stage": {"role": "base"},
                                        "unet": {"sample_size": 32}})
    with pytest.raises(CrysgenError, match=r"unknown key.*crystens: size"):
        DiffusionTrainConfig.from_dict({"crystens": {"size": 32}})


def test_cli_trains_a_32_site_model_with_element_codes(tmp_path, capsys):
    from crysgen.cli import main

    names = ["NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO"]
    data = CrystalSet.from_structures([load_cif(n) for n in names], max_sites=52).save(tmp_path / "d.npz")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert main(["train", "diffusion", "--data", str(data), "--out", str(run), "--config",
                 str(tmp_path / "tiny.yaml"), "--sites", "auto", "--element-code", "--quiet"]) == 0
    layout = CrysTensLayout(sites=8, element_code=True)  # auto: the largest crystal (NaCl, 8 sites)
    assert CrysTensScaling.load(run / "scaling.json").layout == layout
    assert yaml.safe_load((run / "config.yaml").read_text())["crystens"] == layout.to_dict()
    meta = json.loads((run / "model" / "config.json").read_text())
    assert meta["config"]["crystens"] == layout.to_dict() and meta["config"]["unet"]["sample_size"] == 30
    assert DiffusionModel.from_pretrained(run / "model").sample(1, steps=1).shape == (1, 4, 30, 30)
    # a run cannot take crystals larger than its layout, and says so before training
    assert main(["train", "diffusion", "--data", str(data), "--out", str(tmp_path / "r2"), "--config",
                 str(tmp_path / "tiny.yaml"), "--sites", "4", "--quiet"]) == 2
    assert "at most 4 sites" in capsys.readouterr().err
