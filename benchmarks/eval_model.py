"""Every metric family on samples of a trained generator -> benchmarks/results/eval_<name>_<dataset>.json.

Samples N crystals with `crysgen sample` (timed), then runs `crysgen evaluate` with all families
including CHGNet stability, against the dataset's train split (novelty, hull) and test split
(reference; ``--reference-limit`` seeded subset for coverage/distances; the hull takes the whole
split unless ``--hull-reference subset``, the rule of the files written before that option). The
JSON holds every metric with its n, the seconds of each family (the speed of the suite on this
machine) and the published CDVAE-benchmark rows of reference/anchors.md for the dataset.

Usage (GPU machine)::

    CRYSGEN_MODELS_DIR=.cgcnn python benchmarks/eval_model.py src/crysgen/pretrained/crystens_diffusion_mp20 \
        --name diffusion_default --dataset mp_20 --device cuda --workers 12
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from codec import ROOT, stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.data.substitution import DRAWS
from crysgen.evaluation.suite import ALL_FAMILIES, HULL_REFERENCE, EvalOptions, evaluate, write_report
from crysgen.models.model_dir import data_fingerprint
from crysgen.pipelines.generators import resolve_model_dir
from crysgen.pipelines.sampling import SampleOptions, sample_to_dir
from eval_sanity import TRAIN
from provenance import published


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--name", required=True)
    p.add_argument("--dataset", required=True, choices=sorted(TRAIN))
    p.add_argument("--work", default="benchmarks/.work")
    p.add_argument("-n", "--n-samples", dest="n", type=int, default=1000)  # "--n" is ambiguous, not --name
    p.add_argument("--reference-limit", type=int, default=1000)
    p.add_argument("--hull-reference", choices=HULL_REFERENCE, default=EvalOptions.hull_reference,
                   help="the test crystals in the stability hull: all, or the --reference-limit subset")
    p.add_argument("--property-model", default="formation_energy")
    p.add_argument("--comp-scaler-from", default=None, help="CrystalSet whose Magpie statistics "
                   "standardise composition fingerprints (default: the reference's)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--cache-dir", default="benchmarks/.work/cache")
    p.add_argument("--samples", help="a `crysgen sample` folder of MODEL made earlier (the sampling "
                   "time is then not measured here)")
    p.add_argument("--composition-prior", default=None, metavar="TRAIN.npz|train",
                   help="sample composition first (`crysgen sample --composition-prior`): compositions "
                        "drawn from this CrystalSet ('train': the dataset's training split in --work)")
    p.add_argument("--symmetry-prior", default=None, metavar="TRAIN.npz|train",
                   help="atom diffusion: each sample keeps the symmetry of a crystal of this set "
                        "(`crysgen sample --symmetry-prior`; 'train' = the dataset's training split)")
    p.add_argument("--substitute", nargs="?", const="probability", default=None,
                   choices=list(DRAWS),
                   help="with --composition-prior: one ion substitution per drawn composition, drawn "
                        "by probability (the default) or mass-balanced (`crysgen sample --substitute`)")
    p.add_argument("--metrics", default=",".join(f for f in ALL_FAMILIES if f != "csp"),
                   help="families (default: all but csp, which needs samples that name their targets)")
    p.add_argument("--relax-steps", type=int, default=EvalOptions.relax_steps,
                   help="CHGNet FIRE steps per structure (%(default)s)")
    p.add_argument("--relax-workers", type=int, default=None, help="relaxation processes (default --workers)")
    p.add_argument("--relax-batch", type=int, default=EvalOptions.relax_batch_size,
                   help="structures per CHGNet forward pass (default: the relaxation engine's)")
    p.add_argument("--relax-time-limit", type=float, default=EvalOptions.relax_time_limit_s,
                   help="seconds per relaxation (%(default)g)")
    p.add_argument("--steps", type=int, default=SampleOptions.steps,
                   help="sampler steps of new samples (`crysgen sample --steps`; %(default)s)")
    p.add_argument("--sampler", default=SampleOptions.sampler, choices=("ddim", "dpmsolver", "ddpm"),
                   help="CrysTens diffusion sampler of new samples (`crysgen sample --sampler`; %(default)s)")
    p.add_argument("--churn", type=float, default=None,
                   help="EDM S_churn of an atom model's new samples (`crysgen sample --churn`; "
                        "default: the model's)")
    p.add_argument("--anneal-rho", type=float, default=None,
                   help="anti-annealing exponent of an atom model's new samples (`crysgen sample "
                        "--anneal-rho`; 0: off; default: the model's)")
    p.add_argument("--anneal-rho-lattice", type=float, default=None,
                   help="the lattice's own anti-annealing exponent (`crysgen sample --anneal-rho-lattice`)")
    p.add_argument("--suffix", default="", help="appended to the result file's name (e.g. _cpu)")
    p.add_argument("--progress", action="store_true", help="progress bars (stderr) for every family")
    args = p.parse_args()
    work = Path(args.work)
    out = work / f"eval_{args.name}_{args.dataset}{args.suffix}"
    n = args.n
    if args.samples:
        samples = Path(args.samples)
        meta = json.loads((samples / "summary.json").read_text())
        n = meta.get("n", meta.get("decoded"))  # the folder's size, not the unused -n
        config = json.loads((samples / "sample_config.json").read_text())
        sampling = {"seconds": None, "decoded": meta.get("decoded"), "failures": meta.get("failures"),
                    "folder": str(samples), "sampled_from": config["model"],
                    "sample_options": config["options"]}
        if "relaxation" in config:  # a `crysgen relax` folder: what was relaxed, and how
            sampling["relaxation"] = config["relaxation"]
    else:
        samples = out / "samples"
        t0 = time.perf_counter()
        def train_or(path: str | None) -> str | None:
            return str(work / f"{TRAIN[args.dataset]}.npz") if path == "train" else path

        sample_options = SampleOptions(n=args.n, steps=args.steps, sampler=args.sampler,
                                       composition_prior=train_or(args.composition_prior),
                                       substitute=args.substitute, churn=args.churn,
                                       anneal_rho=args.anneal_rho, anneal_rho_lattice=args.anneal_rho_lattice,
                                       symmetry_prior=train_or(args.symmetry_prior))
        summary = sample_to_dir(args.model, samples, sample_options, device=args.device, progress=False)
        sampling = {"seconds": round(time.perf_counter() - t0, 1), "decoded": summary.decoded,
                    "failures": summary.failures, "composition_prior": summary.composition_prior}
    if args.reference_limit and (n or 0) > args.reference_limit:  # an easy slip: CDVAE's 10,000 rows use all
        print(f"warning: {n:,} samples are scored against a seeded {args.reference_limit:,} of the test "
              "crystals (--reference-limit); the 10,000-sample protocol uses them all: --reference-limit 0",
              file=sys.stderr)
    written = json.loads((samples / "sample_config.json").read_text())
    # the sampler settings and the SHA-256 of every weights file that made the samples (the atom
    # model's, and a composition model's under composition_prior/)
    sampling |= {"sampler": written.get("sampler"), "weights": written.get("weights")}
    options = EvalOptions(metrics=tuple(args.metrics.split(",")), dataset=args.dataset,
                          comp_scaler_from=args.comp_scaler_from,
                          property_model=args.property_model,
                          workers=args.workers, reference_limit=args.reference_limit,
                          hull_reference=args.hull_reference, device=args.device, cache_dir=args.cache_dir,
                          relax_steps=args.relax_steps,
                          relax_time_limit_s=args.relax_time_limit, relax_workers=args.relax_workers,
                          relax_batch_size=args.relax_batch)
    train, reference = work / f"{TRAIN[args.dataset]}.npz", work / f"{args.dataset}_test.npz"
    ev = evaluate(samples, train, reference, options, progress=args.progress)
    write_report(ev, out / "report", title=f"{args.name} on {args.dataset}", options=options)
    result = {"model": args.model, "dataset": args.dataset, "n": n,
              "training_data": f"{TRAIN[args.dataset]}.npz (mp_20: the partial train split, 57 %)",
              "data": [data_fingerprint(CrystalSet.load(p), p.name) for p in (train, reference)],
              "sampling": sampling,
              "metrics": ev.metrics, "seconds": ev.seconds,
              "published": {"columns": published("dng")["columns"],
                            "rows": published("dng")["rows"].get(args.dataset, {}),
                            "source": published("dng")["source"]},
              "options": {k: v for k, v in vars(args).items()}}
    result |= stamp(args.device, model=resolve_model_dir(args.model))
    path = ROOT / "benchmarks" / "results" / f"eval_{args.name}_{args.dataset}{args.suffix}.json"
    write_text_atomic(path, json.dumps(result, indent=1, default=float, sort_keys=True) + "\n")
    print(json.dumps({k: (v["value"] if not isinstance(v["value"], dict) else "...")
                      for k, v in ev.metrics.items()}, indent=0))
    print(json.dumps(ev.seconds), f"sampling {sampling['seconds']} s")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
