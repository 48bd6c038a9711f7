from __future__ import annotations

import numpy as np
import pytest
import torch

from crysgen import CrysgenError
from crysgen.models.unet2d import UNetConfig, build_unet
from crysgen.objectives.cascade import StageConfig, downsample, stage_loss, upsample
from crysgen.objectives.diffusion import DiffusionConfig, to_model_range
from crysgen.training.config import DiffusionTrainConfig

SMALL = {"block_out_channels": (8, 16), "attention": (False, True), "norm_num_groups": 4,
         "layers_per_block": 1}


def test_down_then_up_keeps_block_means():
    x = torch.rand(2, 4, 64, 64)
    low = downsample(x, 32)
    assert low.shape == (2, 4, 32, 32)
    torch.testing.assert_close(low[0, 1, 3, 5], x[0, 1, 6:8, 10:12].mean())
    up = upsample(low, 64)
    assert up.shape == x.shape
    torch.testing.assert_close(downsample(up, 32), low)  # nearest up-sampling is block-constant


@pytest.mark.parametrize("role", ["base", "sr"])
def test_stage_loss_falls_on_a_fixed_batch(role):
    torch.manual_seed(0)
    stage = StageConfig(role=role, low_res=16)
    unet = build_unet(UNetConfig(**SMALL, sample_size=16 if role == "base" else 32,
                                 cond_channels=4 if role == "sr" else 0))
    sched = DiffusionConfig().scheduler()
    x0 = to_model_range(torch.rand(4, 4, 32, 32))

    def fixed() -> float:
        return stage_loss(unet, sched, x0, stage, generator=torch.Generator().manual_seed(1)).item()

    first = fixed()
    opt = torch.optim.Adam(unet.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss = stage_loss(unet, sched, x0, stage, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(fixed()) and fixed() < first


def test_sr_stage_sees_the_conditioning_noise_level():
    # the SR network embeds t_aug: the same input with another class label gives another output
    torch.manual_seed(0)
    unet = build_unet(UNetConfig(**SMALL, sample_size=16, cond_channels=4)).eval()
    x = torch.randn(1, 8, 16, 16)
    t = torch.tensor([10])
    with torch.no_grad():
        a = unet(x, t, class_labels=torch.tensor([0])).sample
        b = unet(x, t, class_labels=torch.tensor([150])).sample
    assert not torch.allclose(a, b)


def test_stage_settings_are_checked():
    with pytest.raises(CrysgenError, match="role"):
        StageConfig(role="middle")  # type: ignore[arg-type]
    with pytest.raises(CrysgenError, match="aug_max"):
        StageConfig(aug_max=1.5)
    with pytest.raises(CrysgenError, match="sample_size 32"):
        DiffusionTrainConfig.from_dict({"stage": {"role": "base"}})
    with pytest.raises(CrysgenError, match="cond_channels 4"):
        DiffusionTrainConfig.from_dict({"stage": {"role": "sr"}})
    cfg = DiffusionTrainConfig.from_dict({"stage": {"role": "sr"}, "unet": {"cond_channels": 4}})
    assert DiffusionTrainConfig.from_dict(cfg.to_dict()) == cfg
