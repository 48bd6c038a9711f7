"""The paper's comparison: GAN vs WGAN-GP vs diffusion on the same CrysTens data ->
benchmarks/results/compare_models_<dataset>.json (+ distribution and training-curve PNGs).

For N samples of each model (default 1,000; diffusion DDIM 50 steps): the paper's Table 1
variances and Table 2 agreement beside its own rows, decode failure rate, structural validity,
distinct compositions and space groups (mode collapse), K-S statistics against the reference
(test) set for a, b, c, α, β, γ, space group and atomic number, sampling speed, and each
model's training budget (from its run's train_summary.json, or for a model without a run
directory, from the benchmark JSON named by --budget-from).

Usage::

    python benchmarks/compare_models.py --dataset mp_20 --reference .work/mp_20_test.npz \
        --model gan=RUNS/gan --model wgan=RUNS/wgan \
        --model diffusion=src/crysgen/pretrained/crystens_diffusion_mp20 \
        --budget-from diffusion=benchmarks/results/superseded/diffusion_mp_20_default.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from codec import ROOT, stamp
from crysgen import CrystalSet
from crysgen.crystal_set import write_text_atomic
from crysgen.evaluation.distributions import distributions
from crysgen.evaluation.distributions import overlay_plot as plot
from crysgen.models.model_dir import read_model_meta
from crysgen.pipelines.generators import load_generator, resolve_model_dir
from crysgen.representations.crystens import DecodeOptions, decode
from diffusion import PAPER_ROW, num_elements, score, timed_sample
from provenance import published

PAPER_ROWS = published("crystens_tables_1_2")["rows"]  # Alverson et al. 2024, Tables 1 and 2


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{what} must be NAME=PATH, got {item!r}")
        out[name] = value
    return out


def budget(model_path: str, budget_json: str | None) -> dict:
    """Training budget: iterations, batch, tensors seen and GPU seconds of every invocation."""
    path = Path(model_path)
    run = path if (path / "train_summary.json").is_file() else path.parent
    if (run / "train_summary.json").is_file():
        summary = json.loads((run / "train_summary.json").read_text())
        runs = summary.get("runs", [])
        return {"source": str(run / "train_summary.json"), "iterations": summary["global_step"],
                "tensors_read": int(sum(r["steps"] * r["global_batch"] for r in runs)),
                "seconds": round(sum(r["seconds"] for r in runs), 1),
                "devices": sorted({r["device"] for r in runs}), "invocations": runs}
    meta = read_model_meta(resolve_model_dir(model_path))
    data = meta.get("data", {})
    steps = int(data.get("step", 0)) + int(data.get("init", {}).get("step", 0) or 0)
    out = {"source": str(resolve_model_dir(model_path) / "config.json"), "iterations": steps,
           "batch_size": meta["config"].get("optim", {}).get("batch_size")}
    if budget_json:
        training = json.loads(Path(budget_json).read_text()).get("training", {})
        out |= {"recorded_in": budget_json, "recorded_invocations": training}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="name used in the result file")
    p.add_argument("--reference", required=True, help="reference CrystalSet (the test split)")
    p.add_argument("--model", action="append", required=True,
                   help="NAME=MODEL_OR_RUN_DIR (repeat); NAME gan/wgan/diffusion picks the paper row")
    p.add_argument("--budget-from", action="append", default=[],
                   help="NAME=BENCHMARK_JSON whose 'training' section records a model's training")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50, help="diffusion DDIM steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--out-name", default=None, help="result name (default compare_models_<dataset>)")
    args = p.parse_args()

    models = _pairs(args.model, "--model")
    budgets = _pairs(args.budget_from, "--budget-from")
    name = args.out_name or f"compare_models_{args.dataset}"
    results = ROOT / "benchmarks" / "results"
    ref_cs = CrystalSet.load(args.reference)
    ref_d = distributions(ref_cs) | {"num_elements": num_elements(ref_cs)}
    rows = {}
    for label, path in models.items():
        model = load_generator(path)
        kind = read_model_meta(resolve_model_dir(path))["kind"]
        kw = {"device": args.device, "batch_size": args.batch_size, "steps": args.steps,
              "sampler": "ddim"}
        model.sample(4, **(kw | {"steps": 2}))  # warm-up
        tensors, t_sample = timed_sample(model, args.n, seed=0, **kw)
        t0 = time.perf_counter()
        res = decode(tensors, model.scaling, DecodeOptions(mode="auto"))
        t_decode = time.perf_counter() - t0
        scores = score(res, ref_d, args.n)
        png = results / f"{name}_{label}_distributions.png"
        plot(distributions(res.crystals), ref_d, scores["ks"], png)
        run = Path(path) if (Path(path) / "curves.png").is_file() else Path(path).parent
        curves = None
        if (run / "curves.png").is_file():
            curves = results / f"{name}_{label}_curves.png"
            shutil.copyfile(run / "curves.png", curves)
        diag = res.mean_diagnostics()
        paper = PAPER_ROWS.get(kind, {})
        rows[label] = {
            "kind": kind, "model": str(path), "model_data": model.data,
            "budget": budget(path, budgets.get(label)),
            "table1_2": {k: diag[k] for k in PAPER_ROW}, "paper_row": paper,
            **scores,
            "speed": {"sample_seconds": round(t_sample, 2),
                      "crystals_per_s": round(args.n / t_sample, 1),
                      "decode_crystals_per_s_one_process": round(args.n / t_decode, 1)},
            "plots": {"distributions": str(png.relative_to(ROOT)),
                      **({"training_curves": str(curves.relative_to(ROOT))} if curves else {})},
        }
        print(label, json.dumps({k: rows[label][k] for k in ("table1_2", "structurally_valid_rate",
                                                               "failure_rate", "mode_collapse")}))
    ordering = {}
    for metric in ("structurally_valid_rate",):
        ordering[metric] = sorted(rows, key=lambda k: -rows[k][metric])
    for metric in PAPER_ROW:
        ordering[metric] = sorted(rows, key=lambda k: rows[k]["table1_2"][metric])
    ordering["mean_ks"] = sorted(rows, key=lambda k: np.nanmean(
        [v["statistic"] for v in rows[k]["ks"].values()]))
    out = {"dataset": args.dataset, "reference": str(args.reference), "n": args.n,
           "diffusion_steps": args.steps, "device": args.device,
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "models": rows, "best_first": ordering} | stamp()
    path = results / f"{name}.json"
    write_text_atomic(path, json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"best first: {json.dumps(ordering)}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
