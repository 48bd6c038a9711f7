"""Sanity of the evaluation metrics on real crystals -> benchmarks/results/eval_sanity_<dataset>.json.

The test split is scored as if it were generated, with the train split as training data
(novelty) and the val split as the reference (coverage, distances): val is a second sample of
the same distribution, so coverage should come out near 100 %, distances near 0 and validity
near 100 %, while nothing is compared with itself. Subsets (seeded) keep it within CPU time:
``--limit`` samples from test and ``--reference-limit`` crystals from val.

Usage: CRYSGEN_MODELS_DIR=../shared/pretrained/cgcnn python benchmarks/eval_sanity.py perov_5 \
    --work benchmarks/.work --property-model formation_energy [--metrics ...] [--workers 2] [--suffix S]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from codec import ROOT, stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.evaluation.suite import FAMILIES, EvalOptions, evaluate, write_report

TRAIN = {"mp_20": "mp_20_train_partial", "perov_5": "perov_5_train_poscar",
         "carbon_24": "carbon_24_train_poscar"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dataset", choices=sorted(TRAIN))
    p.add_argument("--work", default="benchmarks/.work")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--reference-limit", type=int, default=2000)
    p.add_argument("--property-model", default=None)
    p.add_argument("--metrics", default=",".join(FAMILIES))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--suffix", default="", help="appended to the result file's name (e.g. _coverage for "
                   "a run of some families that must not replace the full file)")
    args = p.parse_args()
    work = Path(args.work)
    test = CrystalSet.load(work / f"{args.dataset}_test.npz")
    samples = work / f"sanity_{args.dataset}_test_subset.npz"
    if args.limit < len(test):  # a seeded random subset of the test split plays the samples
        import numpy as np

        test = test.subset(np.sort(np.random.default_rng(0).choice(len(test), args.limit, replace=False)))
    test.save(samples)
    options = EvalOptions(metrics=tuple(args.metrics.split(",")), dataset=args.dataset,
                          property_model=args.property_model, workers=args.workers,
                          reference_limit=args.reference_limit, seed=0)
    ev = evaluate(samples, work / f"{TRAIN[args.dataset]}.npz", work / f"{args.dataset}_val.npz", options,
                  progress=False)
    report = work / f"sanity_{args.dataset}_report"
    shutil.rmtree(report, ignore_errors=True)
    write_report(ev, report, title=f"sanity: {args.dataset} test scored against train/val", options=options)
    out = {"dataset": args.dataset, "samples": f"{args.dataset} test ({len(test)} crystals, seeded subset)",
           "training": TRAIN[args.dataset], "reference": f"{args.dataset} val (up to {args.reference_limit})",
           "metrics": ev.metrics, "seconds": ev.seconds, "options": vars(args)} | stamp()
    path = ROOT / "benchmarks" / "results" / f"eval_sanity_{args.dataset}{args.suffix}.json"
    write_text_atomic(path, json.dumps(out, indent=1, default=float) + "\n")
    print(json.dumps({k: v["value"] for k, v in ev.metrics.items()}, indent=1, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
