from __future__ import annotations

import json

import numpy as np
import pytest

from crysgen import CrysgenError
from crysgen.models.model_dir import read_model_meta
from crysgen.pipelines.generators import DEFAULT_MODEL, load_generator
from crysgen.representations.crystens import decode


def test_bundled_model_ships_small_and_complete():
    meta = read_model_meta(DEFAULT_MODEL)
    assert meta["kind"] == "diffusion"
    assert meta["data"]["name"] == "mp_20_train_partial.npz" and meta["data"]["count"] > 10_000
    size = (DEFAULT_MODEL / "weights.safetensors").stat().st_size
    assert size <= 25 * 2**20  # the 25 MB limit for a committed model


def test_bundled_model_samples_real_crystals():
    model = load_generator(None)
    x = model.sample(4, steps=5, sampler="ddim", seed=0, batch_size=4)
    assert x.shape == (4, 4, 64, 64) and np.isfinite(x).all()
    res = decode(x, model.scaling)
    assert len(res.crystals) + len(res.failures) == 4
    # a trained model's samples decode (an untrained one gives noise that mostly fails or
    # yields cells with no sensible lattice); at least one crystal with positive volume
    assert len(res.crystals) >= 1
    assert all(res.crystals.to_structure(i).volume > 1.0 for i in range(len(res.crystals)))


def test_load_generator_refuses_unknown_kind(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"format": "crysgen.model", "kind": "teleporter",
                                                       "config": {}}))
    with pytest.raises(CrysgenError, match="teleporter"):
        load_generator(tmp_path)
