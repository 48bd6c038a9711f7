"""What the suite's ``mean_relax_rmsd`` measures -> benchmarks/results/relax_rmsd_NAME.json.

Relaxes a few reference crystals and a few generated ones with the suite's own engine
(:func:`crysgen.evaluation.stability.relax_batch`, CHGNet, on the CPU) and puts, beside the
suite's RMS displacement (:func:`~crysgen.evaluation.stability.displacement_rmsd`: same atoms,
fractional differences wrapped to the nearest image, in the relaxed cell, mean translation
removed), the RMSD as MatterGen's evaluation defines it (its ``compute_rmsd_angstrom``: pymatgen's
``StructureMatcher(ltol=0.5, stol=0.5, angle_tol=10, primitive_cell=True, scale=False,
attempt_supercell=True).get_rms_dist``, which is normalised by (V/atom)^(1/3), multiplied back to
Å with the two lattices' averaged parameters; MatterGen first symmetrises the initial structure,
which is not done here). Real crystals should barely move; the two definitions should agree.

Usage: python benchmarks/relax_rmsd.py --reference .gpuwork/mp_20_asis_test.npz --samples DIR \
    --name atom_diffusion_mp_20 [-n 8]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from crysgen.crystal_set import CrystalSet
from crysgen.data.structures import load_inputs
from crysgen.evaluation.stability import RelaxOptions, relax_batch
from provenance import ROOT, stamp

MATCHER = StructureMatcher(ltol=0.5, stol=0.5, angle_tol=10, primitive_cell=True, scale=False,
                           attempt_supercell=True)
"""MatterGen's RMSD matcher settings (its ``RMSDStructureMatcher``, with stol 0.5)."""


def matcher_rmsd(initial: Structure, relaxed: Structure) -> float | None:
    """RMSD (Å) by StructureMatcher's normalised rms, scaled back with the averaged lattice."""
    found = MATCHER.get_rms_dist(initial, relaxed)
    params = (np.array(initial.lattice.parameters) + np.array(relaxed.lattice.parameters)) / 2
    per_length = (len(initial) / Lattice.from_parameters(*params).volume) ** (1 / 3)
    return None if found is None else float(found[0] / per_length)


def rows(structures: list[Structure], steps: int) -> list[dict]:
    out = []
    for s, r in zip(structures, relax_batch(structures, RelaxOptions(steps=steps, time_limit_s=900)),
                    strict=True):
        other = matcher_rmsd(s, r.structure) if r.structure is not None else None
        out.append({"formula": s.composition.reduced_formula, "sites": len(s),
                    "suite_rmsd_A": None if r.rmsd is None else round(r.rmsd, 4),
                    "matcher_rmsd_A": None if other is None else round(other, 4),
                    "relax_steps": r.steps, "converged": r.converged, "reason": r.reason})
    return out


def summary(part: list[dict]) -> dict:
    ours = np.array([r["suite_rmsd_A"] for r in part if r["suite_rmsd_A"] is not None])
    both = [(r["suite_rmsd_A"], r["matcher_rmsd_A"]) for r in part
            if r["suite_rmsd_A"] is not None and r["matcher_rmsd_A"] is not None]
    return {"n": len(part), "suite_rmsd_mean_A": round(float(ours.mean()), 4) if len(ours) else None,
            "suite_rmsd_median_A": round(float(np.median(ours)), 4) if len(ours) else None,
            "max_abs_difference_of_definitions_A":
                round(max(abs(a - b) for a, b in both), 4) if both else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="a CrystalSet of real crystals")
    p.add_argument("--samples", type=Path, required=True, help="a `crysgen sample` folder")
    p.add_argument("--name", required=True)
    p.add_argument("-n", type=int, default=8, help="crystals of each kind")
    p.add_argument("--steps", type=int, default=300, help="FIRE steps at most (the GPU evaluations' 300)")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    ref = CrystalSet.load(args.reference)
    stride = max(len(ref) // args.n, 1)
    real = [ref.to_structure(i) for i in range(0, stride * args.n, stride)]
    generated = [c.structure for c in load_inputs(args.samples) if c.structure is not None][: args.n]
    real_rows, generated_rows = rows(real, args.steps), rows(generated, args.steps)
    out = {"reference": str(args.reference), "samples": str(args.samples), "relax_steps": args.steps,
           "reference_crystals": {"summary": summary(real_rows), "rows": real_rows},
           "generated_crystals": {"summary": summary(generated_rows), "rows": generated_rows},
           } | stamp()
    path = ROOT / "benchmarks" / "results" / f"relax_rmsd_{args.name}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k]["summary"] for k in ("reference_crystals", "generated_crystals")}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
