"""Are generated crystals distorted copies of symmetric ones? -> results/symmetrize_rmsd_NAME.json.

The atom model's samples of more than four sites are mostly P1 at the suite's tolerance and move
0.5-0.9 Å when relaxed (relax_by_size_*.json), while its 1-4-site samples are high-symmetry and
barely move. This benchmark takes a `crysgen sample` folder, keeps the structurally valid samples
of ``--min-sites`` to ``--max-sites`` sites, and relaxes each (CHGNet, the suite's engine and
settings, CPU) as generated and after snapping it onto the symmetry spglib finds at each
``--symprec`` (pymatgen's ``SpacegroupAnalyzer(symprec).get_primitive_standard_structure()``:
atoms moved to the ideal positions of that space group, the primitive standard cell). Per
variant: the space groups found (share P1), the suite's RMS displacement of the relaxation
(Å, same atoms, relaxed cell, mean shift removed), and the relaxed energy per atom against the
unsnapped sample's (a snapped crystal that relaxes to a higher energy was pushed off its basin).
A snap that lowers the displacement without raising the relaxed energy means the samples are
symmetric crystals with noise on them.

Usage: python benchmarks/symmetrize_rmsd.py SAMPLE_DIR --name atom_diffusion_msgn [--symprec 0.1,0.3,0.5]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crysgen.crystal_set import write_text_atomic
from crysgen.data.structures import load_inputs
from crysgen.evaluation.stability import RelaxOptions, relax_batch
from crysgen.evaluation.validity import structurally_valid
from provenance import ROOT, stamp


def snapped(structure: Structure, symprec: float) -> tuple[Structure | None, int]:
    """``structure`` on the ideal positions of the space group found at ``symprec`` (Å), and that
    group's number; (None, 0) where spglib finds none."""
    try:
        sga = SpacegroupAnalyzer(structure, symprec=symprec)
        return sga.get_primitive_standard_structure(), int(sga.get_space_group_number())
    except Exception:  # spglib's failures vary; the row says none was found
        return None, 0


def summarise(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """A variant's columns over the rows where both it and the unsnapped sample relaxed."""
    both = [r for r in rows if r[key]["rmsd_A"] is not None and r["as_generated"]["rmsd_A"] is not None]
    if not both:
        return {"n": 0}
    rmsd = np.array([r[key]["rmsd_A"] for r in both])
    de = np.array([r[key]["energy_eV_atom"] - r["as_generated"]["energy_eV_atom"] for r in both])
    groups = [r[key]["space_group"] for r in rows]
    return {"n": len(both), "share_p1": round(float(np.mean([g == 1 for g in groups])), 3),
            "median_space_group": float(np.median(groups)),
            "mean_rmsd_A": round(float(rmsd.mean()), 4), "median_rmsd_A": round(float(np.median(rmsd)), 4),
            "share_rmsd_below_0_15": round(float((rmsd < 0.15).mean()), 3),
            "mean_relaxed_energy_change_eV_atom": round(float(de.mean()), 4),
            "share_relaxed_energy_higher_by_10meV": round(float((de > 0.01).mean()), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("samples", type=Path, help="a `crysgen sample` folder")
    p.add_argument("--name", required=True)
    p.add_argument("--symprec", default="0.1,0.3,0.5", help="comma-separated spglib tolerances (Å)")
    p.add_argument("--min-sites", type=int, default=5)
    p.add_argument("--max-sites", type=int, default=12)
    p.add_argument("-n", type=int, default=48, help="samples at most (the first valid ones in the folder)")
    p.add_argument("--steps", type=int, default=300, help="FIRE steps at most (the GPU evaluations' 300)")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    precs = [float(s) for s in args.symprec.split(",")]
    picked = [c.structure for c in load_inputs(args.samples)
              if c.structure is not None and args.min_sites <= len(c.structure) <= args.max_sites
              and structurally_valid(c.structure)][: args.n]
    if not picked:
        raise SystemExit(f"{args.samples}: no structurally valid sample of "
                         f"{args.min_sites}-{args.max_sites} sites")
    variants: list[tuple[str, list[Structure | None], list[int]]] = [
        ("as_generated", list(picked), [snapped(s, 0.01)[1] for s in picked])]
    for prec in precs:
        snaps = [snapped(s, prec) for s in picked]
        variants.append((f"symprec_{prec:g}", [s for s, _ in snaps], [g for _, g in snaps]))
    todo = [(k, i, s) for k, (_, structs, _) in enumerate(variants)
            for i, s in enumerate(structs) if s is not None]
    relaxed = relax_batch([s for _, _, s in todo], RelaxOptions(steps=args.steps))
    results: dict[tuple[int, int], Any] = {(k, i): r for (k, i, _), r in zip(todo, relaxed, strict=True)}
    rows = []
    for i, s in enumerate(picked):
        row: dict[str, Any] = {"formula": s.composition.reduced_formula, "sites": len(s)}
        for k, (key, structs, groups) in enumerate(variants):
            r = results.get((k, i))
            ok = r is not None and r.rmsd is not None and r.energy_per_atom is not None
            row[key] = {"sites": len(structs[i]) if structs[i] is not None else None,
                        "space_group": groups[i],
                        "rmsd_A": round(float(r.rmsd), 4) if ok else None,
                        "energy_eV_atom": float(r.energy_per_atom) if ok else None,
                        "converged": bool(r.converged) if r is not None else None}
        rows.append(row)
    out = {"samples": str(args.samples), "sites": [args.min_sites, args.max_sites], "n": len(picked),
           "relax_steps": args.steps,
           "note": "as_generated space groups at symprec 0.01 Å; energies are CHGNet's per atom after "
                   "relaxation; energy change = snapped minus as generated, for the same sample",
           "summary": {key: summarise(rows, key) for key, _, _ in variants}, "rows": rows} | stamp("cpu")
    path = ROOT / "benchmarks" / "results" / f"symmetrize_rmsd_{args.name}.json"
    write_text_atomic(path, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1), f"\nwrote {path}")


if __name__ == "__main__":
    main()
