"""Why a scoring's "implausible" rows are far below the hull -> benchmarks/results/implausible_rows_NAME.json.

``crysgen evaluate`` counts a sample whose E_hull is below ``IMPLAUSIBLE_BELOW`` (-0.5 eV/atom) as
not stable, taking it for a hole of the potential or a hull that lacks the system's phases. This
script tells the two apart for one evaluation's ``structures.csv``: for every such row, how many
reference compounds (crystals of two or more elements in the hull's reference sets, train +
reference) lie inside its chemical system, whether its own chemical system is among them, and the
CGCNN formation energy the suite predicted for it (an estimate independent of the potential).
Where the system has no reference compound, the hull is made of the elements alone and E_hull is
the potential's formation energy: agreement with CGCNN's then says the potential is not in a hole.
Nothing is relaxed or recomputed: the figures come from the evaluation's own columns.

Usage: python benchmarks/implausible_rows.py \
    benchmarks/results/reports/eval_atom_diffusion_churn10_mp_20_structures.csv \
    --train .gpuwork/mp_20_asis_train_partial.npz --reference .gpuwork/mp_20_asis_test.npz \
    --name atom_diffusion_churn10_mp_20
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
from pymatgen.core import Composition

from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.stability import IMPLAUSIBLE_BELOW
from provenance import ROOT, stamp

E_HULL = "e_above_hull_eV_atom"
E_FORM = "formation_energy_per_atom_eV_per_atom"


def chemical_systems(paths: list[Path]) -> set[frozenset[str]]:
    """The chemical systems (sets of element symbols) of every crystal in these CrystalSets."""
    out: set[frozenset[str]] = set()
    for path in paths:
        cs = CrystalSet.load(path)
        for i in range(len(cs)):
            out.add(frozenset(cs.to_structure(i).composition.chemical_system.split("-")))
    return out


def number(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("structures", type=Path, help="an evaluation's structures.csv")
    p.add_argument("--train", type=Path, required=True, help="the training CrystalSet the hull used")
    p.add_argument("--reference", type=Path, required=True, help="the reference CrystalSet the hull used")
    p.add_argument("--name", required=True)
    args = p.parse_args()
    systems = chemical_systems([args.train, args.reference])
    compounds = [s for s in systems if len(s) > 1]
    with args.structures.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get(E_HULL) not in ("", None)]
    per_row, plausible_without_compounds = [], 0
    for r in rows:
        e = number(r[E_HULL])
        elements = frozenset(Composition(r["formula"]).chemical_system.split("-"))
        inside = sum(1 for s in compounds if s <= elements)
        if e >= IMPLAUSIBLE_BELOW:
            plausible_without_compounds += inside == 0
            continue
        per_row.append({"id": r["id"], "formula": r["formula"], "e_above_hull_eV_atom": round(e, 4),
                        "reference_compounds_in_system": inside, "system_in_reference": elements in systems,
                        "cgcnn_formation_energy_eV_atom": round(number(r.get(E_FORM, "")), 4)})
    e = np.array([r["e_above_hull_eV_atom"] for r in per_row])
    ef = np.array([r["cgcnn_formation_energy_eV_atom"] for r in per_row])
    bare = np.array([r["reference_compounds_in_system"] == 0 for r in per_row], bool)
    gap = np.abs(e[bare] - ef[bare]) if bare.any() else np.array([])
    out = {
        "structures": str(args.structures), "train": str(args.train), "reference": str(args.reference),
        "implausible_below_eV_atom": IMPLAUSIBLE_BELOW, "rows_with_e_hull": len(rows),
        "implausible": len(per_row),
        "implausible_with_no_reference_compound": int(bare.sum()),
        "implausible_with_at_most_one_reference_compound":
            sum(r["reference_compounds_in_system"] <= 1 for r in per_row),
        "implausible_whose_system_is_in_reference": sum(r["system_in_reference"] for r in per_row),
        "plausible_with_no_reference_compound": plausible_without_compounds,
        "no_compound_rows_abs_e_hull_minus_cgcnn_formation_eV_atom": {
            "median": round(float(np.median(gap)), 4) if len(gap) else None,
            "max": round(float(gap.max()), 4) if len(gap) else None},
        "implausible_median_e_hull_eV_atom": round(float(np.median(e)), 4) if len(e) else None,
        "definition": "reference compound: a crystal of >= 2 elements in train or reference whose "
                      "elements all lie in the row's chemical system; with none, the hull there is "
                      "the elements alone and E_hull equals the potential's formation energy",
        "rows": per_row,
    } | stamp()
    path = ROOT / "benchmarks" / "results" / f"implausible_rows_{args.name}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("rows", "libraries", "machine")}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
