"""The CrysTens ablation table of issue 17 -> benchmarks/results/crystens_ablation_mp_20.json.

Assembles, for every row of one ablation lease (``benchmarks/gpu_session.sh ablation``: each row a
26.6 M-parameter UNet trained for the same minutes, all rows at once on one GPU), what that lease
measured: the row's training record (``runs/<lease>/<row>/``: steps reached, samples/s, last
losses) and its scores where they came back (``eval_<row>_mp_20.json``: the suite without
stability; ``csp_<row>_mp_20.json``: CSP on the seeded 1,000 test compositions;
``diffusion_<row>_mp_20.json``: Table 1/2). A row without a score file is listed as not scored,
never filled in. Nothing is measured here: this script only gathers committed result files.

Usage: python benchmarks/crystens_ablation.py --lease crystens_ablation_13min
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import yaml

from provenance import ROOT, stamp

RESULTS = ROOT / "benchmarks" / "results"
ROWS = {
    "abl_s52_ddpm": "the paper's layout: conventional cells, S = 52 (64 x 64), Z only, DDPM",
    "abl_s32_ddpm": "as-given cells, S = 32 + element codes, DDPM",
    "abl_s32_edm": "as-given cells, S = 32 + element codes, EDM",
    "abl_s32_edm_regions": "as-given cells, S = 32 + element codes, EDM + region loss weights",
}
EVAL_KEYS = ("struct_valid", "comp_valid", "cov_recall", "cov_precision", "wdist_density", "wdist_num_elems")


def training(run: Path) -> dict:
    """Steps, time, speed and last losses of a row's training record."""
    summary = json.loads((run / "train_summary.json").read_text())
    last = summary["runs"][-1]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    val = [r for r in rows if r.get("val_loss")]
    config = yaml.safe_load((run / "config.yaml").read_text())
    return {"steps": summary["global_step"], "minutes": round(last["seconds"] / 60, 1),
            "samples_per_s": last["samples_per_s"], "batch_size": config["optim"]["batch_size"],
            "final_train_loss": summary.get("final_train_loss"),
            "val_loss": [[int(r["step"]) + 1, float(r["val_loss"])] for r in val],
            "device": last.get("device")}


def scores(row: str, run: Path) -> dict:
    """The row's score files that exist, reduced to their headline figures; a suite that refused
    the row's samples because none decoded (its ``score.log``) is said so."""
    out: dict = {}
    ev = RESULTS / f"eval_{row}_mp_20.json"
    log = run / "score.log"
    if not ev.is_file() and log.is_file() and "holds no .cif files" in log.read_text():
        out["eval"] = {"struct_valid": 0.0, "why": "no de novo sample decoded, so the suite had nothing "
                       "to score (score.log)"}
    if ev.is_file():
        m = json.loads(ev.read_text())["metrics"]
        out["eval"] = {k: m[k]["value"] for k in EVAL_KEYS if k in m} | {"file": ev.name}
    cs = RESULTS / f"csp_{row}_mp_20.json"
    if cs.is_file():
        m = json.loads(cs.read_text())["measured"]
        out["csp"] = {"match_rate_percent": m["match_rate_percent"], "rmse": m["rmse"],
                      "n_targets": m["n_targets"], "n_invalid_samples": m["n_invalid_samples"],
                      "file": cs.name}
    di = RESULTS / f"diffusion_{row}_mp_20.json"
    if di.is_file():
        d = json.loads(di.read_text())
        out["table1_2"] = d["table1_2"] | {"file": di.name}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lease", required=True, help="folder under benchmarks/results/runs/ holding the rows")
    args = p.parse_args()
    lease = RESULTS / "runs" / args.lease
    rows = []
    for row, what in ROWS.items():
        if not (lease / row).is_dir():
            continue
        got = scores(row, lease / row)
        rows.append({"row": row, "what": what, "training": training(lease / row), **got,
                     "scored": sorted(k for k in ("eval", "csp", "table1_2") if k in got)})
    if not rows:
        raise SystemExit(f"no ablation rows under {lease}")
    out = {"lease": args.lease, "rows": rows,
           "note": "rows trained side by side on one GPU for the same minutes; a row missing a score "
                   "was not scored in the lease (see the row's score.log)"} | stamp()
    path = RESULTS / "crystens_ablation_mp_20.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    for r in rows:
        t = r["training"]
        struct = r.get("eval", {}).get("struct_valid", "n/a")
        csp_rate = r.get("csp", {}).get("match_rate_percent", "n/a")
        print(f"{r['row']:22s} {t['steps']:6d} steps {t['samples_per_s']:7.1f} samples/s  "
              f"struct {struct}  CSP {csp_rate}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
