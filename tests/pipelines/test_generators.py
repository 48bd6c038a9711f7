from __future__ import annotations

import json

import numpy as np
import pytest

from crysgen import CrysgenError
from crysgen.models.model_dir import read_model_meta
from crysgen.pipelines.generators import CRYSTENS_MODEL, DEFAULT_MODEL, load_generator
from crysgen.representations.crystens import decode


@pytest.mark.parametrize(("path", "kind", "data"), [
    (DEFAULT_MODEL, "atom_diffusion", "mp_20_asis_train_partial.npz"),
    (CRYSTENS_MODEL, "diffusion", "mp_20_asis_train_partial.npz")])
def test_bundled_models_ship_small_and_complete(path, kind, data):
    meta = read_model_meta(path)
    assert meta["kind"] == kind
    assert meta["data"]["name"] == data and meta["data"]["count"] > 10_000
    size = (path / "weights.safetensors").stat().st_size
    assert size <= 25 * 10**6  # the 25 MB limit for a committed model


def test_default_model_is_the_atom_model():
    assert type(load_generator(None)).__name__ == "AtomDiffusionModel"


def test_bundled_crystens_model_samples_real_crystals():
    model = load_generator(CRYSTENS_MODEL)
    layout = model.scaling.layout  # as-given cells: S = 32 sites after a header with element codes
    assert (layout.sites, layout.element_code, layout.site_offset) == (32, True, 22)
    x = model.sample(4, steps=5, sampler="ddim", seed=0, batch_size=4)
    assert x.shape == (4, 4, 54, 54) and np.isfinite(x).all()
    # seeded golden slice (torch 2.13, CPU): the header row of the first sample, every channel
    golden = [[0.0099, 0.0072, 0.0017, 0.0002], [0.0119, 0.0105, 0.0352, 0.0],
              [0.0089, 0.0120, 0.0, 0.0], [0.0, 0.0095, 0.0022, 0.0]]
    np.testing.assert_allclose(x[0, :, 0, :4], golden, atol=2e-3)
    # what the network learned: the S x S pairwise blocks of a CrysTens are symmetric; a trained
    # model's samples are far closer to symmetric than noise (uniform noise: mean |B - B^T| = 1/3;
    # this model at 5 steps: 0.01-0.035 per channel)
    block = x[:, :, 22:, 22:]
    assert np.abs(block - block.transpose(0, 1, 3, 2)).mean() < 0.1
    res = decode(x, model.scaling)
    assert len(res.crystals) == 4 and not res.failures  # all four decode at this seed
    assert all(res.crystals.to_structure(i).volume > 1.0 for i in range(len(res.crystals)))


def test_load_generator_refuses_unknown_kind(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"format": "crysgen.model", "kind": "teleporter",
                                                       "config": {}}))
    with pytest.raises(CrysgenError, match="teleporter"):
        load_generator(tmp_path)
