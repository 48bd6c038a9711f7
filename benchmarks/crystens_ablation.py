"""The CrysTens ablation table of issue 17 -> benchmarks/results/crystens_ablation_mp_20.json.

Assembles, for every row of each named ablation lease (``benchmarks/gpu_session.sh ablation``: the
rows of one lease share one UNet size and train for the same minutes, all at once on one GPU), what
that lease measured, from the row's folder ``runs/<lease>/<row>/``: its training record (steps
reached, samples/s, last losses, the UNet's channels and, where its model came back, its parameter
count) and its scores where they came back (``eval_*_mp_20*.json``: the suite without stability;
``csp_*_mp_20*.json``: CSP on the seeded 1,000 test compositions or the first ``n_targets`` of them;
``diffusion_*_mp_20*.json``:
Table 1/2). A row without a score file is listed as not scored, never filled in. Nothing is
measured here: this script only gathers committed result files.

A lease may also hold a continuation of an earlier lease's row (``crysgen train diffusion --init``):
its ``steps`` count every step behind its weights, ``steps_before_init`` those of the model it
began from (``train_summary.json``'s ``data.init.step``), ``minutes`` only its own run.

``ema_weight_of_first_step`` is decay ** steps: the share of the (nearly random) weights after the
first step still inside the exported EMA weights of a run whose EMA had no warm-up.

Usage: python benchmarks/crystens_ablation.py --lease crystens_ablation_13min \
    --lease crystens_ablation_8min_unet6m
"""

from __future__ import annotations

import argparse
import csv
import json
import math
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


def parameters(model: Path) -> int | None:
    """Number of weights in a model directory's ``weights.safetensors`` (None: no model)."""
    path = model / "weights.safetensors"
    if not path.is_file():
        return None
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def steps_behind(init: dict | None) -> int:
    """Every step behind a continuation's start weights: ``crysgen train diffusion --init`` records
    the start model's own steps and, nested under ``init``, those it began from in turn."""
    return int(init["step"]) + steps_behind(init.get("init")) if init else 0


def training(run: Path) -> dict:
    """Steps, time, speed, last losses and network size of a row's training record."""
    summary = json.loads((run / "train_summary.json").read_text())
    last = summary["runs"][-1]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    val = [r for r in rows if r.get("val_loss")]
    config = yaml.safe_load((run / "config.yaml").read_text())
    optim = config["optim"]
    ema = {"ema_decay": optim["ema_decay"], "ema_warmup": optim.get("ema_warmup", False)}
    if not ema["ema_warmup"]:
        ema["ema_weight_of_first_step"] = round(optim["ema_decay"] ** summary["global_step"], 3)
    behind = steps_behind(summary["data"].get("init"))  # a continuation (--init)
    return {"steps": summary["global_step"] + behind, "steps_before_init": behind,
            "steps_this_run": summary["global_step"], "minutes": round(last["seconds"] / 60, 1),
            "unet_channels": config["unet"]["block_out_channels"], "parameters": parameters(run / "model"),
            **ema,
            "samples_per_s": last["samples_per_s"], "batch_size": config["optim"]["batch_size"],
            "final_train_loss": summary.get("final_train_loss"),
            "val_loss": [[int(r["step"]) + 1, float(r["val_loss"])] for r in val],
            "device": last.get("device")}


def rel(path: Path) -> str:
    """A path as the README links it (relative to the repository)."""
    return str(path.relative_to(ROOT))


def one(run: Path, kind: str) -> Path | None:
    """The row folder's ``<kind>_*_mp_20*.json`` score file (a suffix names where or on how many it
    ran, e.g. ``_cpu``; None: not scored); two are an error."""
    found = sorted(run.glob(f"{kind}_*_mp_20*.json"))
    if len(found) > 1:
        raise SystemExit(f"{run}: more than one {kind} score file: {', '.join(p.name for p in found)}")
    return found[0] if found else None


def scores(run: Path) -> dict:
    """The row's score files that exist, reduced to their headline figures; a suite that refused
    the row's samples because none decoded (its ``score.log``) is said so."""
    out: dict = {}
    ev = one(run, "eval")
    log = run / "score.log"
    if ev is None and log.is_file() and "holds no .cif files" in log.read_text():
        out["eval"] = {"struct_valid": 0.0, "why": "no de novo sample decoded, so the suite had nothing "
                       "to score (score.log)"}
    if ev is not None:
        m = json.loads(ev.read_text())["metrics"]
        out["eval"] = {k: m[k]["value"] for k in EVAL_KEYS if k in m} | {"file": rel(ev)}
        if "n_samples" in m:  # 1,000 on the GPU; a CPU scoring may take fewer
            out["eval"]["n_samples"] = m["n_samples"]["value"]
    cs = one(run, "csp")
    if cs is not None:
        m = json.loads(cs.read_text())["measured"]
        out["csp"] = {"match_rate_percent": m["match_rate_percent"], "rmse": m["rmse"],
                      "n_targets": m["n_targets"], "n_invalid_samples": m["n_invalid_samples"],
                      "file": rel(cs)}
    di = one(run, "diffusion")
    if di is not None:
        d = json.loads(di.read_text())
        out["table1_2"] = d["table1_2"] | {"file": rel(di)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lease", required=True, action="append",
                   help="folder under benchmarks/results/runs/ holding one lease's rows (repeatable)")
    args = p.parse_args()
    rows = []
    for name in args.lease:
        lease = RESULTS / "runs" / name
        found = [row for row in ROWS if (lease / row).is_dir()]
        if not found:
            raise SystemExit(f"no ablation rows under {lease}")
        for row in found:
            got = scores(lease / row)
            rows.append({"lease": name, "row": row, "what": ROWS[row], "training": training(lease / row),
                         **got,
                         "scored": sorted(k for k in ("eval", "csp", "table1_2") if k in got)})
    out = {"leases": args.lease, "rows": rows,
           "note": "rows trained side by side on one GPU for the same minutes; a row missing a score "
                   "was not scored in the lease (see the row's score.log)"} | stamp()
    path = RESULTS / "crystens_ablation_mp_20.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    for r in rows:
        t = r["training"]
        struct = r.get("eval", {}).get("struct_valid", "n/a")
        csp_rate = r.get("csp", {}).get("match_rate_percent", "n/a")
        print(f"{r['lease']:30s} {r['row']:22s} {t['steps']:6d} steps {t['samples_per_s']:7.1f} samples/s  "
              f"struct {struct}  CSP {csp_rate}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
