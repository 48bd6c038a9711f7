from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.models.unet2d import UNetConfig
from crysgen.objectives.diffusion import DiffusionConfig
from crysgen.pipelines.diffusion import DiffusionModel, sample_tensors
from crysgen.pipelines.sampling import SampleOptions, sample_to_dir
from crysgen.representations.crystens import CrysTensScaling, decode
from tests.conftest import load_cif

CFG = UNetConfig(block_out_channels=(8, 16), attention=(False, True), norm_num_groups=4,
                 layers_per_block=1)


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)  # the untrained network's weights: GOLDEN below depends on them
    cs = CrystalSet.from_structures([load_cif("NaCl"), load_cif("SrTiO3")], max_sites=52)
    model = DiffusionModel.create(CFG, DiffusionConfig(), CrysTensScaling.fit(cs), {"name": "t"})
    return model.save_pretrained(tmp_path / "model", half=False)


# x[:, 0, 0, :3] of 3 samples (seed 1, 2 steps) from the seeded untrained network: computed
# once with torch 2.13 on the CPU; they change if the denoiser, the scheduler step or the seeding
# changes (e.g. with the network's output replaced by noise)
GOLDEN = {"ddim": [[1.0, 0.6767, 0.9337], [0.8789, 0.8329, 0.0186], [1.0, 0.0955, 0.7048]],
          "dpmsolver": [[1.0, 0.7388, 0.8575], [0.7328, 0.7626, 0.2210], [1.0, 0.3318, 0.7320]],
          "ddpm": [[1.0, 0.6750, 0.9333], [0.8800, 0.8312, 0.0265], [0.9930, 0.0996, 0.7043]]}


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver", "ddpm"])
def test_sample_then_decode_end_to_end(model_dir, sampler):
    model = DiffusionModel.from_pretrained(model_dir)
    x = sample_tensors(model, 3, steps=2, sampler=sampler, seed=1)
    assert x.shape == (3, 4, 64, 64) and x.min() >= 0 and x.max() <= 1
    np.testing.assert_allclose(x[:, 0, 0, :3], GOLDEN[sampler], atol=2e-3)
    res = decode(x, model.scaling)
    # every sample is either decoded or has a reason, under its own index
    assert sorted([*res.index.tolist(), *(f.index for f in res.failures)]) == [0, 1, 2]
    assert all(f.reason for f in res.failures)


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
    import crysgen.pipelines.sampling as sampling

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


def test_a_folder_sampled_from_other_weights_at_the_same_path_is_not_resumed(model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    model = shutil.copytree(model_dir, tmp_path / "retrained")
    opts = SampleOptions(n=2, steps=2, chunk_size=2)
    sample_to_dir(model, tmp_path / "out", opts, progress=False)
    again = sample_to_dir(model, tmp_path / "out", opts, progress=False)  # same weights: resumes
    assert again.chunks_done_before == 1
    weights = load_file(model / "weights.safetensors")
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()},
              model / "weights.safetensors")  # the model at that path is retrained
    with pytest.raises(CrysgenError, match="other weights"):
        sample_to_dir(model, tmp_path / "out", opts, progress=False)
    config = json.loads((tmp_path / "out" / "sample_config.json").read_text())
    del config["weights"]  # a folder written before the weights were recorded still resumes
    (tmp_path / "out" / "sample_config.json").write_text(json.dumps(config))
    assert sample_to_dir(model, tmp_path / "out", opts, progress=False).chunks_done_before == 1


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


def test_decoding_in_worker_processes_gives_the_same_result():
    from crysgen.pipelines.crystens import decode_in_parts
    from crysgen.representations.crystens import DecodeOptions, encode

    names = ["NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO"]
    cs = CrystalSet.from_structures([load_cif(n) for n in names], max_sites=52)
    scaling = CrysTensScaling.fit(cs)
    x = encode(cs, scaling)
    x = np.concatenate([x, x + np.random.default_rng(0).normal(0, 0.01, x.shape).astype(np.float32),
                        np.full_like(x[:1], np.nan)])  # 9 tensors, the last one fails
    ids = [f"s{i}" for i in range(len(x))]
    one = decode(x, scaling, DecodeOptions(), ids=ids)
    two = decode_in_parts(x, scaling, DecodeOptions(), ids=ids, workers=2)
    assert list(two.index) == list(one.index) and len(one.crystals) == 8
    assert [(f.index, f.reason) for f in two.failures] == [(f.index, f.reason) for f in one.failures] == [
        (8, one.failures[0].reason)]
    np.testing.assert_array_equal(two.crystals.atomic_numbers, one.crystals.atomic_numbers)
    np.testing.assert_allclose(two.crystals.frac_coords, one.crystals.frac_coords)
    np.testing.assert_allclose(two.crystals.lattice, one.crystals.lattice)
    assert list(two.crystals.ids) == list(one.crystals.ids)
    for k in one.diagnostics:
        np.testing.assert_array_equal(two.diagnostics[k], one.diagnostics[k])


def test_coincident_atoms_fail_with_a_reason_instead_of_an_unreadable_cif(tmp_path):
    from pymatgen.core import Lattice, Structure

    from crysgen.pipelines.sampling import write_sample_row

    s = Structure(Lattice.cubic(4.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5001]])
    row = write_sample_row(({"id": "x", "failure": ""}, s, tmp_path))
    assert row["failure"].startswith("coincident_sites: 1 pair") and not (tmp_path / "x.cif").exists()
    ok = write_sample_row(({"id": "y", "failure": ""}, Structure(Lattice.cubic(4.0), ["Na", "Cl"],
                                                     [[0, 0, 0], [0.5, 0.5, 0.5]]), tmp_path))
    assert ok["failure"] == ""
    assert Structure.from_file(tmp_path / "y.cif").composition.reduced_formula == "NaCl"
