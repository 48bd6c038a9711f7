"""Faithful CrysTens decoding with one OpenMP thread vs the OpenMP default (issue 22 item 5).

Writes benchmarks/results/decode_threads.json: seconds to decode the same N tensors of the bundled
CrysTens model with :func:`crysgen.representations.crystens.decode` (which limits OpenMP to one
thread) and with the faithful decoder called directly under OpenMP's default thread count, each
repeated; torch keeps its default threads throughout, as in `crysgen sample`.

Usage: python benchmarks/decode_threads.py [--n 24] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import sklearn.cluster  # noqa: F401  (loads the OpenMP runtime the faithful decoder's k-means uses)
import torch
from threadpoolctl import threadpool_info

from codec import ROOT, stamp
from crysgen.crystal_set import write_text_atomic
from crysgen.pipelines.generators import CRYSTENS_MODEL, load_generator
from crysgen.representations.crystens import DecodeOptions, decode, faithful


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=24, help="tensors (sampled with 10 DDIM steps, seed 0)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    model = load_generator(CRYSTENS_MODEL)
    tensors = model.sample(args.n, steps=10, seed=0, device="cpu", batch_size=8)
    ids = [str(i) for i in range(len(tensors))]
    opts = DecodeOptions(mode="faithful")
    x = np.asarray(tensors)
    runs: dict[str, list[float]] = {"decode_one_openmp_thread": [], "openmp_default": []}
    decoded = {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        decoded["limited"] = len(decode(x, model.scaling, opts, ids=ids).crystals)
        runs["decode_one_openmp_thread"].append(round(time.perf_counter() - t0, 3))
        t0 = time.perf_counter()
        decoded["default"] = len(faithful.decode_batch(x, model.scaling, opts, np.asarray(ids)).crystals)
        runs["openmp_default"].append(round(time.perf_counter() - t0, 3))
    result = {"n": args.n, "repeats": args.repeats, "seconds": runs,
              "median_speedup": float(np.median(runs["openmp_default"])
                                      / np.median(runs["decode_one_openmp_thread"])),
              "decoded": decoded, "torch_threads": torch.get_num_threads(),
              "thread_pools": [{k: d[k] for k in ("user_api", "internal_api", "num_threads")}
                               for d in threadpool_info()]} | stamp("cpu")
    path = ROOT / "benchmarks" / "results" / "decode_threads.json"
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["seconds"]), f"median speed-up {result['median_speedup']:.1f}x; wrote {path}")


if __name__ == "__main__":
    main()
