"""Composition control of CrysTens diffusion models: inpainted sampling and `--formula`."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.cli import main
from crysgen.crystal_set import CrystalSet
from crysgen.models.unet2d import UNetConfig
from crysgen.objectives.diffusion import DiffusionConfig
from crysgen.pipelines.diffusion import DiffusionModel, denoise, sample_tensors
from crysgen.pipelines.sampling import SampleOptions, sample_to_dir
from crysgen.pipelines.seeding import torch_generator
from crysgen.representations.crystens import CrysTensScaling
from crysgen.representations.crystens.composition import known_region
from crysgen.representations.crystens.layout import CrysTensLayout
from tests.conftest import load_cif

NAMES = ("NaCl", "SrTiO3", "triclinic_LiFePO")
LAYOUT = CrysTensLayout(sites=32, element_code=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crystals() -> CrystalSet:
    return CrystalSet.from_structures([load_cif(n) for n in NAMES], ids=list(NAMES), max_sites=32)


def _model(crystals: CrystalSet, layout: CrysTensLayout, objective: str = "ddpm") -> DiffusionModel:
    torch.manual_seed(0)
    cfg = UNetConfig(sample_size=layout.size, block_out_channels=(8, 16), attention=(False, True),
                     norm_num_groups=4, layers_per_block=1)
    return DiffusionModel.create(cfg, DiffusionConfig(objective=objective),
                                 CrysTensScaling.fit(crystals, layout=layout), {"name": "t"})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, crystals):
    return _model(crystals, LAYOUT).save_pretrained(tmp_path_factory.mktemp("m") / "model", half=False)


def _rows(folder):
    with (folder / "samples.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(("objective", "sampler"), [("ddpm", "ddim"), ("ddpm", "dpmsolver"), ("ddpm", "ddpm"),
                                                    ("edm", "ddim"), ("edm", "dpmsolver")])
def test_inpainted_sampling_keeps_the_known_region_exactly(crystals, objective, sampler):
    model = _model(crystals, LAYOUT, objective)
    z = crystals.atomic_numbers
    x = sample_tensors(model, 3, steps=3, sampler=sampler, seed=1, atomic_numbers=z)
    values, mask = known_region(z, model.scaling)
    np.testing.assert_array_equal(x[mask], values[mask])
    free = sample_tensors(model, 3, steps=3, sampler=sampler, seed=1)
    assert np.abs(free[mask] - values[mask]).max() > 0.1  # an untrained network alone does not
    assert np.abs(x[~mask] - free[~mask]).max() > 0  # the held region steers the rest
    # the loop itself holds the region (not only the final copy of the known values)
    known = (torch.from_numpy(values * 2 - 1), torch.from_numpy(mask))
    raw = denoise(model, 3, steps=3, sampler=sampler, generator=torch_generator(1), device="cpu", known=known)
    np.testing.assert_allclose(raw.numpy()[mask], values[mask] * 2 - 1, atol=1e-6)


def test_formula_samples_of_a_crystens_model_have_exactly_that_formula(model_dir, tmp_path, monkeypatch):
    # the untrained network's samples are far from any crystal (the decoder's spread check fails
    # them all); with the check off, every decoded one must still carry exactly the formula
    import functools

    import crysgen.pipelines.sampling as sampling
    from crysgen.representations.crystens import DecodeOptions

    unchecked = functools.partial(DecodeOptions, max_copy_spread=None)
    monkeypatch.setattr(sampling, "DecodeOptions", unchecked)
    assert main(["sample", str(model_dir), "-n", "6", "--steps", "3", "--formula", "LiFePO4",
                 "--out", str(tmp_path / "s"), "--quiet"]) == 0
    rows = _rows(tmp_path / "s")
    assert len(rows) == 6 and all(r["target"] == "LiFePO4" for r in rows)
    decoded = [r for r in rows if not r["failure"]]
    assert decoded and all(r["formula"] == "LiFePO4" for r in decoded)
    assert all(r["failure"].startswith("coincident_sites") for r in rows if r["failure"])


def test_compositions_give_one_sample_per_target_with_its_composition(model_dir, crystals, tmp_path):
    targets = tmp_path / "targets.npz"
    crystals.save(targets)
    sample_to_dir(model_dir, tmp_path / "s", SampleOptions(n=3, steps=2, compositions=str(targets)),
                  progress=False)
    rows = _rows(tmp_path / "s")
    assert [r["target"] for r in rows] == list(NAMES)
    want = {n: load_cif(n).composition.reduced_formula for n in NAMES}
    assert all(r["formula"] == want[r["target"]] for r in rows if not r["failure"])


@pytest.mark.parametrize(("args", "message"), [
    (["--formula", "Xx2O"], "Xx is not an element"),
    (["--formula", "Li9Fe9P9O36"], "has 63 atoms; the model makes at most 32 sites"),
    (["--formula", "LiFePO4", "--num-atoms", "8"], "not a multiple"),
    (["--formula", "UO2"], "Z = 92 lie outside this model's atomic-number range"),
    (["--space-group", "225"], "atom diffusion models only"),
])
def test_bad_composition_options_get_a_clear_error(model_dir, tmp_path, capsys, args, message):
    rc = main(["sample", str(model_dir), "-n", "2", "--out", str(tmp_path / "o"), "--quiet", *args])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o" / "samples.csv").exists()


def test_a_cascade_stage_refuses_compositions(crystals):
    from crysgen.objectives.cascade import StageConfig

    torch.manual_seed(0)
    cfg = UNetConfig(sample_size=32, block_out_channels=(8, 16), attention=(False, True), norm_num_groups=4,
                     layers_per_block=1)
    base = DiffusionModel.create(cfg, DiffusionConfig(), CrysTensScaling.fit(crystals.with_max_sites(52)),
                                 stage=StageConfig(role="base"))
    with pytest.raises(CrysgenError, match="stage of a cascade"):
        base.compositions_from_formula("NaCl", 2)


def test_formula_draws_site_counts_from_the_training_histogram(crystals):
    model = _model(crystals, LAYOUT)
    assert model.scaling.num_sites_counts == {4: 1, 5: 1, 8: 1}
    comps = model.compositions_from_formula("NaCl", 20, seed=0)
    # multiples of 2 seen in training: 4 (LiFePO) and 8 (NaCl); never 2, 6, 10, ... 32
    assert set((comps.atomic_numbers > 0).sum(1).tolist()) == {4, 8}
