"""Sampling speed and quick quality of an atom diffusion model.

Writes benchmarks/results/atom_diffusion_<dataset>.json.

Three `crysgen sample` runs from one model directory: 1,000 de novo samples (kept for
`crysgen evaluate`), 10,000 de novo samples timed end to end (sampling, decoding, CIFs and
samples.csv), and one sample per crystal of a target set (crystal structure prediction; scored
separately by benchmarks/csp.py). Quick figures per run: decoded, structurally valid (CDVAE:
distances >= 0.5 Å, volume >= 0.1 Å³), median number of elements, seconds, crystals/s.

Usage (GPU machine)::

    python benchmarks/atom_diffusion.py RUN/model --device cuda --steps 50 \
        --out benchmarks/.work/atomsamples \
        --csp benchmarks/.work/mp_20_asis_test.npz
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from codec import ROOT, stamp
from crysgen.crystal_set import write_text_atomic
from crysgen.data.structures import load_inputs
from crysgen.evaluation.validity import structurally_valid
from crysgen.pipelines.generators import resolve_model_dir
from crysgen.pipelines.sampling import SampleOptions, sample_to_dir


def quick(folder: Path, n: int) -> dict:
    """Decoded, structurally valid and the median number of elements of a sample folder."""
    structures = [c.structure for c in load_inputs(folder) if c.structure is not None]
    valid = [structurally_valid(s) for s in structures]
    elements = [len(s.composition.elements) for s in structures]
    return {"n": n, "decoded": len(structures), "struct_valid": float(np.sum(valid)) / n,
            "median_elements": float(np.median(elements)) if elements else float("nan")}


def run(model: str, out: Path, options: SampleOptions, device: str, batch: int, workers: int) -> dict:
    t0 = time.perf_counter()
    summary = sample_to_dir(model, out, options, device=device, batch_size=batch, progress=False,
                            workers=workers)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "crystals_per_s": round(options.n / seconds, 1),
            "failures": summary.failure_reasons, "options": {"n": options.n, "steps": options.steps,
                                                             "chunk_size": options.chunk_size,
                                                             "precision": options.precision},
            "seconds_generating": summary.seconds_generating, "seconds_writing": summary.seconds_writing,
            "workers": workers}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--dataset", default="mp_20")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=2048, help="crystals per forward pass")
    p.add_argument("--out", required=True, help="work folder for the sample folders")
    p.add_argument("--csp", default=None, help="target CrystalSet: one sample per crystal")
    p.add_argument("--speed-n", type=int, default=10000)
    p.add_argument("--workers", type=int, default=8, help="processes writing CIFs and checking crystals")
    p.add_argument("--churn", type=float, default=None, help="EDM S_churn of every run (default: model)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="the network's arithmetic in every run (crysgen sample --precision)")
    p.add_argument("--suffix", default="", help="appended to the result file's name (e.g. _fp32)")
    args = p.parse_args()
    out = Path(args.out)
    result: dict = {"model": args.model, "dataset": args.dataset, "steps": args.steps, "churn": args.churn,
                    "precision": args.precision}
    common = {"steps": args.steps, "churn": args.churn, "precision": args.precision}
    denovo = SampleOptions(n=1000, chunk_size=1000, **common)
    result["denovo_1000"] = run(args.model, out / "denovo", denovo, args.device, args.batch, args.workers)
    result["denovo_1000"] |= quick(out / "denovo", 1000)
    speed = SampleOptions(n=args.speed_n, seed=1, chunk_size=args.speed_n, **common)
    result["speed"] = run(args.model, out / "speed", speed, args.device, args.batch, args.workers)
    if args.csp:
        from crysgen.crystal_set import CrystalSet

        n = len(CrystalSet.load(args.csp))
        csp = SampleOptions(n=n, compositions=args.csp, chunk_size=2048, **common)
        result["csp"] = (run(args.model, out / "csp", csp, args.device, args.batch, args.workers)
                         | {"targets": args.csp})
    result |= stamp(args.device, model=resolve_model_dir(args.model))
    path = ROOT / "benchmarks" / "results" / f"atom_diffusion_{args.dataset}{args.suffix}.json"
    write_text_atomic(path, json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
