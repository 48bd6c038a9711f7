"""Spread of the 8 copies of CrysTens site attributes: the basis of the decoder's
'far from any crystal' limit (``DecodeOptions.max_copy_spread``) -> results/copy_spread.json.

Per tensor, :func:`crysgen.representations.crystens.decode.copy_spread` over its non-empty site
rows, for: 64 samples of the bundled CrysTens model (50 DDIM steps, seed 0), uniform noise, and
the first 2,000 mp_20 test crystals encoded, clean and with Gaussian noise σ on their non-zero
entries. The limit must sit above every real and generated tensor and below noise.

Usage: python benchmarks/copy_spread.py [--n 64]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.pipelines.generators import CRYSTENS_MODEL, load_generator
from crysgen.representations.crystens import encode
from crysgen.representations.crystens.decode import MAX_COPY_SPREAD, copy_spread, header_copies
from provenance import ROOT, stamp


def spreads(tensors: np.ndarray, layout) -> np.ndarray:
    copies = header_copies(np.asarray(tensors).transpose(0, 2, 3, 1).astype(np.float64), layout)
    return copy_spread(copies, (copies != 0).any(axis=(2, 3)))


def summary(s: np.ndarray) -> dict:
    return {"n": len(s), "median": float(np.median(s)), "p99": float(np.quantile(s, 0.99)),
            "max": float(s.max()), "min": float(s.min())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=64, help="generated samples")
    p.add_argument("--test", default="benchmarks/.work/mp_20_test.npz")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_generator(CRYSTENS_MODEL)
    layout = model.scaling.layout
    rng = np.random.default_rng(0)
    gen = model.sample(args.n, steps=50, seed=0, device="cpu", batch_size=16)
    cs = CrystalSet.load(ROOT / args.test)
    cs = cs.subset(np.arange(min(2000, len(cs))))
    cs = cs.subset(np.flatnonzero(cs.num_sites <= layout.sites))
    real = encode(cs, model.scaling)
    out = {"limit": MAX_COPY_SPREAD, "generated_bundled_crystens": summary(spreads(gen, layout)),
           "uniform_noise": summary(spreads(rng.random((16, *gen.shape[1:])), layout))}
    for sigma in (0.0, 0.01, 0.03, 0.1):
        jitter = sigma * rng.standard_normal(real.shape)
        noisy = np.where(real != 0, np.clip(real + jitter, 0, 1), 0) if sigma else real
        out[f"mp_20_test_sigma_{sigma:g}"] = summary(spreads(noisy, layout))
    result = {"spreads": out, "test_crystals": len(cs)} | stamp("cpu", model=CRYSTENS_MODEL)
    path = ROOT / "benchmarks" / "results" / "copy_spread.json"
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(json.dumps(out, indent=1), f"\nwrote {path}")


if __name__ == "__main__":
    main()
