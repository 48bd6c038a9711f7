from __future__ import annotations

import numpy as np
import pytest
import torch

from crysgen.crystal_set import CrystalSet
from crysgen.objectives.voxel import channel_weights, vae_loss
from crysgen.representations.voxel import network_input
from tests.conftest import load_cif

LENGTHS = (3.6, 4.0, 4.5, 5.1)  # Å, cubic perovskite cells of a fixed batch


def perovskites(lengths: tuple[float, ...] = LENGTHS) -> CrystalSet:
    """SrTiO3's sites in cubic cells of the given lengths (Å)."""
    s = load_cif("SrTiO3")
    out = []
    for a in lengths:
        t = s.copy()
        t.scale_lattice(a ** 3)
        out.append(t)
    return CrystalSet.from_structures(out)


def test_channel_weights_make_each_channel_count_as_much_as_the_density():
    x = network_input(perovskites()).astype(np.float64)
    w = channel_weights(x)
    var = x.var(0).mean((1, 2, 3))
    assert w[0] == 1.0
    assert w[1:] * var[1:] == pytest.approx([var[0]] * 3)
    flat = x.copy()
    flat[:, 1] = 2.0  # a channel that never varies keeps weight 1
    assert channel_weights(flat)[1] == 1.0


def test_vae_loss_weights_channels_and_reports_their_errors():
    x = torch.zeros(2, 4, 4, 4, 4)
    recon = x.clone()
    recon[:, 0] = 1.0  # density off by 1, coordinates exact
    mu, logvar = torch.zeros(2, 8), torch.zeros(2, 8)
    plain, parts = vae_loss(x, recon, mu, logvar, None, None)
    assert plain.item() == pytest.approx(0.25) and parts["mse_density"].item() == pytest.approx(1.0)
    recon[:, 0], recon[:, 2] = 0.0, 1.0  # now one coordinate channel off by 1
    weighted, parts = vae_loss(x, recon, mu, logvar, None, None, weights=torch.tensor([1.0, 8.0, 8.0, 8.0]))
    assert weighted.item() == pytest.approx(2.0) and parts["mse_coordinates"].item() == pytest.approx(1 / 3)
