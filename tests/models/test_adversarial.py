from __future__ import annotations

import pytest
import torch
from torch import nn

from crysgen import CrysgenError
from crysgen.models.adversarial import (
    AdversarialNetConfig,
    ChannelLayerNorm,
    FlatDepthConv3d,
    build_critic,
    build_generator,
)


@pytest.mark.parametrize("kind", ["gan", "wgan"])
def test_paper_networks_have_the_keras_shapes(kind):
    torch.manual_seed(0)
    cfg = AdversarialNetConfig(kind=kind)  # full width: the authors' networks
    gen, critic = build_generator(cfg).eval(), build_critic(cfg).eval()
    with torch.no_grad():
        x = gen(torch.randn(2, 128))
        scores = critic(x)
    assert x.shape == (2, 1, 4, 64, 64)  # the Keras (64, 64, 4, 1) volume, channels first
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # sigmoid output
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_the_two_kinds_differ_as_in_the_seed_code():
    gan_g = build_generator(AdversarialNetConfig(kind="gan", width=0.25))
    wgan_g = build_generator(AdversarialNetConfig(kind="wgan", width=0.25))
    wgan_c = build_critic(AdversarialNetConfig(kind="wgan", width=0.25))
    assert any(isinstance(m, nn.BatchNorm3d) for m in gan_g.modules())
    assert not any(isinstance(m, nn.BatchNorm3d | nn.BatchNorm1d) for m in wgan_c.modules())
    # every weight layer of the WGAN-GP is spectrally normalised
    layers = [m for m in [*wgan_g.modules(), *wgan_c.modules()]
              if isinstance(m, nn.Linear | nn.Conv3d | nn.ConvTranspose3d)]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not hasattr(gan_g.up1[0][0], "parametrizations")


def test_flat_depth_conv_is_the_same_function_as_conv3d():
    torch.manual_seed(0)
    flat = FlatDepthConv3d(3, 5, (1, 7, 7), stride=(1, 5, 5))
    ref = nn.Conv3d(3, 5, (1, 7, 7), stride=(1, 5, 5))
    ref.load_state_dict(flat.state_dict())
    x = torch.randn(2, 3, 4, 40, 40)
    torch.testing.assert_close(flat(x), ref(x))


def test_channel_layer_norm_is_layer_norm_over_channels_with_double_backward():
    """Same function as nn.LayerNorm on the channels-last tensor, its gradients and the gradient
    penalty's second derivative too (fails with the mean, variance or affine taken over other
    axes, an unbiased variance, or the eps dropped)."""
    torch.manual_seed(0)
    norm = ChannelLayerNorm(5)
    with torch.no_grad():
        norm.norm.weight.uniform_(0.5, 1.5)
        norm.norm.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(3, 5, 2, 4, 6) * torch.logspace(-2, 1, 6)).requires_grad_()  # small-variance rows too
    ref = nn.functional.layer_norm(x.movedim(1, -1), (5,), norm.norm.weight, norm.norm.bias,
                                   1e-3).movedim(-1, 1)
    out = norm(x)
    assert torch.allclose(out, ref, atol=1e-5)
    w = torch.randn_like(out)
    g, = torch.autograd.grad((out * w).sum(), x, create_graph=True)
    g_ref, = torch.autograd.grad((ref * w).sum(), x, create_graph=True)
    assert torch.allclose(g, g_ref, atol=1e-4)
    gg, = torch.autograd.grad(g.square().sum(), x)  # the gradient penalty differentiates the gradient
    gg_ref, = torch.autograd.grad(g_ref.square().sum(), x)
    assert torch.allclose(gg, gg_ref, rtol=1e-3, atol=1e-3)
    assert set(dict(norm.named_parameters())) == {"norm.weight", "norm.bias"}  # checkpoints still load


def test_bad_net_config_is_refused():
    with pytest.raises(CrysgenError, match="unknown adversarial kind"):
        AdversarialNetConfig(kind="vae")
    with pytest.raises(CrysgenError, match="width"):
        AdversarialNetConfig(width=0)
