"""Reconstruction metrics of the voxel pipeline (Court et al. §3).

How well decoded crystals reproduce the crystals they were encoded from.

Per pair (decoded, true), both with orthogonal cells and the same axis order:

* **lattice error**: mean |L_pred − L_true| over a, b, c (Å; the paper's lattice MAE, 0.06 Å);
* **site EMD**: the earth mover's distance between the two site sets with unit masses, i.e. the
  mean distance of the optimal one-to-one assignment (Hungarian, ``scipy.optimize.
  linear_sum_assignment``) under periodic minimum-image distances in the true cell (Å; paper
  0.09 Å); with unequal counts the min(n, m) best pairs are averaged;
* **|ΔN|**: |number of decoded sites − number of true sites| (paper 0.198);
* **match**: pymatgen ``StructureMatcher`` with the settings of :mod:`crysgen.evaluation.novelty`.

Per voxel: the **occupancy recall** (true occupied voxels predicted occupied, p ≥ 0.5) and the
**species recall** (true occupied voxels given the right Z), pooled over all voxels (paper: 87 %
non-zero recall).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from crysgen.crystal_set import CrystalSet


@dataclass
class ReconstructionMetrics:
    """Means over the decoded pairs (and the decode rate over all inputs).

    Attributes:
        n: crystals reconstructed.
        decoded: how many gave a crystal (watershed found sites and a lattice).
        lattice_mae: Å, mean |ΔL| over a, b, c.
        site_emd: Å, mean Hungarian-matched site distance.
        abs_delta_sites: mean |ΔN|.
        exact_site_count: fraction with ΔN = 0.
        match_rate: fraction of all n inputs whose decoded crystal StructureMatcher-matches the truth.
        occupancy_recall: fraction of true occupied voxels predicted occupied (None when no maps).
        species_recall: fraction of true occupied voxels predicted with the right Z.
    """

    n: int
    decoded: int
    lattice_mae: float
    site_emd: float
    abs_delta_sites: float
    exact_site_count: float
    match_rate: float
    occupancy_recall: float | None = None
    species_recall: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready fields (floats rounded to 4 digits)."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def site_emd(pred_frac: np.ndarray, true_frac: np.ndarray, lengths: np.ndarray) -> float:
    """Mean distance (Å) of the optimal one-to-one assignment of sites.

    Args:
        pred_frac: (n, 3) fractional coordinates of the decoded sites.
        true_frac: (m, 3) fractional coordinates of the true sites.
        lengths: (3,) true orthogonal cell lengths, Å (distances are minimum-image in this cell).
    """
    if len(pred_frac) == 0 or len(true_frac) == 0:
        return float("nan")
    d = pred_frac[:, None, :] - true_frac[None, :, :]
    d -= np.round(d)
    cost = np.linalg.norm(d * np.asarray(lengths), axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def voxel_recall(occupancy: np.ndarray, species: np.ndarray, true_species: np.ndarray) -> tuple[float, float]:
    """(occupancy recall, species recall) over the voxels with a true species.

    Args:
        occupancy: float (N, G, G, G) predicted occupancy probability.
        species: int (N, G, G, G) predicted Z.
        true_species: int (N, G, G, G) true Z (0 = empty).
    """
    occupied = true_species > 0
    total = int(occupied.sum())
    if total == 0:
        return float("nan"), float("nan")
    return (float((occupancy[occupied] >= 0.5).sum() / total),
            float((species[occupied] == true_species[occupied]).sum() / total))


def compare(decoded: CrystalSet, index: np.ndarray, truth: CrystalSet) -> dict[str, np.ndarray]:
    """Per-pair errors of decoded crystals against the crystals they came from.

    Args:
        decoded: the decoded crystals.
        index: int (len(decoded),): the row of ``truth`` each decoded crystal came from.
        truth: the encoded crystals (orthogonal cells).

    Returns:
        ``lattice_error`` (Å, mean over a, b, c), ``site_emd`` (Å), ``delta_sites`` (int) and
        ``match`` (bool), each (len(decoded),).
    """
    from crysgen.evaluation.novelty import _matcher

    matcher = _matcher()
    out: dict[str, list] = {"lattice_error": [], "site_emd": [], "delta_sites": [], "match": []}
    for j, i in enumerate(np.asarray(index, int)):
        lp, lt = decoded.lattice[j, :3], truth.lattice[i, :3]
        n_p, n_t = int(decoded.num_sites[j]), int(truth.num_sites[i])
        out["lattice_error"].append(float(np.abs(lp - lt).mean()))
        out["site_emd"].append(site_emd(decoded.frac_coords[j, :n_p], truth.frac_coords[i, :n_t], lt))
        out["delta_sites"].append(n_p - n_t)
        try:
            out["match"].append(bool(matcher.fit(decoded.to_structure(j), truth.to_structure(i))))
        except Exception:
            out["match"].append(False)
    return {k: np.asarray(v) for k, v in out.items()}


def summarize(pairs: dict[str, np.ndarray], n: int, recall: tuple[float, float] | None = None
              ) -> ReconstructionMetrics:
    """Means of :func:`compare`'s arrays; ``n`` = crystals that were encoded."""
    k = len(pairs["match"])

    def mean(a: np.ndarray) -> float:
        a = a[np.isfinite(a)]
        return float(a.mean()) if len(a) else float("nan")

    return ReconstructionMetrics(
        n=n, decoded=k, lattice_mae=mean(pairs["lattice_error"]), site_emd=mean(pairs["site_emd"]),
        abs_delta_sites=mean(np.abs(pairs["delta_sites"]).astype(float)),
        exact_site_count=float((pairs["delta_sites"] == 0).mean()) if k else float("nan"),
        match_rate=float(pairs["match"].sum() / n) if n else float("nan"),
        occupancy_recall=None if recall is None else recall[0],
        species_recall=None if recall is None else recall[1])
