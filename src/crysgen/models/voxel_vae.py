"""Court et al.'s conditional VAE on voxel grids (seed_code.md §6.4), in PyTorch.

Encoder: the one-hot condition (C classes, the property's decile) tiled over the grid and
concatenated with the (B, 4, G, G, G) input; four conv(3) → BatchNorm → LeakyReLU(0.3) →
max-pool(2) blocks with 16/32/64/128 filters, a 4-filter conv → LeakyReLU, flatten, Dense 256
(ReLU), then μ and log σ² (256 each). Decoder: concat(z, condition) → Dense → (4, G/8, G/8,
G/8), conv(3) → BN → LeakyReLU blocks with 128/64/32/16 filters and 2× upsampling after the
first three, and a final 4-filter conv → BN → ReLU to (B, 4, G, G, G). ``width`` scales the
filter counts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

LATENT = 256
LEAKY = 0.3  # Keras' LeakyReLU default slope


class VoxelVAE(nn.Module):
    """Conditional VAE.

    Args:
        grid: voxels per axis (divisible by 16).
        num_conditions: classes of the condition (10 deciles).
        latent: latent size (256).
        width: multiplier of the filter counts.
    """

    def __init__(self, *, grid: int = 32, num_conditions: int = 10, latent: int = LATENT,
                 width: float = 1.0) -> None:
        super().__init__()
        self.config: dict[str, Any] = {"grid": grid, "num_conditions": num_conditions, "latent": latent,
                                       "width": width}
        f = [max(1, round(c * width)) for c in (16, 32, 64, 128)]
        layers: list[nn.Module] = []
        c_in = 4 + num_conditions
        for c in f:
            layers += [nn.Conv3d(c_in, c, 3, padding=1), nn.BatchNorm3d(c), nn.LeakyReLU(LEAKY),
                       nn.MaxPool3d(2)]
            c_in = c
        layers += [nn.Conv3d(c_in, 4, 3, padding=1), nn.LeakyReLU(LEAKY), nn.Flatten()]
        self.encoder = nn.Sequential(*layers)
        flat = 4 * (grid // 16) ** 3
        self.hidden = nn.Sequential(nn.Linear(flat, latent), nn.ReLU())
        self.mu = nn.Linear(latent, latent)
        self.logvar = nn.Linear(latent, latent)
        self.seed = grid // 8
        self.project = nn.Linear(latent + num_conditions, 4 * self.seed ** 3)
        dec: list[nn.Module] = []
        c_in = 4
        for k, c in enumerate(reversed(f)):
            dec += [nn.Conv3d(c_in, c, 3, padding=1), nn.BatchNorm3d(c), nn.LeakyReLU(LEAKY)]
            if k < 3:
                dec.append(nn.Upsample(scale_factor=2, mode="nearest"))
            c_in = c
        dec += [nn.Conv3d(c_in, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU()]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4, G, G, G), one-hot (B, C) -> μ, log σ² (B, latent)."""
        g = x.shape[-1]
        tiled = condition[:, :, None, None, None].expand(-1, -1, g, g, g).to(x.dtype)
        h = self.hidden(self.encoder(torch.cat([x, tiled], 1)))
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """(B, latent), one-hot (B, C) -> (B, 4, G, G, G), non-negative."""
        s = self.seed
        h = self.project(torch.cat([z, condition.to(z.dtype)], 1)).view(-1, 4, s, s, s)
        return self.decoder(h)

    def forward(self, x: torch.Tensor, condition: torch.Tensor,
                generator: torch.Generator | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, μ, log σ² (reparameterised sample in between)."""
        mu, logvar = self.encode(x, condition)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode(z, condition), mu, logvar
