"""CPU sampling time of the atom transformer vs its size -> results/atom_cpu_size.json.

Issue 18 asks for 64 samples on a 2-core CPU in at most 10 s with a bundled variant. The bundled
model's demo spends about 3 s importing and loading and 1 s writing CIFs, so the network's share
must fall to about 5 s. This times ``sample_sets`` (the sampler alone: no decoding, no CIFs) of
64 crystals at the demo's 10 Heun steps for the bundled network and for variants that change its
width, depth or pair messages. Every variant but the bundled one has random weights: the time of
a forward pass does not depend on the weights, the crystals are meaningless, and nothing about
quality is measured here. Variants run interleaved, ``--repeat`` times each, medians reported,
because this machine's speed drifts within minutes.

Usage: python benchmarks/atom_cpu_size.py [--repeat 3] [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace

import numpy as np
import torch

from codec import ROOT, stamp
from crysgen.crystal_set import write_text_atomic
from crysgen.models.atom_transformer import AtomTransformer
from crysgen.pipelines.atoms import AtomDiffusionModel
from crysgen.pipelines.generators import DEFAULT_MODEL

VARIANTS: dict[str, dict] = {  # changes to the bundled network's AtomNetConfig
    "bundled": {},
    "no_messages": {"pair_messages": False},
    "6_blocks": {"n_layers": 6},
    "width_192": {"d_model": 192, "n_heads": 6},
    "width_192_8_blocks_no_messages": {"d_model": 192, "n_layers": 8, "pair_messages": False},
    "width_128_no_messages": {"d_model": 128, "n_heads": 4, "pair_messages": False},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64, help="crystals per timing (the demo's 64)")
    p.add_argument("--steps", type=int, default=10, help="Heun steps (the demo's 10)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads (this machine's 2 cores)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bundled = AtomDiffusionModel.from_pretrained(DEFAULT_MODEL)
    models = {}
    for name, change in VARIANTS.items():
        if not change:
            models[name] = bundled
            continue
        torch.manual_seed(0)
        net = AtomTransformer(**asdict(replace(bundled.net.cfg, **change)))
        models[name] = AtomDiffusionModel(net, bundled.edm, bundled.spec, {"name": name})
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for rep in range(args.repeat):
        for name, model in models.items():
            t0 = time.perf_counter()
            model.sample_sets(args.n, steps=args.steps, seed=rep, batch_size=model.default_batch_size("cpu"))
            seconds[name].append(round(time.perf_counter() - t0, 2))
        print({k: v[-1] for k, v in seconds.items()}, flush=True)
    sizes = {name: int(sum(p.numel() for p in model.net.parameters())) for name, model in models.items()}
    rows = [{"variant": name, "change": VARIANTS[name], "parameters": sizes[name],
             "fp16_megabytes": round(2 * sizes[name] / 1e6, 1),
             "median_seconds": float(np.median(seconds[name])), "seconds": seconds[name]}
            for name in models]
    result = {"model": str(DEFAULT_MODEL.relative_to(ROOT)), "n": args.n, "steps": args.steps,
              "threads": args.threads, "repeat": args.repeat, "rows": rows,
              "note": "sample_sets only (no decoding or CIFs); every variant but 'bundled' has random "
                      "weights (speed only)"} | stamp()
    path = ROOT / "benchmarks" / "results" / "atom_cpu_size.json"
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
