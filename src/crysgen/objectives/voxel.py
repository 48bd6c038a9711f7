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


def channel_weights(inputs: np.ndarray) -> np.ndarray:
    """Weights (C,) of the VAE's MSE channels that make every channel count as much as the density.

    The information a channel carries about a crystal is its variance *across crystals* at a
    voxel (averaged over voxels): the coordinate channels of a set of cells with similar lengths
    are large numbers that barely change from crystal to crystal, so under a plain MSE an error in
    the lattice costs little next to one in the density. Channel c gets var_0 / var_c (the density,
    channel 0, keeps weight 1, so the MSE keeps the authors' scale against the DFC and KL terms).

    Args:
        inputs: (N, C, G, G, G) unrotated network inputs of training crystals (N ≥ 2).

    Returns:
        float64 (C,) weights; a channel that never varies gets weight 1.
    """
    x = np.asarray(inputs, np.float64)
    var = x.var(axis=0).mean(axis=(1, 2, 3))  # (C,)
    safe = np.where(var > 0, var, np.nan)
    w = var[0] / safe
    return np.where(np.isfinite(w) & (w > 0), w, 1.0)


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
             alpha: float = 0.5, beta: float = 3e-4, weights: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MSE + α·DFC + β·KL (the authors' α = 0.5, β = 3e-4).

    Args:
        x: (B, C, G, G, G) inputs (density, electrons/Å³; coordinates, Å).
        recon: (B, C, G, G, G) reconstructions.
        mu: (B, latent) posterior means.
        logvar: (B, latent) posterior log-variances.
        features_x: the frozen UNet's feature maps of ``x``; None leaves DFC out.
        features_recon: the same of ``recon``. DFC is the sum over layers of their mean squared
            difference (weight 1 each).
        alpha: weight of DFC.
        beta: weight of KL.
        weights: (C,) channel weights of the MSE (:func:`channel_weights`); None: the plain mean
            over channels (the authors'). The MSE is the mean over voxels and channels of
            w_c·(x − x̂)².

    Returns:
        The loss and its parts (``mse`` weighted as in the loss, ``mse_density`` and
        ``mse_coordinates`` unweighted, ``dfc``, ``kl``).
    """
    sq = (recon.float() - x.float()).pow(2).mean(dim=(0, 2, 3, 4))  # (C,)
    mse = sq.mean() if weights is None else (sq * weights.to(sq)).mean()
    dfc = torch.zeros((), device=x.device)
    if features_x is not None and features_recon is not None:
        for a, b in zip(features_x, features_recon, strict=True):
            dfc = dfc + F.mse_loss(b.float(), a.float())
    kl = kl_divergence(mu.float(), logvar.float())
    loss = mse + alpha * dfc + beta * kl
    return loss, {"mse": mse.detach(), "mse_density": sq[0].detach(),
                  "mse_coordinates": sq[1:].mean().detach(), "dfc": dfc.detach(), "kl": kl.detach()}
