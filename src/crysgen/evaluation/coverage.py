"""COV-R and COV-P as CDVAE's ``compute_cov`` computes them, and its per-dataset cut-offs."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

COV_CUTOFFS = {"mp_20": (0.4, 10.0), "perov_5": (0.2, 4.0), "carbon_24": (0.2, 4.0)}
"""(structure, composition) fingerprint distance cut-offs of CDVAE's ``COV_Cutoffs``."""
DEFAULT_DATASET = "mp_20"
"""Whose cut-offs a reference set of no known dataset gets (with a printed note)."""


@dataclass
class Coverage:
    """COV-R (share of reference crystals recalled) and COV-P (share of all generated ones that are close)."""

    recall: float
    precision: float
    n_generated: int
    n_fingerprinted: int
    n_reference: int
    struct_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """float (G,) each fingerprinted generated crystal's structure-fingerprint distance to its
    nearest reference crystal (COV-P counts it where this and ``comp_distance`` are within the cut-offs)."""
    comp_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """float (G,) the same by standardised composition fingerprint (nearest reference by composition,
    which need not be the structure's nearest)."""


def coverage(gen_struct: np.ndarray, gen_comp: np.ndarray, ref_struct: np.ndarray, ref_comp: np.ndarray,
             *, n_generated: int, struct_cutoff: float, comp_cutoff: float) -> Coverage:
    """COV-R / COV-P from fingerprints of generated crystals and of the reference.

    As in CDVAE's ``compute_cov``, the generated side is every crystal whose fingerprints could be
    computed (valid or not; the suite's ``cov_over="valid"`` passes only the valid ones), recall
    takes the nearest generated crystal by structure and by composition separately, and
    precision divides by all generated crystals, those without fingerprints included.

    Args:
        gen_struct: (G, Fs) structure fingerprints of the generated crystals used.
        gen_comp: (G, Fc) standardised composition fingerprints of the same crystals.
        ref_struct: (R, Fs) reference structure fingerprints.
        ref_comp: (R, Fc) standardised reference composition fingerprints.
        n_generated: all generated crystals (the precision denominator).
        struct_cutoff: structure distance cut-off.
        comp_cutoff: composition distance cut-off.
    """
    from scipy.spatial.distance import cdist

    if len(gen_struct) == 0:
        return Coverage(0.0, 0.0, n_generated, 0, len(ref_struct))
    ds, dc = cdist(gen_struct, ref_struct), cdist(gen_comp, ref_comp)
    recall = np.mean((ds.min(axis=0) <= struct_cutoff) & (dc.min(axis=0) <= comp_cutoff))
    near_s, near_c = ds.min(axis=1), dc.min(axis=1)
    precision = np.sum((near_s <= struct_cutoff) & (near_c <= comp_cutoff)) / n_generated
    return Coverage(float(recall), float(precision), n_generated, len(gen_struct), len(ref_struct),
                    near_s, near_c)


SITE_BINS = (1, 5, 9, 13, 17, 21, 25)
"""Lower edges (inclusive) of the site-count bins of :func:`precision_by_sites`: 1-4, 5-8, ...,
21-24, then 25 and more."""


def site_bin_labels() -> list[str]:
    """The labels of :data:`SITE_BINS`' bins ("1-4", ..., "21-24", "25+")."""
    edges = list(SITE_BINS)
    return [f"{lo}-{hi - 1}" for lo, hi in pairwise(edges)] + [f"{edges[-1]}+"]


def site_bins(sites: np.ndarray) -> np.ndarray:
    """Int (N,) the bin index (into :func:`site_bin_labels`) of each site count (N,) ≥ 1."""
    return np.searchsorted(np.asarray(SITE_BINS), np.asarray(sites), side="right") - 1


def precision_by_sites(sites: np.ndarray, precise: np.ndarray) -> list[dict[str, object]]:
    """COV-P within each site-count bin: where a model's precise samples are lost by cell size.

    Args:
        sites: int (G,) site counts of the fingerprinted generated crystals.
        precise: bool (G,) whether COV-P counts each (both distances within the cut-offs).

    Returns:
        One dict per non-empty bin, in size order: ``sites`` (its label), ``n`` (its crystals) and
        ``precision`` (the share of them COV-P counts).
    """
    sites, precise = np.asarray(sites), np.asarray(precise, dtype=bool)
    if sites.shape != precise.shape:
        raise ValueError(f"sites {sites.shape} and precise {precise.shape} differ in shape")
    k = site_bins(sites)
    return [{"sites": label, "n": int((k == i).sum()), "precision": float(precise[k == i].mean())}
            for i, label in enumerate(site_bin_labels()) if (k == i).any()]
