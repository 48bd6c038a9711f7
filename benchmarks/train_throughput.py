"""Training throughput of `crysgen train atom-diffusion` under compile modes and batch sizes.

Writes benchmarks/results/train_throughput_atom_<dataset><suffix>.json.

Each variant overrides keys of a base training config (``compile`` and ``optim.batch_size``, or
any ``section.key``), trains a fresh run for ``--steps`` optimiser steps in its own process
(so compile caches and CUDA state do not carry over) and records the run's steady rate (after
its first 20 iterations: compilation and CUDA-graph capture happen there), its overall rate,
the process's wall time and the mean GPU utilisation that nvidia-smi reported meanwhile.

Usage (on the GPU machine, with a prepared CrystalSet):
    python benchmarks/train_throughput.py --data mp_20_asis_train.npz --dataset mp_20 --steps 300 \
        --variant compile=false --variant compile=default --variant compile=reduce-overhead \
        --variant compile=false,optim.batch_size=2048
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from crysgen.crystal_set import write_text_atomic
from crysgen.training.config import parse_overrides, set_dotted
from provenance import ROOT, stamp


def gpu_utilisation(stop: threading.Event, readings: list[float]) -> None:
    """Poll nvidia-smi about once a second until ``stop`` (no readings without it)."""
    while not stop.is_set():
        try:
            query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.split()
            readings.append(float(out[0]))
        except (OSError, subprocess.SubprocessError, IndexError, ValueError):
            return
        stop.wait(1.0)


def run_variant(data: Path, base: dict[str, Any], overrides: dict[str, Any], steps: int,
                work: Path) -> dict[str, Any]:
    """Train one variant in a subprocess; its throughput record."""
    config = set_dotted(base, overrides)
    config.setdefault("optim", {})["checkpoint_every"] = steps * 10  # no checkpoint inside the timing
    cfg_path = work / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    out = work / "run"
    cmd = [sys.executable, "-m", "crysgen", "train", "atom-diffusion", "--data", str(data), "--out", str(out),
           "--config", str(cfg_path), "--max-steps", str(steps), "--quiet"]
    stop, readings = threading.Event(), []
    poll = threading.Thread(target=gpu_utilisation, args=(stop, readings), daemon=True)
    poll.start()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    stop.set()
    poll.join()
    util = round(sum(readings) / len(readings), 1) if readings else None
    row: dict[str, Any] = {"overrides": overrides, "wall_seconds": round(wall, 1),
                           "gpu_utilisation_percent": util}
    if proc.returncode != 0:
        return row | {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    summary = json.loads((out / "train_summary.json").read_text())
    return row | {"throughput": summary["runs"][-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training CrystalSet .npz")
    p.add_argument("--dataset", default="mp_20")
    p.add_argument("--config", default=str(ROOT / "configs" / "atom_diffusion_mp20.yaml"))
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per variant")
    p.add_argument("--variant", action="append", default=[], help="key=value[,key=value...] (repeatable)")
    p.add_argument("--suffix", default="", help="appended to the result file's name (e.g. _messages)")
    args = p.parse_args()
    base = yaml.safe_load(Path(args.config).read_text())
    variants = [parse_overrides([x for x in v.split(",") if x]) for v in args.variant] or [{}]
    rows = []
    for overrides in variants:
        work = Path(tempfile.mkdtemp(prefix="throughput_"))
        try:
            row = run_variant(Path(args.data), base, overrides, args.steps, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"dataset": args.dataset, "data": args.data, "base_config": args.config, "steps": args.steps,
              "rows": rows, "note": "steady = after each run's first 20 iterations; one process per variant",
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    result |= stamp("cuda")
    path = ROOT / "benchmarks" / "results" / f"train_throughput_atom_{args.dataset}{args.suffix}.json"
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
