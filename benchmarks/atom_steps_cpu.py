"""Heun steps vs quick quality of the bundled atom model on the CPU -> results/atom_steps_cpu.json.

The same 256 seeds at each number of steps: seconds, structural validity (CDVAE), compositional
validity (SMACT 2.2.1, CDVAE's definition) and the median number of elements. This is what chose
the demo's 10 steps; stability at fewer steps is not measured here.

``--churn`` adds EDM's stochastic churn (S_churn, as `crysgen sample --churn`) as a second axis:
every steps x churn pair is sampled from the same seeds; ``--suffix`` names the result file
(atom_steps_cpu<suffix>.json) so that such a sweep keeps the steps-only file.

Usage: python benchmarks/atom_steps_cpu.py [--n 256] [--steps 20,30,50] [--churn 0,20] [--suffix _churn]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from codec import ROOT, stamp
from crysgen.crystal_set import write_text_atomic
from crysgen.evaluation.compositional import smact_valid
from crysgen.evaluation.validity import structurally_valid
from crysgen.pipelines.atoms import AtomDiffusionModel
from crysgen.pipelines.generators import DEFAULT_MODEL


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--steps", default="20,30,50")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--churn", default="0",
                   help="S_churn values (0: deterministic Heun; the bundled model's own default is 10)")
    p.add_argument("--suffix", default="", help="result file atom_steps_cpu<suffix>.json")
    args = p.parse_args()
    model = AtomDiffusionModel.from_pretrained(DEFAULT_MODEL)
    rows = []
    grid = [(int(s), float(c)) for s in args.steps.split(",") for c in args.churn.split(",")]
    for steps, churn in grid:
        t0 = time.perf_counter()
        res = model.generate(args.n, steps=steps, batch_size=64, seed=args.seed, churn=churn)
        seconds = time.perf_counter() - t0
        structures = [res.crystals.to_structure(i) for i in range(len(res.crystals))]
        rows.append({"steps": steps, "churn": churn, "seconds": round(seconds, 1), "decoded": len(structures),
                     "struct_valid": float(np.sum([structurally_valid(s) for s in structures])) / args.n,
                     "comp_valid": float(np.sum([smact_valid([sp.Z for sp in s.species])
                                                 for s in structures])) / args.n,
                     "median_elements": float(np.median([len(s.composition.elements) for s in structures]))})
        print(rows[-1])
    result = {"model": str(DEFAULT_MODEL.relative_to(ROOT)), "n": args.n, "seed": args.seed,
              "rows": rows} | stamp()
    path = ROOT / "benchmarks" / "results" / f"atom_steps_cpu{args.suffix}.json"
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
