"""Composition first, then structure, for the atom model -> composition_first_mp_20_cpu.json.

Three arms of N samples each from one atom diffusion model, scored by the same suite (validity,
distributions, coverage, novelty; no stability, so it runs on a CPU):

- ``denovo``: the model's own de novo sampling (`crysgen sample -n N`).
- ``train``: N training crystals drawn (seeded); the model predicts a structure for each one's
  composition (`crysgen sample --compositions`: crystal structure prediction).
- ``substituted``: the same draws, each composition first changed by one ion substitution drawn
  from pymatgen's data-mined ``SubstitutionPredictor`` (Hautier et al. 2011; probabilities over
  oxidation-state-decorated species; threshold 1e-3), weighted by its probability and excluding
  the identity and elements the model never saw; compositions whose oxidation states pymatgen
  cannot guess (e.g. intermetallics) stay as they are (their share is reported).

Usage: python benchmarks/composition_first_cpu.py MODEL --train TRAIN.npz --reference TEST.npz -n 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.pipelines.generators import resolve_model_dir
from provenance import ROOT, stamp

HEADLINE = ("struct_valid", "comp_valid", "valid", "cov_recall", "cov_precision", "wdist_density",
            "wdist_num_elems", "unique", "novel", "unique_and_novel")


def run_cli(argv: list[str]) -> None:
    """``crysgen ARGV`` in a fresh process (its output passes through); stops on failure."""
    subprocess.run([sys.executable, "-m", "crysgen", *argv], check=True)


def substitute(crystals: CrystalSet, known: set[int], seed: int) -> tuple[CrystalSet, int]:
    """Each crystal's elements after one drawn ion substitution (sites keep their counts).

    Returns the changed set and how many crystals were changed.
    """
    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionPredictor
    from pymatgen.core import Composition, Element

    rng = np.random.default_rng(seed)
    predictor = SubstitutionPredictor(threshold=1e-3)
    z = crystals.atomic_numbers.copy()
    changed = 0
    for i in range(len(crystals)):
        zs = z[i, : int(crystals.num_sites[i])]
        comp = Composition({Element.from_Z(int(k)): int((zs == k).sum()) for k in np.unique(zs)})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                preds = predictor.composition_prediction(comp.add_charges_from_oxi_state_guesses())
        except (ValueError, KeyError):  # no oxidation states for this composition, or unknown species
            preds = []
        options = []
        for p in preds:  # substitutions map the new species to the one it replaces
            mapping = {old.element.Z: new.element.Z for new, old in p["substitutions"].items()}
            if any(a != b for a, b in mapping.items()) and set(mapping.values()) <= known and \
                    len(set(mapping.values())) == len(mapping):
                options.append((mapping, p["probability"]))
        if not options:
            continue
        weights = np.array([w for _, w in options])
        mapping = options[rng.choice(len(options), p=weights / weights.sum())][0]
        z[i, : len(zs)] = [mapping.get(int(k), int(k)) for k in zs]
        changed += 1
    out = CrystalSet(atomic_numbers=z, frac_coords=crystals.frac_coords, lattice=crystals.lattice,
                     space_group=crystals.space_group, num_sites=crystals.num_sites,
                     ids=np.array([f"{x}_sub" for x in crystals.ids]), properties={},
                     metadata=dict(crystals.metadata))
    return out, changed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--train", required=True, help="the model's training CrystalSet (draws, novelty)")
    p.add_argument("--reference", required=True, help="test CrystalSet (coverage, distributions)")
    p.add_argument("-n", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reference-limit", type=int, default=1000,
                   help="seeded reference subset for coverage and distances (CDVAE: 1,000)")
    p.add_argument("--work", default="benchmarks/.work/composition_first")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from crysgen.pipelines.atoms import AtomDiffusionModel

    model = AtomDiffusionModel.from_pretrained(resolve_model_dir(args.model))
    train = CrystalSet.load(args.train)
    pick = np.sort(np.random.default_rng(args.seed).choice(len(train), args.n, replace=False))
    drawn = train.subset(pick)
    drawn = drawn.subset(np.flatnonzero(drawn.num_sites <= model.spec.max_atoms))
    drawn.save(work / "train_draws.npz")
    t0 = time.perf_counter()
    subst, changed = substitute(drawn, set(model.spec.elements), args.seed)
    subst_seconds = time.perf_counter() - t0
    subst.save(work / "substituted.npz")
    # each arm through the CLI, as a user runs it (and in fresh processes: evaluate's worker pool
    # hung when forked from this process after CPU sampling)
    arms = {"denovo": [], "train": ["--compositions", str(work / "train_draws.npz")],
            "substituted": ["--compositions", str(work / "substituted.npz")]}
    results = {}
    for name, extra in arms.items():
        folder = work / name
        t0 = time.perf_counter()
        run_cli(["sample", args.model, "-n", str(len(drawn)), "--steps", str(args.steps), "--seed",
                 str(args.seed), "--out", str(folder), "--quiet", *extra])
        sample_s = time.perf_counter() - t0
        run_cli(["evaluate", str(folder), "--train", args.train, "--reference", args.reference,
                 "--metrics", "validity,distributions,coverage,novelty", "--dataset", "mp_20",
                 "--workers", str(args.workers), "--reference-limit", str(args.reference_limit),
                 "--cache-dir", str(work / "cache"), "--quiet",
                 "--out", str(work / f"{name}_report")])
        metrics = json.loads((work / f"{name}_report" / "metrics.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        results[name] = {"metrics": {k: metrics["metrics"][k]["value"] for k in HEADLINE
                                     if k in metrics["metrics"]},
                         "decoded": summary.get("decoded"), "failures": summary.get("failures"),
                         "sample_seconds": round(sample_s, 1), "eval_seconds": metrics.get("seconds")}
        print(name, json.dumps(results[name]["metrics"]), flush=True)
    out = {"model": str(args.model), "n": len(drawn), "steps": args.steps,
           "reference_limit": args.reference_limit,
           "training_data": f"{args.train} (mp_20: the partial train split, 57 %)",
           "substituted": {"changed": changed, "of": len(drawn), "seconds": round(subst_seconds, 1)},
           "arms": results} | stamp("cpu", model=resolve_model_dir(args.model))
    path = ROOT / "benchmarks" / "results" / "composition_first_mp_20_cpu.json"
    write_text_atomic(path, json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
