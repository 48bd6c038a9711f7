"""Figures behind the README's description of the atom model's samples.

Writes benchmarks/results/atom_diffusion_mp_20_stats.json.

Reads the per-structure tables of its two evaluations (GPU: relaxation and hull; CPU: CDVAE-exact
validity and element counts, both kept under benchmarks/results/reports/) and the test split:
the distribution of the number of elements against the test set's, the relaxation RMSD
quantiles, the E_hull quantiles and the share at or below the hull.

Usage: python benchmarks/atom_sample_stats.py benchmarks/.work/mp_20_asis_test.npz
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter

import numpy as np

from codec import ROOT, stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic

REPORTS = ROOT / "benchmarks" / "results" / "reports"


def column(path, name: str) -> np.ndarray:
    with path.open() as fh:
        return np.array([float(r[name]) for r in csv.DictReader(fh) if r[name] not in ("", "nan")])


def shares(values: np.ndarray) -> dict[str, float]:
    counts = Counter(int(v) for v in values)
    return {str(k): round(counts[k] / len(values), 4) for k in sorted(counts)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("test", help="the test CrystalSet (.npz)")
    args = p.parse_args()
    gpu = REPORTS / "eval_atom_diffusion_mp_20_structures.csv"
    cpu = REPORTS / "eval_atom_diffusion_mp_20_cpu_structures.csv"
    test = CrystalSet.load(args.test)
    test_elements = np.array([len(set(z[z > 0].tolist())) for z in test.atomic_numbers])
    gen_elements = column(cpu, "num_elements")
    rmsd, e_hull = column(gpu, "rmsd"), column(gpu, "e_above_hull_eV_atom")
    q = [0.1, 0.25, 0.5, 0.75, 0.9]

    def quantiles(x: np.ndarray) -> dict[str, float]:
        return dict(zip(map(str, q), np.quantile(x, q).round(3).tolist(), strict=True))

    def mid(x: np.ndarray) -> float:
        return round(float(np.mean((x >= 4) & (x <= 6))), 4)

    result = {
        "elements_share_generated": shares(gen_elements), "elements_share_test": shares(test_elements),
        "share_4_to_6_elements": {"generated": mid(gen_elements), "test": mid(test_elements)},
        "relax_rmsd_angstrom": {"n": len(rmsd), "quantiles": quantiles(rmsd),
                                "share_below_0.15": round(float(np.mean(rmsd < 0.15)), 4)},
        "e_above_hull_eV_atom": {"n": len(e_hull), "quantiles": quantiles(e_hull),
                                 "share_at_or_below_0_of_all_1000":
                                     round(float(np.sum(e_hull <= 0)) / 1000, 4)},
        "sources": [str(gpu.relative_to(ROOT)), str(cpu.relative_to(ROOT)), args.test],
    } | stamp()
    path = ROOT / "benchmarks" / "results" / "atom_diffusion_mp_20_stats.json"
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
