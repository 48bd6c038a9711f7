"""Relaxation RMSD and stability per cell size from an evaluation's rows -> results/relax_by_size_<name>.json.

Reads the ``structures.csv`` of a `crysgen evaluate --stability` report (or its committed copy
under ``benchmarks/results/reports/``) and bins the relaxed samples by number of sites
(:data:`csp.SIZE_BINS`, the bins of the CSP breakdown), so an existing GPU evaluation gets the
breakdown without relaxing anything again: per bin the samples relaxed, the mean and median
RMS displacement of the relaxation (the suite's ``rmsd`` column, Å), the share under 0.15 Å (the
issue's target for the mean), the share stable as the suite counts it (converged relaxation,
−0.5 ≤ E_hull ≤ 0.1 eV/atom) among the relaxed samples of the bin, and how the RMSD varies with
the cell's longest edge at that size (:func:`by_cell_length`), and the share of P1 samples (with
``--reference``, beside the P1 share of real crystals of the same sizes).

Usage: python benchmarks/relax_by_size.py \
    benchmarks/results/reports/eval_atom_diffusion_churn10_mp_20_structures.csv [--name NAME]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from crysgen.evaluation.stability import IMPLAUSIBLE_BELOW, STABLE_THRESHOLDS, stable_mask
from csp import SIZE_BINS
from csp_by_size import write_breakdown

STABLE_AT = STABLE_THRESHOLDS[0]
"""eV/atom: the suite's headline stability threshold."""


def by_num_sites(rows: list[dict[str, str]]) -> dict[str, dict]:
    """RMSD and stable share of the relaxed rows (those with an ``rmsd``) in each size bin."""
    relaxed = [r for r in rows if r.get("rmsd") not in (None, "")]
    out = {}
    for lo, hi in SIZE_BINS:
        sel = [r for r in relaxed if lo <= int(r["num_sites"]) <= hi]
        if not sel:
            continue
        rmsd = np.array([float(r["rmsd"]) for r in sel])
        e = np.array([float(r["e_above_hull_eV_atom"]) if r.get("e_above_hull_eV_atom") else np.nan
                      for r in sel])
        converged = np.array([r.get("relax_converged") == "True" for r in sel])
        stable = stable_mask(e, converged, STABLE_AT)
        out[f"{lo}-{hi}"] = {"relaxed": len(sel), "mean_rmsd_A": round(float(rmsd.mean()), 4),
                             "median_rmsd_A": round(float(np.median(rmsd)), 4),
                             "share_rmsd_below_0_15": round(float((rmsd < 0.15).mean()), 3),
                             "share_stable": round(float(stable.mean()), 3),
                             "share_p1": share_p1([r.get("space_group") for r in sel]),
                             } | by_cell_length(sel, rmsd)
    return out


def share_p1(groups: list[str | int | None]) -> float | None:
    """The share of space group 1 among the rows that have one (the suite's spglib at 0.1 Å)."""
    known = [int(g) for g in groups if g not in (None, "")]
    return round(float(np.mean([g == 1 for g in known])), 3) if known else None


def reference_p1(path: Path) -> dict[str, dict]:
    """Per size bin, the share of a CrystalSet's crystals that spglib finds P1 at 0.1 Å (as the
    suite finds its samples' groups), for comparison with the samples' ``share_p1``."""
    from crysgen.crystal_set import CrystalSet
    from crysgen.data.guards import space_group_number

    ref = CrystalSet.load(path)
    out = {}
    for lo, hi in SIZE_BINS:
        idx = [i for i in range(len(ref)) if lo <= int(ref.num_sites[i]) <= hi]
        if idx:
            out[f"{lo}-{hi}"] = {"crystals": len(idx),
                                 "share_p1": share_p1([space_group_number(ref.to_structure(i)) for i in idx])}
    return out


def by_cell_length(rows: list[dict[str, str]], rmsd: np.ndarray) -> dict[str, Any]:
    """Within one size bin: does the RMSD grow with the cell's longest edge (max of a, b, c)?

    Spearman's rank correlation (and its p-value) of RMSD with the longest edge, and the median
    RMSD in the bin's thirds by that edge (short, middle, long; with their median edge in Å).
    Fourier features of fractional coordinates resolve a fixed fraction of the cell, so a
    resolution limit of the network would show as a positive correlation at fixed size.
    """
    if len(rows) < 9 or not all(r.get(k) for r in rows for k in "abc"):
        return {}
    edge = np.array([max(float(r["a"]), float(r["b"]), float(r["c"])) for r in rows])
    rho = spearmanr(edge, rmsd)
    thirds = np.array_split(np.argsort(edge, kind="stable"), 3)
    return {"spearman_rmsd_vs_longest_edge": round(float(rho.statistic), 3),
            "spearman_p": float(f"{rho.pvalue:.2g}"),
            "by_longest_edge_third": {
                name: {"median_edge_A": round(float(np.median(edge[i])), 2),
                       "median_rmsd_A": round(float(np.median(rmsd[i])), 4)}
                for name, i in zip(("short", "middle", "long"), thirds, strict=True)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("structures_csv", help="a report's structures.csv (with the stability columns)")
    p.add_argument("--name", default=None,
                   help="result name (default: the file's, without eval_ and _structures)")
    p.add_argument("--reference", type=Path, default=None,
                   help="a CrystalSet (e.g. the test split) whose P1 share per size bin to add")
    args = p.parse_args()
    path = Path(args.structures_csv)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not any(r.get("rmsd") for r in rows):
        raise SystemExit(f"{path}: no relaxed rows (evaluate with --stability)")
    name = args.name or path.stem.removesuffix("_structures").removeprefix("eval_")
    write_breakdown("relax", name, path, {
        "samples": len(rows),
        "stable": f"converged, {IMPLAUSIBLE_BELOW} <= E_hull <= {STABLE_AT} eV/atom, among the relaxed "
                  "samples of the bin",
        "by_num_sites": by_num_sites(rows)}
        | ({"reference": str(args.reference), "reference_by_num_sites": reference_p1(args.reference)}
           if args.reference else {}))


if __name__ == "__main__":
    main()
