"""Composition first, then structure, for the atom model -> composition_first_mp_20_cpu.json.

Three arms of N samples each from one atom diffusion model, scored by the same suite (validity,
distributions, coverage, novelty; no stability, so it runs on a CPU), beside N real crystals:

- ``training_crystals``: N training crystals drawn (seeded), no model: at this N and reference
  size, the noise floor of each distance and coverage figure (and novelty 0 by definition).

- ``denovo``: the model's own de novo sampling (`crysgen sample -n N`).
- ``train``: each sample takes the composition of a training crystal drawn (seeded) and the model
  predicts a structure for it (`crysgen sample --composition-prior TRAIN.npz`).
- ``substituted``: the same, each drawn composition first changed by one same-charge ion
  substitution to a composition the training set does not hold
  (`crysgen sample --composition-prior TRAIN.npz --substitute`; :mod:`crysgen.data.substitution`);
  summary.json counts the substituted and those that took common oxidation states.

Each arm also reports ``new_composition``: the share of decoded samples whose reduced formula no
training crystal has.

Usage: python benchmarks/composition_first_cpu.py MODEL --train TRAIN.npz --reference TEST.npz -n 256
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.evaluation.diversity import reduced_formulas
from crysgen.models.atoms import SPEC_FILE
from crysgen.pipelines.generators import resolve_model_dir
from crysgen.representations.atoms import AtomSetSpec
from provenance import ROOT, stamp

HEADLINE = ("struct_valid", "comp_valid", "valid", "cov_recall", "cov_precision", "wdist_density",
            "wdist_num_elems", "unique", "novel", "unique_and_novel")


def run_cli(argv: list[str]) -> None:
    """``crysgen ARGV`` in a fresh process (its output passes through); stops on failure."""
    subprocess.run([sys.executable, "-m", "crysgen", *argv], check=True)


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
    # each arm through the CLI, as a user runs it (and in fresh processes: evaluate's worker pool
    # hung when forked from this process after CPU sampling)
    train = CrystalSet.load(args.train)
    known = set(reduced_formulas(train))
    floor = work / "training_crystals.npz"  # no model: the noise floor of each metric at this n
    spec = AtomSetSpec.load(resolve_model_dir(args.model) / SPEC_FILE)
    fits = np.flatnonzero(train.num_sites <= spec.max_atoms)
    train.subset(np.sort(np.random.default_rng(args.seed).choice(fits, args.n, replace=False))).save(floor)
    arms = {"training_crystals": None, "denovo": [], "train": ["--composition-prior", args.train],
            "substituted": ["--composition-prior", args.train, "--substitute"]}
    results = {}
    for name, extra in arms.items():
        folder = work / name if extra is not None else floor
        t0 = time.perf_counter()
        if extra is not None:
            run_cli(["sample", args.model, "-n", str(args.n), "--steps", str(args.steps), "--seed",
                     str(args.seed), "--out", str(folder), "--quiet", *extra])
        sample_s = time.perf_counter() - t0
        run_cli(["evaluate", str(folder), "--train", args.train, "--reference", args.reference,
                 "--metrics", "validity,distributions,coverage,novelty", "--dataset", "mp_20",
                 "--workers", str(args.workers), "--reference-limit", str(args.reference_limit),
                 "--cache-dir", str(work / "cache"), "--quiet",
                 "--out", str(work / f"{name}_report")])
        metrics = json.loads((work / f"{name}_report" / "metrics.json").read_text())
        summary = json.loads((folder / "summary.json").read_text()) if extra is not None else {}
        with (work / f"{name}_report" / "structures.csv").open(newline="") as fh:
            formulas = [r["formula"] for r in csv.DictReader(fh) if r["formula"]]
        results[name] = {"metrics": {k: metrics["metrics"][k]["value"] for k in HEADLINE
                                     if k in metrics["metrics"]},
                         "decoded": summary.get("decoded"), "failures": summary.get("failures"),
                         "composition_prior": summary.get("composition_prior"),
                         "new_composition": round(sum(f not in known for f in formulas) / len(formulas), 4)
                         if formulas else None,
                         "sample_seconds": round(sample_s, 1), "eval_seconds": metrics.get("seconds")}
        print(name, json.dumps(results[name]["metrics"]), flush=True)
    out = {"model": str(args.model), "n": args.n, "steps": args.steps,
           "reference_limit": args.reference_limit,
           "training_data": f"{args.train} (mp_20: the partial train split, 57 %)",
           "arms": results} | stamp("cpu", model=resolve_model_dir(args.model))
    path = ROOT / "benchmarks" / "results" / "composition_first_mp_20_cpu.json"
    write_text_atomic(path, json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
