from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.models.unet2d import UNetConfig
from crysgen.objectives.diffusion import DiffusionConfig
from crysgen.pipelines.diffusion import DiffusionModel, sample_tensors
from crysgen.representations.crystens import CrysTensScaling, decode
from crysgen.sampling import SampleOptions, sample_to_dir
from tests.conftest import load_cif

CFG = UNetConfig(block_out_channels=(8, 16), attention=(False, True), norm_num_groups=4,
                 layers_per_block=1)


@pytest.fixture
def model_dir(tmp_path):
    cs = CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=52)
    model = DiffusionModel.create(CFG, DiffusionConfig(), CrysTensScaling.fit(cs), {"name": "t"})
    return model.save_pretrained(tmp_path / "model", half=False)


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver", "ddpm"])
def test_sample_then_decode_end_to_end(model_dir, sampler):
    model = DiffusionModel.from_pretrained(model_dir)
    x = sample_tensors(model, 3, steps=2, sampler=sampler, seed=1)
    assert x.shape == (3, 4, 64, 64) and x.min() >= 0 and x.max() <= 1
    res = decode(x, model.scaling)
    assert len(res.crystals) + len(res.failures) == 3


def test_save_load_gives_identical_samples(model_dir, tmp_path):
    a = DiffusionModel.from_pretrained(model_dir)
    b = DiffusionModel.from_pretrained(a.save_pretrained(tmp_path / "again", half=False))
    np.testing.assert_array_equal(sample_tensors(a, 2, steps=2, seed=3),
                                  sample_tensors(b, 2, steps=2, seed=3))
    half = DiffusionModel.from_pretrained(a.save_pretrained(tmp_path / "half"))
    diff = sample_tensors(half, 2, steps=2, seed=3) - sample_tensors(a, 2, steps=2, seed=3)
    assert np.abs(diff).max() < 0.01  # fp16 weights: close, not identical


def test_interrupted_sample_run_resumes_without_duplicates(model_dir, tmp_path, monkeypatch):
    opts = SampleOptions(n=5, steps=2, chunk_size=2)
    full = sample_to_dir(model_dir, tmp_path / "full", opts, progress=False)
    assert full.n == 5
    import crysgen.sampling as sampling

    real = sampling._write_csv

    def crash_on_second_chunk(path, rows):
        if path.name == "chunk_00001.csv":
            raise KeyboardInterrupt
        real(path, rows)

    monkeypatch.setattr(sampling, "_write_csv", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        sample_to_dir(model_dir, tmp_path / "part", opts, progress=False)
    monkeypatch.setattr(sampling, "_write_csv", real)
    assert not (tmp_path / "part" / "chunks" / "chunk_00001.csv").exists()
    resumed = sample_to_dir(model_dir, tmp_path / "part", opts, progress=False)
    assert resumed.chunks_done_before == 1 and resumed.n == 5
    rows_full = list(csv.DictReader((tmp_path / "full" / "samples.csv").open()))
    rows_part = list(csv.DictReader((tmp_path / "part" / "samples.csv").open()))
    assert [r["id"] for r in rows_part] == [f"sample_{i:06d}" for i in range(5)]
    assert rows_part == rows_full
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["n"] == 5
    with pytest.raises(CrysgenError, match="other options"):
        sample_to_dir(model_dir, tmp_path / "part", SampleOptions(n=6, steps=2, chunk_size=2),
                      progress=False)


def test_sample_cli_writes_cifs(model_dir, tmp_path, capsys):
    from crysgen.cli import main

    assert main(["sample", str(model_dir), "-n", "3", "--steps", "2", "--out",
                 str(tmp_path / "s"), "--quiet"]) == 0
    assert "samples.csv" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "s" / "samples.csv").open()))
    assert len(rows) == 3
    for r in rows:
        assert (r["failure"] != "") != (tmp_path / "s" / "cifs" / f"{r['id']}.cif").exists()
    # a model directory that does not exist is a clear error, and nothing is written
    assert main(["sample", str(tmp_path / "no_model"), "-n", "3", "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["sample", str(model_dir), "-n", "2", "--steps", "2", "--symprec", "0.1",
                 "--out", str(tmp_path / "sym"), "--quiet"]) == 0
    config = json.loads((tmp_path / "sym" / "sample_config.json").read_text())
    assert config["options"]["symprec"] == 0.1
