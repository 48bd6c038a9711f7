"""Quick measurement of a trained CrysTens diffusion model -> benchmarks/results/diffusion_<name>_quick.json.

Samples N crystals (timed, on the given device), decodes them (auto), and reports decode failures,
structural validity (all distances >= 0.5 Å, volume >= 0.1 Å³), the paper's Table 1/2 means, and
speeds. A first look, not the full diffusion benchmark (K-S statistics, cascade comparison).

Usage: python benchmarks/diffusion_quick.py MODEL_DIR --name mp_20 -n 1000 --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from codec import ROOT, stamp
from crysgen.evaluation.validity import structurally_valid
from crysgen.pipelines.diffusion import DiffusionModel, sample_tensors
from crysgen.representations.crystens import DecodeOptions, decode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model")
    p.add_argument("--name", required=True)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=500)
    args = p.parse_args()
    model = DiffusionModel.from_pretrained(args.model)
    sample_tensors(model, 8, steps=2, sampler=args.sampler, device=args.device)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tensors = sample_tensors(model, args.n, steps=args.steps, sampler=args.sampler, seed=0,
                             device=args.device, batch_size=args.batch_size)
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = decode(tensors, model.scaling, DecodeOptions(mode="auto"))
    t_decode = time.perf_counter() - t0
    valid = [structurally_valid(res.crystals.to_structure(i)) for i in range(len(res.crystals))]
    out = {
        "model": str(args.model), "model_data": model.data, "n": args.n, "sampler": args.sampler,
        "steps": args.steps, "device": args.device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "sample_seconds": round(t_sample, 2), "decode_seconds": round(t_decode, 2),
        "sample_and_decode_seconds": round(t_sample + t_decode, 2),
        "decode_failures": len(res.failures), "failure_reasons": res.failure_counts(),
        "structurally_valid": int(sum(valid)), "valid_rate_of_all": sum(valid) / args.n,
        "mean_diagnostics": res.mean_diagnostics(),
        "paper_diffusion_row": {"var_lattice_params": 0.35, "var_lattice_angles": 0.846,
                                "var_space_group": 4.56, "var_frac_coords": 4.36e-4,
                                "coord_agreement": 5.51e-4, "pairwise_error": 0.473},
        "distinct_compositions": len({
            tuple(sorted(res.crystals.atomic_numbers[i][: res.crystals.num_sites[i]]))
            for i in range(len(res.crystals))
        }),
    } | stamp()
    path = ROOT / "benchmarks" / "results" / f"diffusion_{args.name}_quick.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: out[k] for k in ("sample_and_decode_seconds", "decode_failures",
                                           "valid_rate_of_all", "mean_diagnostics")}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
