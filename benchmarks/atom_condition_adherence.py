"""Does an atom model make as many distinct elements as it was asked for?

For each model: N de novo samples (seeded) whose (sites, elements) pairs are drawn from the
training histogram as `crysgen sample` draws them; the elements of every sample are its continuous
codes snapped to the nearest allowed element (what decoding does), and their distinct count is
compared with the drawn one. A model without ``net.num_elements`` is asked nothing (it draws only
the number of sites): only its made counts are reported. The test split's distribution and the
Wasserstein distance of each model's made counts to it are written too.

Writes benchmarks/results/atom_condition_adherence_mp_20.json.

Usage::

    python benchmarks/atom_condition_adherence.py src/crysgen/pretrained/atom_diffusion_mp20 \\
        benchmarks/results/runs/atom_diffusion_mp20_elements/model \\
        --test benchmarks/.work/mp_20_asis_test.npz -n 256 --steps 20 --device cpu
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.stats import wasserstein_distance

from atom_sample_stats import shares
from codec import ROOT, stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.pipelines.atoms import AtomDiffusionModel
from crysgen.representations.atoms import nearest_elements, num_elements

RESULTS = ROOT / "benchmarks" / "results"


def measure(path: str, n: int, steps: int, device: str, seed: int, test_counts: np.ndarray) -> dict:
    """One model's asked-for vs made element counts (see the module docstring)."""
    model = AtomDiffusionModel.from_pretrained(path)
    conditioned = bool(model.net.cfg.num_elements)
    # the draw sample_sets makes for ``seed``
    if conditioned:
        sites, asked = model.draw_sizes(n, seed=[seed, 1])
    else:
        sites, asked = model.draw_num_atoms(n, seed=[seed, 1]), None
    t0 = time.perf_counter()
    sets = model.sample_sets(n, steps=steps, seed=seed, device=device)
    seconds = time.perf_counter() - t0
    if not np.array_equal(sets.mask.sum(1), sites):
        raise SystemExit(f"{path}: the sampler drew other sizes than this script (seed [{seed}, 1])")
    made = num_elements(nearest_elements(sets.types, model.spec.elements, model.spec) * sets.mask)
    out = {"model": path, "conditioned_on_num_elements": conditioned, "n": n, "steps": steps,
           "sampling_seconds": round(seconds, 1), "made_shares": shares(made),
           "wdist_made_to_test": round(float(wasserstein_distance(made, test_counts)), 4)}
    if asked is None:
        return out
    confusion: dict[str, dict[str, int]] = {}
    for a, m in zip(asked, made, strict=True):
        row = confusion.setdefault(str(int(a)), {})
        row[str(int(m))] = row.get(str(int(m)), 0) + 1
    return out | {
        "made_equals_drawn": round(float((made == asked).mean()), 4),
        "mean_abs_difference": round(float(np.abs(made - asked).mean()), 4),
        "made_more_than_drawn": round(float((made > asked).mean()), 4),
        "made_fewer_than_drawn": round(float((made < asked).mean()), 4),
        "drawn_shares": shares(asked),
        "wdist_drawn_to_test": round(float(wasserstein_distance(asked, test_counts)), 4),
        "confusion_drawn_to_made": {k: confusion[k] for k in sorted(confusion, key=int)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="atom diffusion model directories")
    p.add_argument("--test", required=True, help="the test CrystalSet (.npz)")
    p.add_argument("-n", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    test = CrystalSet.load(args.test)
    test_counts = num_elements(test.atomic_numbers)
    runs = [measure(m, args.n, args.steps, args.device, args.seed, test_counts) for m in args.models]
    for r in runs:
        print(json.dumps({k: r.get(k) for k in ("model", "made_equals_drawn", "mean_abs_difference",
                                                "wdist_made_to_test", "made_shares")}))
    out = {"runs": runs, "test_shares": shares(test_counts), "test": args.test,
           "definition": "drawn: each sample's distinct-element count from the training (sites, "
                         "elements) histogram (the condition of a num_elements model; for another "
                         "model the same draw, not given to it); made: distinct elements after "
                         "snapping the sampled codes to the nearest allowed element"} | stamp(args.device)
    path = RESULTS / "atom_condition_adherence_mp_20.json"
    write_text_atomic(path, json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
