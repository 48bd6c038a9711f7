"""Court et al.'s 3-D UNet segmenter (seed_code.md §6.3), in PyTorch.

Input (B, 4, G, G, G): density + coordinate channels. Three down blocks (32→64, 64→128,
128→256 filters, each followed by 2× max-pooling), a 512-filter bottom, three up blocks with skip
connections, and two 1×1×1 heads: species logits over Z = 0..94 (0 = background; softmax in the
loss) and an occupancy logit (sigmoid in the loss). Every 3×3×3 convolution is followed by ReLU
then BatchNorm, in the authors' order. ``width`` scales every filter count (tests use small
widths). The activations after the second convolution of each down block and of the bottom are
the deep features that the VAE's feature-consistent loss compares (:meth:`UNet3D.features`).
"""

from __future__ import annotations

import torch
from torch import nn

NUM_SPECIES = 95
"""Species classes: Z = 0 (background) .. 94."""


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.BatchNorm3d(c_out))


class DoubleConv(nn.Module):
    """Two conv → ReLU → BatchNorm layers."""

    def __init__(self, c_in: int, c_mid: int, c_out: int) -> None:
        super().__init__()
        self.first, self.second = _block(c_in, c_mid), _block(c_mid, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, c_in, D, D, D) -> (B, c_out, D, D, D)."""
        return self.second(self.first(x))

    def forward_with_feature(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and the second ReLU's activation (before its BatchNorm)."""
        conv, relu, norm = self.second
        r = relu(conv(self.first(x)))
        return norm(r), r


class UNet3D(nn.Module):
    """The segmenter.

    Args:
        in_channels: input channels (4).
        width: multiplier of the authors' filter counts (1.0 = 32/64/128/256/512).
        num_species: species classes (95).
    """

    def __init__(self, *, in_channels: int = 4, width: float = 1.0, num_species: int = NUM_SPECIES) -> None:
        super().__init__()
        f = [max(1, round(c * width)) for c in (32, 64, 128, 256, 512)]
        self.config = {"in_channels": in_channels, "width": width, "num_species": num_species}
        self.down1 = DoubleConv(in_channels, f[0], f[1])
        self.down2 = DoubleConv(f[1], f[1], f[2])
        self.down3 = DoubleConv(f[2], f[2], f[3])
        self.bottom = DoubleConv(f[3], f[4], f[4])
        self.up3 = DoubleConv(f[4] + f[3], f[4], f[3])
        self.up2 = DoubleConv(f[3] + f[2], f[3], f[2])
        self.up1 = DoubleConv(f[2] + f[1], f[2], f[2])
        self.species_head = nn.Conv3d(f[2], num_species, 1)
        self.occupancy_head = nn.Conv3d(f[2], 1, 1)
        self.pool = nn.MaxPool3d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        d1 = self.down1(x)
        d2 = self.down2(self.pool(d1))
        d3 = self.down3(self.pool(d2))
        return [d1, d2, d3, self.bottom(self.pool(d3))]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Deep features for the VAE's loss.

        The second ReLU of down 1, 2, 3 and of the bottom (the authors' ``re_lu_2/4/6/8``),
        (B, 64/128/256/512·width, G³ … (G/8)³).
        """
        out = []
        h = x
        for k, block in enumerate((self.down1, self.down2, self.down3, self.bottom)):
            h, r = block.forward_with_feature(h if k == 0 else self.pool(h))
            out.append(r)
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4, G, G, G) -> species logits (B, 95, G, G, G), occupancy logits (B, G, G, G)."""
        d1, d2, d3, b = self._encode(x)
        u = self.up3(torch.cat([self.upsample(b), d3], 1))
        u = self.up2(torch.cat([self.upsample(u), d2], 1))
        u = self.up1(torch.cat([self.upsample(u), d1], 1))
        return self.species_head(u), self.occupancy_head(u)[:, 0]
