"""Multi-GPU check of `crysgen train diffusion|atom-diffusion --devices N`.

Writes benchmarks/results/diffusion_ddp.json (or atom_diffusion_ddp.json with --kind atom-diffusion).

Trains the default-model config for a few hundred steps with DDP on N GPUs, then resumes the run
for more steps with the same command plus ``--resume``, and records each invocation's global
batch and samples/s (train_summary.json), the step the resumed run started from, and whether
the exported model loads and samples.

Usage (on a machine with N GPUs): python benchmarks/ddp.py --data mp_20_train_partial.npz \
    --devices 2 --steps 300 --more 100 [--kind atom-diffusion]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from codec import ROOT, stamp
from crysgen.pipelines.generators import load_generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--more", type=int, default=100)
    p.add_argument("--kind", choices=("diffusion", "atom-diffusion"), default="diffusion")
    p.add_argument("--config", default=None, help="default: the kind's mp_20 config")
    p.add_argument("--run", default="/tmp/ddp_run")
    args = p.parse_args()
    configs = {"diffusion": "diffusion_mp20_default.yaml", "atom-diffusion": "atom_diffusion_mp20.yaml"}
    args.config = args.config or str(ROOT / "configs" / configs[args.kind])
    shutil.rmtree(args.run, ignore_errors=True)
    base = [sys.executable, "-m", "crysgen", "train", args.kind, "--data", args.data, "--out", args.run,
            "--devices", str(args.devices), "--quiet"]
    first = subprocess.run([*base, "--config", args.config, "--max-steps", str(args.steps)], check=False)
    second = subprocess.run([*base, "--resume", "--max-steps", str(args.steps + args.more)], check=False)
    summary = json.loads((Path(args.run) / "train_summary.json").read_text())
    model = load_generator(Path(args.run) / "model")
    if args.kind == "diffusion":
        x = model.sample(8, steps=5, device="cuda", batch_size=8)
    else:  # decoded crystals: their arrays must be finite
        res = model.generate(8, steps=5, device="cuda", batch_size=8)
        x = res.crystals.frac_coords if len(res.crystals) else np.full(1, np.nan)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    out = {"devices": args.devices, "gpus": gpus,
           "returncodes": [first.returncode, second.returncode], "global_step": summary["global_step"],
           "expected_step": args.steps + args.more, "invocations": summary["runs"],
           "resumed_from_step": summary["runs"][0]["end_step"] if summary["runs"] else None,
           "exported_model_step": model.data.get("step"),
           "sample_finite": bool(np.isfinite(x).all()),
           "config": args.config} | stamp()
    path = ROOT / "benchmarks" / "results" / f"{args.kind.replace('-', '_')}_ddp.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
