"""Why real crystals do not cover each other -> benchmarks/results/cov_diagnosis_<dataset>.json.

The sanity run (eval_sanity.py) scores a seeded subset of the test split against the val split;
on perov_5 its COV-R/COV-P came out 60 / 79 % instead of ~100 %. This splits CDVAE's criterion
into its two halves (structure fingerprint distance within the cut-off; composition fingerprint
distance within the cut-off) and recomputes the composition half with the Magpie standardisation
fitted on another, broader set (``--scaler-from``, e.g. mp_20's test split; CDVAE uses fixed
constants from its own code, which crysgen does not ship). Same subsets and seeds as the sanity run.

Usage::

    python benchmarks/cov_diagnosis.py perov_5 --scaler-from benchmarks/.work/mp_20_test.npz --workers 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist

from codec import ROOT, stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.evaluation.coverage import COV_CUTOFFS
from crysgen.evaluation.fingerprints import fit_comp_scaler
from crysgen.evaluation.suite import EvalOptions, reference_fingerprints


def fingerprints(cs: CrystalSet, options: EvalOptions) -> tuple[np.ndarray, np.ndarray]:
    """(structure, composition) fingerprints of the crystals that have both (cached by data hash)."""
    fps = reference_fingerprints(cs, [cs.to_structure(i) for i in range(len(cs))], options, True)
    good = [f for f in fps if f[2] is None]
    return np.array([f[0] for f in good]), np.array([f[1] for f in good])


def seeded_subset(cs: CrystalSet, limit: int) -> CrystalSet:
    """The suite's seeded reference subset (seed 0) of ``limit`` crystals."""
    if limit >= len(cs):
        return cs
    return cs.subset(np.sort(np.random.default_rng(0).choice(len(cs), limit, replace=False)))


def halves(gs: np.ndarray, gc: np.ndarray, rs: np.ndarray, rc: np.ndarray, mean: np.ndarray,
           std: np.ndarray, cut: tuple[float, float]) -> dict[str, float]:
    """Recall/precision of each half of the criterion and of both (CDVAE's), in %."""
    ds = cdist(gs, rs)
    dc = cdist((gc - mean) / std, (rc - mean) / std)
    s_r, c_r = ds.min(axis=0) <= cut[0], dc.min(axis=0) <= cut[1]
    s_p, c_p = ds.min(axis=1) <= cut[0], dc.min(axis=1) <= cut[1]
    pct = lambda x: round(100 * float(np.mean(x)), 2)  # noqa: E731
    return {"recall_structure_only": pct(s_r), "recall_composition_only": pct(c_r),
            "recall_both": pct(s_r & c_r), "precision_structure_only": pct(s_p),
            "precision_composition_only": pct(c_p), "precision_both": pct(s_p & c_p),
            "median_nearest_structure_distance": round(float(np.median(ds.min(axis=1))), 4),
            "median_nearest_composition_distance": round(float(np.median(dc.min(axis=1))), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(COV_CUTOFFS))
    p.add_argument("--work", default="benchmarks/.work")
    p.add_argument("--scaler-from", required=True, help="CrystalSet whose Magpie statistics are used")
    p.add_argument("--reference-limit", type=int, default=2000)
    p.add_argument("--scaler-limit", type=int, default=1000,
                   help="seeded subset of --scaler-from (seed 0: the subset eval_model.py scores against)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache-dir", default="benchmarks/.work/cache")
    args = p.parse_args()
    work = Path(args.work)
    o = EvalOptions(workers=args.workers, cache_dir=args.cache_dir)
    gen = CrystalSet.load(work / f"sanity_{args.dataset}_test_subset.npz")
    ref = seeded_subset(CrystalSet.load(work / f"{args.dataset}_val.npz"), args.reference_limit)
    gs, gc = fingerprints(gen, o)
    rs, rc = fingerprints(ref, o)
    _, broad = fingerprints(seeded_subset(CrystalSet.load(args.scaler_from), args.scaler_limit), o)
    cut = COV_CUTOFFS[args.dataset]
    out = {"dataset": args.dataset, "cutoffs": list(cut), "n_generated": len(gs), "n_reference": len(rs),
           "scaler_from_reference": halves(gs, gc, rs, rc, *fit_comp_scaler(rc), cut),
           "scaler_from_" + Path(args.scaler_from).stem: halves(gs, gc, rs, rc, *fit_comp_scaler(broad), cut),
           "note": "here every fingerprinted test crystal counts (the suite: only the valid ones) "
                   "and precision divides by them (the suite: by all samples), hence the small "
                   "differences from eval_sanity_<dataset>.json"}
    out |= stamp()
    path = ROOT / "benchmarks" / "results" / f"cov_diagnosis_{args.dataset}.json"
    write_text_atomic(path, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
