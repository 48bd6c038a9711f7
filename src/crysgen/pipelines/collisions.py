"""Sites a sampler put on top of one another, found in the sampler's own tensors.

A diffusion sampler sometimes lets two sites (mostly of one element) fall into the same place:
the crystal then fails CDVAE's structural validity (a pair closer than 0.5 Å). These functions
find such sites in a batch of :class:`~crysgen.objectives.atom_edm.Parts` without decoding it, so
that the sampler can send them elsewhere (`crysgen sample --repair`,
:meth:`crysgen.pipelines.atoms.AtomDiffusionModel.sample_sets`).
"""

from __future__ import annotations

import itertools

import torch

from crysgen.objectives.atom_edm import Constants, Parts, current_cell, wrap_centered

__all__ = ["IMAGES", "colliding_sites", "periodic_distances"]

IMAGES = torch.tensor(list(itertools.product((-1.0, 0.0, 1.0), repeat=3)))
"""(27, 3) the lattice translations tried for every pair's minimum image."""


def periodic_distances(frac: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Float (B, S, S) Å: every pair's shortest distance over the 27 nearest images.

    Exact for a reduced (e.g. Niggli) cell, as the sampled ones are; for a very skewed cell it can
    only overestimate a distance.

    Args:
        frac: float (B, S, 3) fractional coordinates.
        cell: float (B, 3, 3) Å, cell vectors as rows.
    """
    delta = wrap_centered(frac[:, None, :, :] - frac[:, :, None, :])  # [b, i, j] = f_j - f_i
    shifted = delta[:, :, :, None, :] + IMAGES.to(frac)  # (B, S, S, 27, 3)
    cart = torch.einsum("bijkx,bxy->bijky", shifted, cell.to(frac))
    return cart.norm(dim=-1).amin(-1)


def colliding_sites(x: Parts, mask: torch.Tensor, consts: Constants, *, cutoff: float = 0.5,
                    real: torch.Tensor | None = None) -> torch.Tensor:
    """Bool (B, S): the sites closer than ``cutoff`` Å to an earlier real site of their crystal.

    Of every pair that fails structural validity, the later site is marked (so moving every marked
    site leaves one site of each cluster where it was).

    Args:
        x: sampled parts (coordinates in [0, 1), lattice features as the sampler holds them).
        mask: bool (B, S) the sites the lattice features count (the cell's scale depends on it).
        consts: the model's data statistics.
        cutoff: Å, CDVAE's 0.5.
        real: bool (B, S) the sites that are atoms (e.g. not a de novo model's empty sites);
            None: ``mask``.
    """
    real = mask if real is None else real
    cell = current_cell(x.lattice, mask, consts)
    d = periodic_distances(x.frac.float(), cell)
    s = mask.shape[1]
    later = torch.ones(s, s, dtype=torch.bool, device=mask.device).triu(1)  # i < j
    close = (d < cutoff) & later & real[:, :, None] & real[:, None, :]
    return close.any(1)
