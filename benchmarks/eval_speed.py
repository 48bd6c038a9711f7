"""Speed of the evaluation suite, from the per-family wall times of the model evaluations.

Reads every ``benchmarks/results/eval_<model>_<dataset>*.json`` written by ``eval_model.py``
(sanity files excluded) and writes ``benchmarks/results/eval_speed.json``: for each file, the
machine, device and workers it ran with, and per metric family the seconds and the throughput
in samples/s (samples submitted to the suite; the stability family also per structure relaxed
to the end, i.e. with an RMSD). The issue's target — the full suite on 1,000 structures in
≤ 10 minutes on the GPU machine — is checked where a GPU file with the stability family exists.

Usage: python benchmarks/eval_speed.py
"""

from __future__ import annotations

import json

from codec import ROOT, stamp
from crysgen.crystal_set import write_text_atomic

RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    runs = []
    for path in sorted(RESULTS.glob("eval_*.json")):
        if path.name.startswith(("eval_sanity", "eval_speed")):
            continue
        d = json.loads(path.read_text())
        n = d["metrics"]["n_samples"]["value"]
        valid = round(d["metrics"].get("struct_valid", {}).get("value", float("nan")) * n)
        families = {}
        for fam, sec in d["seconds"].items():
            row = {"seconds": sec, "samples_per_s": round(n / sec, 2) if sec else None}
            if fam == "stability" and sec:
                relaxed = d["metrics"].get("mean_relax_rmsd", {}).get("n", valid)
                row["relaxed_structures"] = relaxed
                row["relaxed_structures_per_s"] = round(relaxed / sec, 3)
            families[fam] = row
        total = d["seconds"].get("total")
        gpu = d["options"].get("device", "cpu").startswith("cuda")
        runs.append({"file": str(path.relative_to(ROOT)), "model": d["options"].get("name"),
                     "dataset": d["dataset"], "n_samples": n, "structurally_valid": valid,
                     "device": d["options"].get("device"), "workers": d["options"].get("workers"),
                     "relax_workers": d["options"].get("relax_workers") or d["options"].get("workers"),
                     "relax_steps": d["options"].get("relax_steps"),
                     "machine": d.get("machine"), "commit": d.get("commit"), "families": families,
                     "stability_included": "stability" in d["seconds"],
                     "target_10_min_on_gpu": (total <= 600 if gpu and "stability" in d["seconds"] else None)})
    out = {"runs": runs, "definition": "samples/s = samples submitted / family wall seconds; "
           "relaxed_structures_per_s = structures relaxed to the end (with an RMSD; cells refused as "
           "degenerate and failed relaxations not counted) / stability seconds"} | stamp()
    path = RESULTS / "eval_speed.json"
    write_text_atomic(path, json.dumps(out, indent=1, sort_keys=True) + "\n")
    for r in runs:
        print(r["file"], {k: v["samples_per_s"] for k, v in r["families"].items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
