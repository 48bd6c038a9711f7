"""Full benchmark of a CrysTens diffusion model -> benchmarks/results/diffusion_<name>.json (+ PNG).

For N samples (default 1,000, DDIM 50 steps): the paper's Table 1/2 quantities beside its diffusion
row, decode failures, structural validity (CDVAE: distances >= 0.5 Å, volume >= 0.1 Å³), distinct
compositions and space groups, K-S statistics (scipy ``ks_2samp``) against the reference (test)
set for a, b, c, alpha, beta, gamma, space group and atomic number, with overlay plots like the
paper's Figs 4-6; speed: sampling at 50 DDIM steps and at 1000 DDPM steps (on a subset), decode;
training speed from the run directories' train_summary.json (``--run``, one per stage).
MODEL is any directory `crysgen sample` takes (single-stage or cascade).

Usage: python benchmarks/diffusion.py RUN_DIR/model --reference test.npz --name mp_20 --device cuda \
    --run RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import ks_2samp

from codec import ROOT, stamp
from crysgen import CrystalSet
from crysgen.evaluation.distributions import KS_NAMES, distributions, ks_statistics
from crysgen.evaluation.distributions import overlay_plot as plot
from crysgen.evaluation.diversity import mode_collapse_check
from crysgen.evaluation.validity import structurally_valid
from crysgen.pipelines.crystens import CrysTensGenerator
from crysgen.pipelines.generators import load_generator
from crysgen.representations.crystens import DecodeOptions, decode
from provenance import published

PAPER_ROW = published("crystens_tables_1_2")["rows"]["diffusion"]


def num_elements(cs: CrystalSet) -> np.ndarray:
    """Distinct elements per crystal."""
    return np.array([len(set(cs.atomic_numbers[i, : cs.num_sites[i]].tolist())) for i in range(len(cs))])


def timed_sample(model: CrysTensGenerator, n: int, **kw) -> tuple[np.ndarray, float]:
    if kw.get("device", "cpu").startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    x = model.sample(n, **kw)
    return x, time.perf_counter() - t0


def training_speed(run_dirs: list[str]) -> dict[str, dict]:
    """Per run directory: its config's stage and the speed of its last training invocation."""
    import yaml

    out = {}
    for run in run_dirs:
        summary = json.loads((Path(run) / "train_summary.json").read_text())
        config = yaml.safe_load((Path(run) / "config.yaml").read_text())
        last = summary["runs"][-1] if summary.get("runs") else {}
        out[Path(run).name] = {"stage": config.get("stage", {}).get("role", "single"),
                               "global_step": summary["global_step"],
                               "batch_size": config["optim"]["batch_size"],
                               "final_train_loss": summary.get("final_train_loss"), **last}
    return out


