"""Time the README's main job on this machine's CPU -> benchmarks/results/demo_cpu.json.

Runs exactly `crysgen sample -n 64 --out DIR` (the bundled model, default options, CPU) in a
fresh process, as `make demo` does after installing, and records the wall time against the
2-minute target (``--target``), the torch thread count, and how many of the 64 crystals decoded,
were sampled again by a collision repair
and are structurally valid (of the last run; every run samples the same crystals). With
``--repeat N`` the median of N runs, and each run's time.

Usage: python benchmarks/demo_cpu.py [--name demo_cpu] [-- EXTRA SAMPLE OPTIONS]
(e.g. `--name demo_cpu_dpmsolver20 -- --sampler dpmsolver --steps 20` times a faster variant)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from codec import ROOT, stamp
from crysgen.data.structures import load_inputs
from crysgen.evaluation.validity import structurally_valid


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", default="demo_cpu")
    p.add_argument("--target", type=float, default=120.0, help="seconds the run should take at most")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs, each in a fresh process and folder; 'seconds' is their median")
    p.add_argument("extra", nargs="*", help="more `crysgen sample` options (after --)")
    args = p.parse_args()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat):  # each run into a fresh folder: no resume
            out = Path(tmp) / f"demo{run}"
            cmd = [sys.executable, "-m", "crysgen", "sample", "-n", "64", "--out", str(out), "--quiet",
                   *args.extra]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            times.append(time.perf_counter() - t0)
        summary = json.loads((out / "summary.json").read_text())  # the last run's
        crystals = load_inputs(out)
        valid = sum(structurally_valid(c.structure) for c in crystals if c.structure is not None)
    seconds = float(np.median(times))
    result = {"sample_command": " ".join(["crysgen sample -n 64 --out DIR", *args.extra]),
              "seconds": round(seconds, 1), "runs_seconds": [round(t, 2) for t in times],
              "seconds_in_sampler": summary["seconds"],
              "target_seconds": args.target, "met": seconds <= args.target,
              "torch_threads": torch.get_num_threads(),
              "decoded": summary["decoded"], "structurally_valid": int(valid),
              "repaired": summary.get("repaired"),  # sampled again by the model's collision repair
              "options": summary["options"]} | stamp()
    path = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
