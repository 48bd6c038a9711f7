"""How far a relaxation moved the samples it brought into coverage -> results/relax_gain_<name>.json.

For a sample folder relaxed by ``crysgen relax`` (its ``relax.csv``: each crystal's RMSD between
the generated and the relaxed positions, Å) and the evaluations of the folder before and after
(two result files whose reports hold ``cov_precise`` per sample, as :mod:`paired_compare` reads
them), the samples are split by COV-P before → after (covered both times, gained, lost, neither)
and each group's RMSD quantiles, site counts and generated fingerprint distances are recorded. A
gained group that moved by hundredths of an Å was lost in the sampler's last steps; one that moved
by tenths had its arrangement wrong, an error of intermediate noise levels.

    python benchmarks/relax_gain.py benchmarks/.work/relaxed/fixedcell_samples_c24s6 \\
        eval_atom_diffusion_c24sites6_10k_carbon_24_cpu \\
        eval_atom_diffusion_c24sites6_fixedcell_10k_carbon_24_cpu --name c24sites6_fixedcell
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from paired_compare import report_of
from provenance import ROOT, write_result

QUANTILES = (0.25, 0.5, 0.75, 0.9)


def groups(relax: pd.DataFrame, before: pd.DataFrame, after: pd.DataFrame) -> dict[str, dict]:
    """RMSD (Å) quantiles, median sites and generated COV distance per COV-P transition group."""
    rows = before[["id", "num_sites", "cov_struct_distance", "cov_precise"]].merge(
        after[["id", "cov_precise"]], on="id", suffixes=("", "_after")).merge(relax[["id", "rmsd"]], on="id")
    was, now = rows["cov_precise"].astype(bool), rows["cov_precise_after"].astype(bool)
    out = {}
    for name, sel in (("covered_both", was & now), ("gained", ~was & now), ("lost", was & ~now),
                      ("neither", ~was & ~now)):
        part = rows[sel]
        rmsd = part["rmsd"].dropna().to_numpy(float)
        out[name] = {"n": int(sel.sum()),
                     "rmsd_A": {f"q{int(100 * q)}": float(np.quantile(rmsd, q)) if len(rmsd) else None
                                for q in QUANTILES},
                     "median_sites": float(part["num_sites"].median()) if len(part) else None,
                     "median_generated_struct_distance": (float(part["cov_struct_distance"].median())
                                                          if len(part) else None)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("relaxed", help="the `crysgen relax` output folder (its relax.csv)")
    p.add_argument("before", help="result file name of the generated samples' evaluation")
    p.add_argument("after", help="result file name of the relaxed folder's evaluation")
    p.add_argument("--name", required=True, help="output: relax_gain_<name>.json")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".work"))
    args = p.parse_args()
    relax = pd.read_csv(Path(args.relaxed) / "relax.csv")
    work = Path(args.work)
    before, after = (pd.read_csv(report_of(n, work, keep=False)) for n in (args.before, args.after))
    result = groups(relax, before, after)
    for name, g in result.items():
        print(f"{name}: {g['n']} samples, RMSD median {g['rmsd_A']['q50']} Å")
    write_result(f"relax_gain_{args.name}", {
        "relaxed": args.relaxed, "before": args.before, "after": args.after,
        "definition": "RMSD: relax.csv's, between generated and relaxed positions (Å); groups by "
                      "cov_precise before -> after",
        "groups": result})


if __name__ == "__main__":
    main()
