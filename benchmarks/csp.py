"""Crystal structure prediction scores of samples -> benchmarks/results/csp_<NAME>_<dataset>.json.

Samples are a `crysgen sample` folder whose samples.csv names each sample's target (the
``target`` column) or a CrystalSet .npz whose ids are the target ids; several samples per target
give best of k (a folder's sample_config.json also names the sampled weights by SHA-256 in the
result's ``model``). Scored with :func:`crysgen.evaluation.csp.score_csp` (DiffCSP's match rate and
RMSE with ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``, OMatG's cRMSE and METRe). The
result holds the figures, per-target rows in a CSV next to it, the command, commit and machine, and
the published rows of published.json (labelled as published, not measured here).

Usage: python benchmarks/csp.py SAMPLES --targets TARGETS.npz --name NAME --dataset mp_20 [--workers N]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from codec import ROOT, stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.evaluation.csp import MATCHER, VALIDITY, load_csp_samples, score_csp
from provenance import published_csp

SIZE_BINS = ((1, 4), (5, 8), (9, 12), (13, 16), (17, 20), (21, 52))


def by_num_sites(rows: list[dict]) -> dict[str, dict]:
    """Match rate, valid-sample rate and median RMS distance of the targets in each size bin."""
    out = {}
    for lo, hi in SIZE_BINS:
        sel = [r for r in rows if lo <= int(r["num_sites"]) <= hi]
        if not sel:
            continue
        rms = sorted(float(r["rms_dist"]) for r in sel if r["matched"] and r["rms_dist"] not in (None, ""))
        out[f"{lo}-{hi}"] = {"targets": len(sel),
                             "match_rate_percent": 100 * sum(bool(r["matched"]) for r in sel) / len(sel),
                             "valid_sample_percent": 100 * sum(int(r["n_valid_samples"]) > 0 for r in sel)
                             / len(sel),
                             "median_rms_dist": rms[len(rms) // 2] if rms else None}
    return out


def sampled_model(samples: Path) -> dict:
    """``{"model": {"path", "sha256"}}`` of the model a `crysgen sample` folder was sampled from
    (its sample_config.json records the weights' SHA-256 since crysgen checks resumes by them), so
    that a CSP file names the weights it scored; empty for a CrystalSet or an older folder."""
    config = samples / "sample_config.json"
    if not config.is_file():
        return {}
    data = json.loads(config.read_text())
    return {"model": {"path": data["model"], "sha256": data["weights"]}} if data.get("weights") else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", help="a `crysgen sample` folder with a target column, or a CrystalSet .npz")
    p.add_argument("--targets", required=True, help="target CrystalSet .npz (e.g. the mp_20 test split)")
    p.add_argument("--name", required=True, help="model name in the result file name")
    p.add_argument("--dataset", required=True, help="dataset name in the result file name, e.g. mp_20")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--validity", choices=VALIDITY, default="cdvae")
    p.add_argument("--no-metre", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="first N samples only (a quick run)")
    args = p.parse_args()

    samples = load_csp_samples(args.samples)[: args.limit]
    res = score_csp(samples, CrystalSet.load(args.targets), validity=args.validity,
                    metre=not args.no_metre, workers=args.workers)
    out = ROOT / "benchmarks" / "results" / f"csp_{args.name}_{args.dataset}.json"
    rows_path = out.with_suffix(".targets.csv")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(res.rows[0]))
    writer.writeheader()
    writer.writerows(res.rows)
    write_text_atomic(rows_path, buf.getvalue())
    result = {
        "name": args.name, "dataset": args.dataset, "samples": str(args.samples),
        "targets": str(args.targets),
        "matcher": MATCHER,
        "measured": {"match_rate_percent": 100 * res.match_rate, "rmse": res.rmse, "crmse": res.crmse,
                     "metre_percent": 100 * res.metre, "metre_rmse": res.metre_rmse,
                     "metre_crmse": res.metre_crmse, **{k: v for k, v in res.summary().items()
                                                        if k not in ("match_rate", "rmse", "crmse", "metre",
                                                                     "metre_rmse", "metre_crmse")}},
        "by_num_sites": by_num_sites(res.rows),
        "per_target_rows": rows_path.name,
        **sampled_model(Path(args.samples)),
        "published": {"note": "published figures of other models, not measured here (match rate %, RMSE)",
                      "k": res.k, "rows": published_csp(args.dataset, res.k)},
        **stamp(),
    }
    write_text_atomic(out, json.dumps(result, indent=1, default=str, allow_nan=True) + "\n")
    print(f"match rate {100 * res.match_rate:.2f} %, RMSE {res.rmse:.4f}, cRMSE {res.crmse:.4f}, "
          f"METRe {100 * res.metre:.2f} % over {res.n_targets} targets (k = {res.k}); wrote {out}")


if __name__ == "__main__":
    main()
