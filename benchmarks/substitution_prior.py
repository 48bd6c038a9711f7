"""The substitution prior alone, by probability floor -> substitution_prior_mp_20.json.

`crysgen sample --composition-prior TRAIN --substitute` keeps each substituted composition exactly,
so a sample's compositional validity is its composition's. This scores the compositions alone (no
model, seconds on a CPU): N training compositions drawn (seeded), each substituted
(:func:`crysgen.data.substitution.substitute`, the bundled atom model's elements, never to a
training composition) at each ``--thresholds`` floor on p(new | old), by each draw of ``--draws``
(``probability``: p(new | old); ``mass-balanced``: tilted to no mean change of formula mass); per
floor and draw the share changed, the share that took common oxidation states, SMACT validity
(CDVAE's definition, SMACT 2.2.1 tables) of all rows and of the changed ones, beside the drawn
compositions' own, and the changed rows' formula-mass change (mean of ln(after / before), share
made heavier).

Usage: python benchmarks/substitution_prior.py --train TRAIN.npz [-n 2000] [--thresholds 1e-3,1e-2,3e-2,1e-1]
    [--draws probability,mass-balanced]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.data.substitution import DRAWS, substitute
from crysgen.evaluation.compositional import smact_valid
from crysgen.evaluation.diversity import reduced_formulas
from crysgen.models.atoms import SPEC_FILE
from crysgen.pipelines.generators import DEFAULT_MODEL, resolve_model_dir
from crysgen.representations.atoms import AtomSetSpec
from provenance import ROOT, stamp


def valid(rows: np.ndarray) -> np.ndarray:
    """SMACT validity (bool per row) of int (n, S) atomic numbers."""
    return np.array([smact_valid([int(v) for v in r if v]) for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, help="the training CrystalSet (draws; compositions to avoid)")
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--thresholds", default="1e-3,1e-2,3e-2,1e-1")
    p.add_argument("--draws", default=",".join(DRAWS))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    train = CrystalSet.load(args.train)
    model = resolve_model_dir(DEFAULT_MODEL)
    spec = AtomSetSpec.load(model / SPEC_FILE)
    fits = np.flatnonzero(train.num_sites <= spec.max_atoms)
    z = train.atomic_numbers[np.random.default_rng(args.seed).choice(fits, args.n, replace=False)]
    known = set(reduced_formulas(train))
    rows = []
    for th, draw in itertools.product((float(t) for t in args.thresholds.split(",")), args.draws.split(",")):
        t0 = time.perf_counter()
        res = substitute(z, allowed=set(spec.elements), avoid=known, threshold=th,
                         draw=draw, seed=args.seed)
        seconds = time.perf_counter() - t0
        ok = valid(res.atomic_numbers)
        change = res.log_mass_change[res.changed]
        rows.append({"threshold": th, "draw": draw, "changed": float(res.changed.mean()),
                     "by_common_states": res.by_common_states, "smact_valid": float(ok.mean()),
                     "smact_valid_of_changed": float(ok[res.changed].mean()) if res.changed.any() else None,
                     "mean_log_mass_change_of_changed": float(change.mean()) if len(change) else None,
                     "heavier_of_changed": float((change > 0).mean()) if len(change) else None,
                     "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    out = {"n": args.n, "training_data": f"{args.train} (mp_20: the partial train split, 57 %)",
           "drawn_smact_valid": float(valid(z).mean()), "rows": rows} | stamp("cpu", model=model)
    path = ROOT / "benchmarks" / "results" / "substitution_prior_mp_20.json"
    write_text_atomic(path, json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
