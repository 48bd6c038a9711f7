"""Sampler steps vs quick quality of a model on the CPU -> results/<kind>_steps_cpu<suffix>.json.

The same seeds at every grid point: seconds, structural validity (CDVAE), compositional validity
(SMACT 2.2.1, CDVAE's definition) and the median number of elements. With the bundled atom model
(the default) this is what chose the demo's 10 Heun steps (``atom_steps_cpu.json``); with a
CrysTens diffusion model (``--model src/crysgen/pretrained/crystens_diffusion_mp20``) it compares
its samplers (``--sampler ddim,dpmsolver``: an EDM model's Euler and DPM-Solver++) at a few steps,
for a CPU default that keeps quality. Stability is not measured here.

Grid: ``--steps`` x ``--churn`` (atom models: EDM's stochastic churn, as `crysgen sample --churn`)
x ``--sampler`` (CrysTens models); ``--suffix`` names the result file so that a second sweep
keeps the first one's.

Usage: python benchmarks/steps_cpu.py [--model DIR] [--n 256] [--steps 20,30,50] [--churn 0,20]
    [--sampler ddim,dpmsolver] [--suffix _churn]
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
from crysgen.pipelines.generators import load_generator, resolve_model_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: the bundled atom model)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--steps", default="20,30,50")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--churn", default="0",
                   help="atom models: S_churn values (0: deterministic Heun; bundled model's default: 10)")
    p.add_argument("--sampler", default="ddim", help="CrysTens models: samplers (ddim, dpmsolver)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the model's CPU batch size")
    p.add_argument("--suffix", default="", help="result file <kind>_steps_cpu<suffix>.json")
    args = p.parse_args()
    model_dir = resolve_model_dir(args.model)
    model = load_generator(model_dir)
    atom = model.kind == "atom_diffusion"
    rows = []
    grid = [(int(s), float(c), sampler) for s in args.steps.split(",") for c in args.churn.split(",")
            for sampler in args.sampler.split(",")]
    for steps, churn, sampler in grid:
        options = {"churn": churn} if atom else {"sampler": sampler}
        t0 = time.perf_counter()
        batch = args.batch_size or model.default_batch_size("cpu")
        res = model.generate(args.n, steps=steps, batch_size=batch, seed=args.seed, **options)
        seconds = time.perf_counter() - t0
        structures = [res.crystals.to_structure(i) for i in range(len(res.crystals))]
        rows.append({"steps": steps, **options, "seconds": round(seconds, 1), "decoded": len(structures),
                     "struct_valid": float(np.sum([structurally_valid(s) for s in structures])) / args.n,
                     "comp_valid": float(np.sum([smact_valid([sp.Z for sp in s.species])
                                                 for s in structures])) / args.n,
                     "median_elements": float(np.median([len(s.composition.elements) for s in structures]))})
        print(rows[-1], flush=True)
    where = model_dir.relative_to(ROOT) if model_dir.is_relative_to(ROOT) else model_dir
    result = {"model": str(where), "n": args.n, "seed": args.seed, "rows": rows} | stamp()
    name = "atom" if atom else "crystens"
    path = ROOT / "benchmarks" / "results" / f"{name}_steps_cpu{args.suffix}.json"
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
