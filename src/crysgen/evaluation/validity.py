"""Structural validity as CDVAE defines it: all pairwise distances >= 0.5 Å, volume >= 0.1 Å³."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure


def structurally_valid(structure: Structure, cutoff: float = 0.5, min_volume: float = 0.1) -> bool:
    """True if every interatomic distance (periodic) is >= ``cutoff`` Å and the volume >= 0.1 Å³."""
    if not np.isfinite(structure.volume) or structure.volume < min_volume:
        return False
    if len(structure) < 2:
        return True
    d = structure.distance_matrix
    return bool(d[np.triu_indices(len(structure), 1)].min() >= cutoff)