def score(res, ref_d: dict[str, np.ndarray], n: int) -> dict:
    """Decode failures, structural validity, distinct compositions / space groups, K-S vs reference.

    Distinct compositions are reduced formulas (results written before 2026-11-22 counted
    distinct whole-cell compositions).
    """
    cs = res.crystals
    if len(cs) == 0:  # nothing decoded: no distribution to compare
        return {"num_elements": None, "decode_failures": len(res.failures),
                "failure_rate": len(res.failures) / n, "failure_reasons": res.failure_counts(),
                "structurally_valid_rate": 0.0,
                "distinct_compositions": 0, "distinct_space_groups": 0, "mode_collapse": None, "ks": None}
    valid = np.array([structurally_valid(cs.to_structure(i)) for i in range(len(cs))])
    gen_d = distributions(cs)
    ks = ks_statistics(gen_d, {k: ref_d[k] for k in KS_NAMES})
    collapse = mode_collapse_check(cs, n)
    k_gen, k_ref = num_elements(cs), ref_d["num_elements"]
    return {"num_elements": {"generated_median": float(np.median(k_gen)), "generated_max": int(k_gen.max()),
                             "reference_median": float(np.median(k_ref)), "reference_max": int(k_ref.max()),
                             "generated_share_above_reference_max": float((k_gen > k_ref.max()).mean()),
                             "ks_statistic": float(ks_2samp(k_gen, k_ref).statistic)},
            "decode_failures": len(res.failures), "failure_rate": len(res.failures) / n,
            "failure_reasons": res.failure_counts(),
            "structurally_valid_rate": float(valid.sum() / n),
            "distinct_compositions": collapse["distinct_compositions"],  # reduced formulas
            "distinct_space_groups": collapse["distinct_space_groups"], "mode_collapse": collapse,
            "ks": ks}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model")
    p.add_argument("--reference", required=True, help="reference CrystalSet (the test split)")
    p.add_argument("--name", required=True)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--ddpm-n", type=int, default=100, help="samples for the 1000-step timing")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--symprec", type=float, default=None,
                   help="also score the same samples decoded with spglib snapping at this tolerance (Å)")
    p.add_argument("--run", action="append", default=[],
                   help="training run directory (repeat for a cascade's stages): training speed")
    args = p.parse_args()

    model = load_generator(args.model)
    kw = {"device": args.device, "batch_size": args.batch_size}
    model.sample(8, steps=2, **kw)  # warm-up
    tensors, t_ddim = timed_sample(model, args.n, steps=args.steps, sampler="ddim", seed=0, **kw)
    _, t_ddpm = timed_sample(model, args.ddpm_n, steps=1000, sampler="ddpm", seed=1, **kw)
    t0 = time.perf_counter()
    res = decode(tensors, model.scaling, DecodeOptions(mode="auto"))
    t_decode = time.perf_counter() - t0
    ref_cs = CrystalSet.load(args.reference)
    ref_d = distributions(ref_cs) | {"num_elements": num_elements(ref_cs)}
    scores = score(res, ref_d, args.n)
    provenance = stamp()  # before the tracked plot below is rewritten, so a clean tree stays clean
    png = ROOT / "benchmarks" / "results" / f"diffusion_{args.name}_distributions.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    if scores["ks"] is not None:
        plot(distributions(res.crystals), ref_d, scores["ks"], png)
    snapped = {}
    if args.symprec is not None:  # the same tensors decoded with spglib snapping
        t0 = time.perf_counter()
        res_s = decode(tensors, model.scaling, DecodeOptions(mode="auto", symprec=args.symprec))
        snapped = {"symprec": args.symprec, "decode_crystals_per_s_one_process":
                   round(args.n / (time.perf_counter() - t0), 1), **score(res_s, ref_d, args.n)}
    diag = res.mean_diagnostics()
    out = {
        "model": str(args.model), "model_kind": type(model).__name__, "model_data": model.data,
        "training": training_speed(args.run), "reference": str(args.reference),
        "n": args.n, "steps": args.steps, "device": args.device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "table1_2": {k: diag[k] for k in PAPER_ROW}, "paper_diffusion_row": PAPER_ROW,
        "at_or_below_paper": {k: bool(diag[k] <= v) for k, v in PAPER_ROW.items()},
        **scores, "validity_target": 0.9,
        "plot": str(png.relative_to(ROOT)) if scores["ks"] is not None else None,
        **({"decoded_with_symprec": snapped} if snapped else {}),
        "speed": {
            "ddim_steps": args.steps, "ddim_seconds": round(t_ddim, 2),
            "ddim_crystals_per_s": round(args.n / t_ddim, 1),
            "ddpm_1000_steps_n": args.ddpm_n,
            "ddpm_1000_crystals_per_s": round(args.ddpm_n / t_ddpm, 2) if args.ddpm_n else None,
            "decode_crystals_per_s_one_process": round(args.n / t_decode, 1),
            "sample_and_decode_seconds": round(t_ddim + t_decode, 2), "target_seconds": 60,
        },
    } | provenance
    path = ROOT / "benchmarks" / "results" / f"diffusion_{args.name}.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: out[k] for k in ("table1_2", "structurally_valid_rate", "ks", "speed")},
                     indent=1))
    print(f"wrote {path}" + (f" and {png}" if out["plot"] else ""))


if __name__ == "__main__":
    main()
