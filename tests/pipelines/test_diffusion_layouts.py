"""A CrysTens diffusion model of another layout (S = 32, element codes) saves, loads and samples
through `crysgen sample MODEL_DIR` with no extra flag; directories saved before layouts load."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.models.unet2d import UNetConfig
from crysgen.objectives.diffusion import DiffusionConfig
from crysgen.pipelines.diffusion import DiffusionModel
from crysgen.representations.crystens import CrysTensScaling, decode
from crysgen.representations.crystens.layout import CrysTensLayout
from tests.conftest import load_cif

LAYOUT = CrysTensLayout(sites=32, element_code=True)


def _cfg(side: int) -> UNetConfig:
    return UNetConfig(sample_size=side, block_out_channels=(8, 16), attention=(False, True),
                      norm_num_groups=4, layers_per_block=1)


@pytest.fixture
def crystals():
    return CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=32)


def test_a_32_site_model_saves_its_layout_and_samples_it(crystals, tmp_path):
    torch.manual_seed(0)
    scaling = CrysTensScaling.fit(crystals, layout=LAYOUT)
    model = DiffusionModel.create(_cfg(LAYOUT.size), DiffusionConfig(), scaling, {"name": "t"})
    path = model.save_pretrained(tmp_path / "model", half=False)
    config = json.loads((path / "config.json").read_text())["config"]
    assert config["crystens"] == {"sites": 32, "element_code": True} and config["unet"]["sample_size"] == 54
    loaded = DiffusionModel.from_pretrained(path)
    assert loaded.scaling.layout == LAYOUT
    x = loaded.sample(2, steps=2, seed=1)
    assert x.shape == (2, 4, 54, 54)
    res = decode(x, loaded.scaling)  # the decoder reads the shape from the scaling
    assert res.n_input == 2 and res.crystals.max_sites == 32

    from crysgen.cli import main

    assert main(["sample", str(path), "-n", "2", "--steps", "2", "--out", str(tmp_path / "s"),
                 "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "s" / "samples.csv").open()))
    assert len(rows) == 2


def test_a_directory_saved_before_layouts_loads_as_the_papers(crystals, tmp_path):
    torch.manual_seed(0)
    model = DiffusionModel.create(_cfg(64), DiffusionConfig(), CrysTensScaling.fit(crystals))
    path = model.save_pretrained(tmp_path / "old", half=False)
    meta = json.loads((path / "config.json").read_text())
    del meta["config"]["crystens"]
    (path / "config.json").write_text(json.dumps(meta))
    scaling = json.loads((path / "scaling.json").read_text())
    del scaling["layout"]
    (path / "scaling.json").write_text(json.dumps(scaling))
    loaded = DiffusionModel.from_pretrained(path)
    assert loaded.scaling.layout == CrysTensLayout(sites=52, element_code=False)
    assert loaded.sample(1, steps=1).shape == (1, 4, 64, 64)


def test_a_network_of_the_wrong_size_or_a_layout_mismatch_is_refused(crystals, tmp_path):
    scaling = CrysTensScaling.fit(crystals, layout=LAYOUT)
    with pytest.raises(CrysgenError, match=r"takes 64² tensors but .* makes 54²"):
        DiffusionModel.create(_cfg(64), DiffusionConfig(), scaling)
    path = DiffusionModel.create(_cfg(54), DiffusionConfig(), scaling).save_pretrained(tmp_path / "m")
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["crystens"]["element_code"] = False
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CrysgenError, match=r"differs from scaling\.json"):
        DiffusionModel.from_pretrained(path)
