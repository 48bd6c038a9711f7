"""The CrysTens denoiser takes tensors of any side (padded inside to a multiple of 2**(levels-1))."""

from __future__ import annotations

import pickle

import pytest
import torch

from crysgen.models.unet2d import UNetConfig, build_unet

TINY = UNetConfig(block_out_channels=(8, 16, 16), attention=(False, False, True), norm_num_groups=4,
                  layers_per_block=1)


@pytest.mark.parametrize("side", [42, 54, 64])
def test_any_side_runs_forward_with_the_same_parameters(side):
    torch.manual_seed(0)
    cfg = UNetConfig(**{**TINY.to_dict(), "sample_size": side,
                        "block_out_channels": TINY.block_out_channels, "attention": TINY.attention})
    unet = build_unet(cfg)
    x = torch.rand(2, 4, side, side)
    out = unet(x, torch.tensor([3, 7])).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    # the same weights as a 64-side network: a layout change needs no other architecture
    assert unet.state_dict().keys() == build_unet(TINY).state_dict().keys()


def test_an_odd_side_is_zero_padded_at_the_bottom_right_and_cropped():
    """42 is no multiple of 4 (3 levels): the network runs diffusers' UNet on the 44x44 zero-padded
    input and returns the top-left 42x42."""
    torch.manual_seed(0)
    unet = build_unet(UNetConfig(**{**TINY.to_dict(), "sample_size": 42,
                                    "block_out_channels": TINY.block_out_channels,
                                    "attention": TINY.attention})).eval()
    x = torch.rand(1, 4, 42, 42)
    with torch.no_grad():
        out = unet(x, 5).sample
        plain = super(type(unet), unet).forward(torch.nn.functional.pad(x, (0, 2, 0, 2)), 5).sample
    assert out.shape == x.shape
    torch.testing.assert_close(out, plain[..., :42, :42])


def test_the_network_pickles():
    unet = build_unet(TINY)
    assert type(pickle.loads(pickle.dumps(unet))) is type(unet)
