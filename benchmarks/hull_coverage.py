"""Does a fuller reference hull explain the "implausible" rows? -> benchmarks/results/hull_coverage_NAME.json.

For the rows of an evaluation's ``structures.csv`` whose E_hull is below ``IMPLAUSIBLE_BELOW``,
recomputes E_hull from the row's own relaxed energy (``energy_per_atom``, CHGNet) against two hulls
built by the suite's :class:`~crysgen.evaluation.stability.ReferenceHull` with CHGNet on the CPU:
(a) the suite's references (train + reference, or the evaluation's seeded
``--reference-limit`` subset of it), which must reproduce the row's E_hull (a check of
this script), and (b) the same plus ``--extra`` CrystalSets (e.g. mp_20's val split, which the
suite's hull does not use). Only reference crystals whose elements lie inside one of these rows'
chemical systems are needed (the hull of a system is made of its subsystems' phases), so only
those are computed. Nothing is relaxed but the elemental terminals, as the suite does.

Usage: python benchmarks/hull_coverage.py \
    benchmarks/results/reports/eval_atom_diffusion_churn10_mp_20_structures.csv \
    --train .gpuwork/mp_20_asis_train_partial.npz --reference .gpuwork/mp_20_asis_test.npz \
    --extra .gpuwork/mp_20_asis_val.npz --name atom_diffusion_churn10_mp_20
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from pymatgen.core import Composition, Element

from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.stability import IMPLAUSIBLE_BELOW, ReferenceHull, RelaxOptions
from crysgen.evaluation.suite import reference_subset
from provenance import ROOT, stamp


def inside(cs: CrystalSet, systems: list[frozenset[str]]) -> CrystalSet:
    """The crystals of ``cs`` whose elements all lie in one of ``systems``."""
    keep = []
    for i in range(len(cs)):
        zs = {Element.from_Z(int(z)).symbol for z in cs.atomic_numbers[i, : cs.num_sites[i]]}
        if any(zs <= s for s in systems):
            keep.append(i)
    return cs.subset(np.array(keep, dtype=int))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("structures", type=Path)
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--reference", type=Path, required=True)
    p.add_argument("--extra", type=Path, action="append", required=True, help="more reference CrystalSets")
    p.add_argument("--name", required=True)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--reference-limit", type=int, default=None,
                   help="the evaluation's --reference-limit (benchmarks/eval_model.py: 1000): its "
                        "hull used that seeded subset of --reference")
    p.add_argument("--seed", type=int, default=0, help="the evaluation's seed")
    p.add_argument("--random", type=int, default=0,
                   help="N seeded random rated rows instead of the implausible ones")
    args = p.parse_args()
    with args.structures.open() as fh:
        rated = [r for r in csv.DictReader(fh) if r.get("e_above_hull_eV_atom") not in ("", None)]
    if args.random:  # a seeded sample of every rated row, to check the suite's hull broadly
        pick = np.random.default_rng(0).choice(len(rated), size=min(args.random, len(rated)), replace=False)
        rows = [rated[i] for i in sorted(pick)]
    else:
        rows = [r for r in rated if float(r["e_above_hull_eV_atom"]) < IMPLAUSIBLE_BELOW]
    comps = [Composition(r["formula"]) for r in rows]
    systems = sorted({frozenset(el.symbol for el in c.elements) for c in comps}, key=sorted)
    needed = set().union(*systems) if systems else set()
    reference = reference_subset(CrystalSet.load(args.reference), args.reference_limit,
                                 np.random.default_rng(args.seed))  # the evaluation's own subset
    base = [inside(CrystalSet.load(args.train), systems), inside(reference, systems)]
    extra = [inside(CrystalSet.load(x), systems) for x in args.extra]
    options = RelaxOptions(device="cpu")
    hulls = {k: ReferenceHull.build(sets, needed, options=options, cache_dir=args.cache_dir, progress=True)
             for k, sets in (("suite", base), ("fuller", base + extra))}
    shells = [SimpleNamespace(composition=c) for c in comps]
    energies = [float(r["energy_per_atom"]) for r in rows]
    placed = {k: h.e_above_hull(shells, energies) for k, h in hulls.items()}
    out_rows = []
    for k, r in enumerate(rows):
        suite, fuller = placed["suite"][k][0], placed["fuller"][k][0]
        out_rows.append({"id": r["id"], "formula": r["formula"],
                         "e_hull_in_file": round(float(r["e_above_hull_eV_atom"]), 4),
                         "e_hull_suite_hull": None if suite is None else round(suite, 4),
                         "e_hull_fuller_hull": None if fuller is None else round(fuller, 4)})
    diff = [abs(r["e_hull_suite_hull"] - r["e_hull_in_file"]) for r in out_rows
            if r["e_hull_suite_hull"] is not None]
    fuller = [r["e_hull_fuller_hull"] for r in out_rows if r["e_hull_fuller_hull"] is not None]
    out = {
        "structures": str(args.structures), "train": str(args.train), "reference": str(args.reference),
        "extra": [str(x) for x in args.extra], "reference_limit": args.reference_limit,
        "implausible_below_eV_atom": IMPLAUSIBLE_BELOW,
        "rows": len(rows), "selection": f"{args.random} seeded random rated rows" if args.random
        else f"rows with E_hull < {IMPLAUSIBLE_BELOW}",
        "reference_crystals_used": {"suite": sum(len(c) for c in base), "extra": sum(len(c) for c in extra)},
        "check_max_abs_difference_suite_hull_vs_file_eV_atom": round(max(diff), 4) if diff else None,
        "fuller_hull": {"still_below_implausible": sum(e < IMPLAUSIBLE_BELOW for e in fuller),
                        "now_within_0_1_of_hull_or_below_and_plausible":
                            sum(IMPLAUSIBLE_BELOW <= e <= 0.1 for e in fuller),
                        "now_above_0_1": sum(e > 0.1 for e in fuller), "n": len(fuller)},
        "per_row": out_rows,
    } | stamp()
    suffix = f"_random{args.random}" if args.random else ""
    path = ROOT / "benchmarks" / "results" / f"hull_coverage_{args.name}{suffix}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    shown = {k: v for k, v in out.items() if k not in ("per_row", "libraries", "machine")}
    print(json.dumps(shown, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
