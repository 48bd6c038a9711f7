"""Structural validity as CDVAE defines it: all pairwise distances >= 0.5 Å, volume >= 0.1 Å³.

Here, in the lowest layer that knows structures, so that both the sampling runner (the
``structurally_valid`` column of samples.csv) and the evaluation (:mod:`crysgen.evaluation.validity`)
use the one definition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure


def pair_distances(structure: Structure) -> np.ndarray:
    """(n (n - 1) / 2,) the periodic minimum distance of every pair of sites, in Å."""
    return structure.distance_matrix[np.triu_indices(len(structure), 1)]


def close_pairs(structure: Structure, cutoff: float = 0.5) -> list[tuple[int, int, float]]:
    """The pairs of sites that fail :func:`structurally_valid`.

    Returns:
        ``(i, j, distance in Å)`` with i < j for every pair closer than ``cutoff`` Å (periodic
        minimum image), in order of i then j; empty for a structure with every pair far enough.
    """
    dm = structure.distance_matrix
    i, j = np.nonzero(np.triu(dm < cutoff, 1))
    return [(int(a), int(b), float(dm[a, b])) for a, b in zip(i, j, strict=True)]


def structurally_valid(structure: Structure, cutoff: float = 0.5, min_volume: float = 0.1, *,
                       distances: np.ndarray | None = None) -> bool:
    """True if every interatomic distance (periodic) is >= ``cutoff`` Å and the volume >= 0.1 Å³.

    ``distances``: the structure's :func:`pair_distances`, when the caller has them already.
    """
    if not np.isfinite(structure.volume) or structure.volume < min_volume:
        return False
    if len(structure) < 2:
        return True
    d = pair_distances(structure) if distances is None else distances
    return bool(d.min() >= cutoff)
