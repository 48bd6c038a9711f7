"""The EDM objective of the CrysTens UNet, its samplers and per-region loss weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from crysgen import CrysgenError
from crysgen.crystal_set import CrystalSet
from crysgen.models.unet2d import UNetConfig, build_unet
from crysgen.objectives.diffusion import DiffusionConfig, diffusion_loss, to_model_range
from crysgen.objectives.diffusion_edm import edm_denoise, edm_loss
from crysgen.pipelines.diffusion import DiffusionModel, make_scheduler, sample_tensors
from crysgen.representations.crystens import CrysTensScaling, encode
from crysgen.representations.crystens.layout import REGIONS, CrysTensLayout, region_map
from crysgen.training.config import DiffusionTrainConfig
from tests.conftest import load_cif

LAYOUT = CrysTensLayout(sites=8, element_code=True)
NAMES = ("NaCl", "SrTiO3", "ZnO_wurtzite", "triclinic_LiFePO")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _unet(side: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(UNetConfig(sample_size=side, block_out_channels=(8, 16), attention=(False, True),
                                 norm_num_groups=4, layers_per_block=1))


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    cs = CrystalSet.from_structures([load_cif(n) for n in NAMES], max_sites=8)
    return to_model_range(torch.from_numpy(encode(cs, CrysTensScaling.fit(cs, layout=LAYOUT))))


def test_edm_preconditioning_returns_the_input_as_sigma_goes_to_zero(batch):
    """c_skip -> 1 and c_out -> 0: D(x; σ) -> x whatever the network says."""
    sched = DiffusionConfig(objective="edm").scheduler()
    unet = _unet(LAYOUT.size)
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.5)  # a network far from zero output
    with torch.no_grad():
        far = edm_denoise(unet, sched, batch, torch.full((4,), 1.0))
        near = edm_denoise(unet, sched, batch, torch.full((4,), 1e-6))
    assert (far - batch).abs().max() > 0.1
    assert (near - batch).abs().max() < 1e-4


def test_a_tiny_edm_model_loss_falls_on_a_fixed_batch(batch):
    sched = DiffusionConfig(objective="edm").scheduler()
    unet = _unet(LAYOUT.size)
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)

    def loss_at(seed: int) -> float:
        with torch.no_grad():
            return float(np.mean([edm_loss(unet, sched, batch, p_mean=-1.2, p_std=1.2,
                                           generator=torch.Generator().manual_seed(s))
                                  for s in range(seed, seed + 4)]))

    before = loss_at(100)
    for step in range(60):
        opt.zero_grad()
        gen = torch.Generator().manual_seed(step)
        edm_loss(unet, sched, batch, p_mean=-1.2, p_std=1.2, generator=gen).backward()
        opt.step()
    after = loss_at(100)  # the same σ and noise as before training
    assert after < 0.6 * before


def test_uniform_region_weights_are_the_plain_mean_and_zero_weights_ignore_a_region(batch):
    sched = DiffusionConfig().scheduler()
    unet = _unet(LAYOUT.size)
    plain = diffusion_loss(unet, sched, batch, generator=torch.Generator().manual_seed(0))
    ones = DiffusionConfig(region_weights=dict.fromkeys(REGIONS, 2.0)).weight_map(LAYOUT)
    same = diffusion_loss(unet, sched, batch, generator=torch.Generator().manual_seed(0),
                          weight=torch.from_numpy(ones))
    torch.testing.assert_close(same, plain)
    only_pairs = torch.from_numpy(DiffusionConfig(region_weights={"strips": 0, "codes": 0, "padding": 0})
                                  .weight_map(LAYOUT))
    regions = torch.from_numpy(region_map(LAYOUT))
    x = batch.clone().requires_grad_(True)  # gradients reach only the pair block's entries of the loss
    out = torch.zeros_like(x, requires_grad=True)
    from crysgen.objectives.diffusion import weighted_mean

    weighted_mean((x - out) ** 2, only_pairs).backward()
    assert (x.grad[..., regions != REGIONS.index("pairs")] == 0).all()
    assert (x.grad[..., regions == REGIONS.index("pairs")] != 0).any()
    with pytest.raises(CrysgenError, match=r"unknown diffusion\.region_weights"):
        DiffusionConfig(region_weights={"header": 1})
    with pytest.raises(CrysgenError, match="not all 0"):
        DiffusionConfig(region_weights=dict.fromkeys(REGIONS, 0))
    with pytest.raises(CrysgenError, match="objective ddpm and no region_weights"):
        DiffusionTrainConfig.from_dict({"stage": {"role": "base"}, "unet": {"sample_size": 32},
                                        "diffusion": {"objective": "edm"}})


def test_region_map_follows_the_layout():
    m = region_map(LAYOUT)
    o = LAYOUT.site_offset
    assert m.shape == (LAYOUT.size, LAYOUT.size)
    assert (m[o:, :11] == REGIONS.index("strips")).all() and (m[:11, o:] == REGIONS.index("strips")).all()
    assert (m[o:, 12:22] == REGIONS.index("codes")).all() and (m[o:, o:] == REGIONS.index("pairs")).all()
    assert (m[:o, :o] == REGIONS.index("padding")).all() and (m[o:, 11] == REGIONS.index("padding")).all()
    assert REGIONS.index("codes") not in region_map(CrysTensLayout())


def _edm_model(tmp_path, **diffusion) -> DiffusionModel:
    cs = CrystalSet.from_structures([load_cif(n) for n in NAMES], max_sites=8)
    torch.manual_seed(0)
    cfg = UNetConfig(sample_size=LAYOUT.size, block_out_channels=(8, 16), attention=(False, True),
                     norm_num_groups=4, layers_per_block=1)
    model = DiffusionModel.create(cfg, DiffusionConfig(objective="edm", **diffusion),
                                  CrysTensScaling.fit(cs, layout=LAYOUT), {"name": "t"})
    return DiffusionModel.from_pretrained(model.save_pretrained(tmp_path / "edm", half=False))


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver"])
def test_edm_sampling_is_deterministic_for_a_fixed_seed(tmp_path, sampler):
    model = _edm_model(tmp_path)
    a = sample_tensors(model, 2, steps=4, sampler=sampler, seed=5)
    np.testing.assert_array_equal(a, sample_tensors(model, 2, steps=4, sampler=sampler, seed=5))
    assert np.abs(a - sample_tensors(model, 2, steps=4, sampler=sampler, seed=6)).max() > 1e-3


def test_the_model_directory_records_the_objective_and_crysgen_sample_uses_its_sampler(tmp_path):
    from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

    from crysgen.cli import main

    model = _edm_model(tmp_path, sigma_max=40.0)
    meta = json.loads((tmp_path / "edm" / "config.json").read_text())
    saved = meta["config"]["diffusion"]
    assert saved["objective"] == "edm" and saved["sigma_max"] == 40.0
    assert model.diffusion.objective == "edm" and model.diffusion.sigma_max == 40.0
    assert isinstance(make_scheduler(model.diffusion, "ddim"), EDMEulerScheduler)
    assert isinstance(make_scheduler(model.diffusion, "dpmsolver"), EDMDPMSolverMultistepScheduler)
    with pytest.raises(CrysgenError, match="not ddpm"):
        make_scheduler(model.diffusion, "ddpm")
    assert main(["sample", str(tmp_path / "edm"), "-n", "2", "--steps", "3", "--out", str(tmp_path / "s"),
                 "--save-tensors", "--quiet"]) == 0
    saved = np.load(tmp_path / "s" / "chunks" / "chunk_00000.npz")["tensors"]
    np.testing.assert_array_equal(saved, sample_tensors(model, 2, steps=3, sampler="ddim", seed=[0, 0],
                                                        batch_size=16))
    ddpm_sched = DiffusionConfig().scheduler().__class__
    assert not isinstance(make_scheduler(DiffusionConfig(), "ddim"), EDMEulerScheduler | ddpm_sched)


def test_training_an_edm_model_with_region_weights_through_the_cli(tmp_path):
    from crysgen.cli import main

    data = CrystalSet.from_structures([load_cif(n) for n in NAMES], max_sites=8).save(tmp_path / "d.npz")
    tiny = {"unet": {"block_out_channels": [8, 16], "attention": [False, True], "norm_num_groups": 4,
                     "layers_per_block": 1},
            "diffusion": {"objective": "edm", "region_weights": {"pairs": 0.5, "padding": 0.1}},
            "crystens": {"sites": 8, "element_code": True},
            "optim": {"batch_size": 2, "max_steps": 2, "checkpoint_every": 2, "log_every": 1,
                      "warmup_steps": 1}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    assert main(["train", "diffusion", "--data", str(data), "--out", str(tmp_path / "run"), "--config",
                 str(tmp_path / "tiny.yaml"), "--quiet"]) == 0
    model = DiffusionModel.from_pretrained(tmp_path / "run" / "model")
    assert model.diffusion.objective == "edm"
    assert model.diffusion.region_weights == {"padding": 0.1, "pairs": 0.5}
