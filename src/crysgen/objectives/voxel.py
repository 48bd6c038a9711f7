"""Losses of the voxel pipeline: UNet segmentation and the conditional DFC-VAE (seed_code.md §6.3–6.4)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from crysgen.models.unet3d import NUM_SPECIES


def class_weights(species: np.ndarray, num_species: int = NUM_SPECIES) -> np.ndarray:
    """Inverse-frequency class weights (num_species,) over species maps, background 0.

    weight_z = (total voxels) / (voxels of class z) for the classes present, 0 for absent classes
    and for the background (the authors' recipe, which their code computed but never applied).
    """
    counts = np.bincount(np.asarray(species).ravel(), minlength=num_species)[:num_species].astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    w[0] = 0.0
    return w


def segmentation_loss(species_logits: torch.Tensor, occupancy_logits: torch.Tensor, species: torch.Tensor,
                      weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted cross-entropy over species + BCE over occupancy, both averaged over voxels.

    Args:
        species_logits: (B, C, G, G, G).
        occupancy_logits: (B, G, G, G).
        species: int (B, G, G, G), targets in 0..C-1.
        weights: (C,) class weights (background 0).

    Returns:
        The summed loss and its two parts.
    """
    target = species.long()
    ce = F.cross_entropy(species_logits.float(), target, weight=weights.float(), reduction="none")
    ce = ce.mean()  # Keras' weighted CE: per-voxel weight, averaged over all voxels
    bce = F.binary_cross_entropy_with_logits(occupancy_logits.float(), (target > 0).float())
    return ce + bce, {"species_ce": ce.detach(), "occupancy_bce": bce.detach()}


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-½ Σ(1 + log σ² − μ² − σ²) over the latent, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             features_x: list[torch.Tensor] | None, features_recon: list[torch.Tensor] | None, *,
             alpha: float = 0.5, beta: float = 3e-4) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MSE + α·DFC + β·KL (the authors' α = 0.5, β = 3e-4).

    DFC is the sum over the frozen UNet's feature layers of the mean squared difference between
    the features of the input and of the reconstruction (weight 1 each); None leaves it out.
    """
    mse = F.mse_loss(recon.float(), x.float())
    dfc = torch.zeros((), device=x.device)
    if features_x is not None and features_recon is not None:
        for a, b in zip(features_x, features_recon, strict=True):
            dfc = dfc + F.mse_loss(b.float(), a.float())
    kl = kl_divergence(mu.float(), logvar.float())
    loss = mse + alpha * dfc + beta * kl
    return loss, {"mse": mse.detach(), "dfc": dfc.detach(), "kl": kl.detach()}
