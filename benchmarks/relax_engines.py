"""Do the two relaxation engines agree, and how fast is each? -> benchmarks/results/relax_engines.json

Relaxes the first N structurally usable samples of a `crysgen sample` folder (or CIFs, or a
CrystalSet .npz) twice with CHGNet, exactly as ``crysgen evaluate --stability`` does
(``suite.relax_all``): once with ``--relax-engine ase`` (ASE's FIRE and FrechetCellFilter per
structure, in ``--workers`` processes) and once with ``--relax-engine torch`` (the same algorithms
as batched tensors on the device, one process). Per structure it compares the final energies
(eV/atom), the number of FIRE steps, convergence and the reasons; the wall seconds of each engine
are measured on the same machine, one after the other (nothing else running).

Usage (GPU machine)::

    python benchmarks/relax_engines.py SAMPLES -n 1000 --device cuda --workers 14 --batch-ase 64 \\
        --batch-torch 512

CPU smoke test::

    python benchmarks/relax_engines.py SAMPLES -n 8 --device cpu --workers 2 --steps 30 --suffix _cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time

import numpy as np

from crysgen.crystal_set import write_text_atomic
from crysgen.data.structures import load_inputs
from crysgen.evaluation.chgnet_batch import FORWARD_BATCH
from crysgen.evaluation.relaxation import TORCH_PASS
from crysgen.evaluation.stability import RelaxOptions
from crysgen.evaluation.suite import relax_all
from provenance import ROOT, stamp

RESULTS = ROOT / "benchmarks" / "results"


def compare(ase: list, torch_: list) -> dict:
    """Agreement figures between two lists of ``Relaxation`` of the same structures."""
    both = [(a, t) for a, t in zip(ase, torch_, strict=True)
            if a.energy_per_atom is not None and t.energy_per_atom is not None]
    de = np.array([abs(a.energy_per_atom - t.energy_per_atom) for a, t in both])
    same_steps = np.array([a.steps == t.steps for a, t in both])
    conv = [(a.converged, t.converged) for a, t in zip(ase, torch_, strict=True)]
    return {
        "n": len(ase), "n_both_with_energy": len(both),
        "energy_abs_diff_eV_per_atom": {
            "median": float(np.median(de)) if len(de) else None,
            "p95": float(np.quantile(de, 0.95)) if len(de) else None,
            "max": float(de.max()) if len(de) else None,
            "share_below_1meV": float((de < 1e-3).mean()) if len(de) else None,
            "share_below_10meV": float((de < 1e-2).mean()) if len(de) else None},
        "same_step_count": float(same_steps.mean()) if len(same_steps) else None,
        "converged": {"ase": int(sum(c[0] for c in conv)), "torch": int(sum(c[1] for c in conv)),
                      "both": int(sum(c[0] and c[1] for c in conv)),
                      "disagree": int(sum(c[0] != c[1] for c in conv))},
        "reasons_differ": int(sum((a.reason or "").split(":")[0] != (t.reason or "").split(":")[0]
                                  for a, t in zip(ase, torch_, strict=True))),
        "mean_rmsd_A": {name: float(np.mean(r)) if r else None for name, r in (
            ("ase", [a.rmsd for a, _ in both if a.rmsd is not None]),
            ("torch", [t.rmsd for _, t in both if t.rmsd is not None]))},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", help="a `crysgen sample` folder, CIFs or a CrystalSet .npz")
    p.add_argument("-n", type=int, default=1000, help="the first N parsable samples (1000)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=8, help="processes of the ase engine (8)")
    p.add_argument("--batch-ase", type=int, default=FORWARD_BATCH,
                   help="structures per CHGNet pass, ase engine (%(default)s)")
    p.add_argument("--batch-torch", type=int, default=TORCH_PASS,
                   help="structures per CHGNet pass, torch engine (%(default)s)")
    p.add_argument("--steps", type=int, default=RelaxOptions.steps, help="FIRE steps at most (%(default)s)")
    p.add_argument("--suffix", default="", help="appended to the result file's name (e.g. _cpu)")
    args = p.parse_args()
    inputs = [c for c in load_inputs(args.samples) if c.structure is not None][: args.n]
    if not inputs:
        sys.exit(f"no parsable structures in {args.samples}")
    structures = [c.structure for c in inputs]
    base = RelaxOptions(steps=args.steps, device=args.device)
    runs: dict[str, dict] = {}
    results = {}
    for engine, batch, workers in (("torch", args.batch_torch, 1), ("ase", args.batch_ase, args.workers)):
        o = dataclasses.replace(base, engine=engine, batch_size=batch)
        t0 = time.perf_counter()
        results[engine] = relax_all(structures, o, workers, progress=False)
        wall = time.perf_counter() - t0
        steps = sum(r.steps for r in results[engine])
        runs[engine] = {"wall_seconds": round(wall, 1), "batch_size": batch, "processes": workers,
                        "fire_steps_total": steps, "structure_steps_per_s": round(steps / wall, 1)}
        print(engine, runs[engine], flush=True)
    out = {"samples": args.samples, "n": len(structures), "relax_steps": args.steps,
           "fmax": base.fmax, "runs": runs,
           "speedup_torch_over_ase": round(runs["ase"]["wall_seconds"] / runs["torch"]["wall_seconds"], 2),
           "agreement": compare(results["ase"], results["torch"]),
           "command": shlex.join(["python", *sys.argv])} | stamp(args.device)
    path = RESULTS / f"relax_engines{args.suffix}.json"
    write_text_atomic(path, json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps(out["agreement"], indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
