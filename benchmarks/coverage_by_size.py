"""Which generated crystals COV-P misses, by number of sites.

COV-P counts a generated crystal when a reference crystal lies within the dataset's cut-offs by
structure and by composition fingerprint. ``crysgen evaluate`` writes each sample's distances and
whether it counts (``cov_struct_distance``, ``cov_comp_distance``, ``cov_precise`` in the report's
``structures.csv``). This re-reads evaluations and splits COV-P by site count, beside how the
generated and the reference crystals spread over those sizes, so that a model whose large cells
are off the reference shows it.

    python benchmarks/coverage_by_size.py eval_atom_diffusion_c24cont2_rescore_carbon_24_cpu \\
        --dataset carbon_24 --name carbon_24

Each NAME is a result file ``benchmarks/results/NAME.json`` whose report folder
(``--work``/NAME/report) still exists and has the ``cov_precise`` column (evaluations from this
commit on). Writes ``benchmarks/results/coverage_by_size_<name>.json`` and a plot (``.png``).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.coverage import precision_by_sites, site_bin_labels, site_bins
from provenance import ROOT, write_result


def by_size(rows: list[dict[str, str]], reference_sites: np.ndarray) -> list[dict]:
    """COV-P and the size shares per site-count bin.

    Args:
        rows: ``structures.csv`` rows (every sample; a row without ``cov_precise`` is not counted,
            as COV-P does not count a crystal without fingerprints).
        reference_sites: int (R,) the reference crystals' site counts.

    Returns:
        One dict per bin: sites, generated (count), generated_share, reference_share, precision
        (share of that bin's samples that COV-P counts; None for an empty bin).
    """
    sites = np.array([int(r["num_sites"] or 0) for r in rows])  # 0: not decoded, in no bin
    precise = np.array([r.get("cov_precise") == "True" for r in rows])
    within = {b["sites"]: b for b in precision_by_sites(sites, precise)}
    gen_bin, ref_bin = site_bins(sites), site_bins(np.asarray(reference_sites))
    out = []
    for k, label in enumerate(site_bin_labels()):
        if label not in within and not (ref_bin == k).any():
            continue
        b = within.get(label, {"n": 0, "precision": None})
        out.append({"sites": label, "generated": b["n"], "generated_share": float((gen_bin == k).mean()),
                    "reference_share": float((ref_bin == k).mean()), "precision": b["precision"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+", help="result files (benchmarks/results/NAME.json)")
    p.add_argument("--dataset", required=True, help="their reference split: WORK/<dataset>_test.npz")
    p.add_argument("--name", required=True, help="output: coverage_by_size_<name>.json/.png")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".work"))
    args = p.parse_args()
    work = Path(args.work)
    ref = CrystalSet.load(work / f"{args.dataset}_test.npz").num_sites
    files = {}
    for name in args.names:
        result = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        if result["dataset"] != args.dataset:  # the size shares would be another split's
            raise SystemExit(f"{name} scores {result['dataset']}, not {args.dataset}")
        table = work / name / "report" / "structures.csv"
        if not table.exists():
            raise SystemExit(f"{table} is missing: re-make it with the command in {name}.json")
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if "cov_precise" not in rows[0]:
            raise SystemExit(f"{table} has no cov_precise column: re-score it with this commit's evaluate")
        overall = float(np.mean([r.get("cov_precise") == "True" for r in rows]))
        if abs(overall - result["metrics"]["cov_precision"]["value"]) > 1e-9:
            raise SystemExit(f"{name}: its rows give COV-P {overall}, the file "
                             f"{result['metrics']['cov_precision']['value']}: not the same evaluation")
        files[name] = {"cov_precision": overall, "n": len(rows), "bins": by_size(rows, ref)}
    plot = ROOT / "benchmarks" / "results" / f"coverage_by_size_{args.name}.png"
    _plot(files, plot)
    write_result(f"coverage_by_size_{args.name}",
                 {"dataset": args.dataset, "reference": f"{args.dataset}_test.npz ({len(ref)} crystals)",
                  "files": files, "plot": plot.name,
                  "command": "python benchmarks/coverage_by_size.py " + " ".join(args.names)
                  + f" --dataset {args.dataset} --name {args.name}"})


def _plot(files: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, f in files.items():
        labels = [b["sites"] for b in f["bins"]]
        ax1.plot(labels, [np.nan if b["precision"] is None else 100 * b["precision"] for b in f["bins"]],
                 "o-", label=name)
        ax2.plot(labels, [100 * b["generated_share"] for b in f["bins"]], "o-", label=name)
    first = next(iter(files.values()))
    ax2.plot([b["sites"] for b in first["bins"]], [100 * b["reference_share"] for b in first["bins"]],
             "k--", label="reference")
    ax1.set(xlabel="sites", ylabel="COV-P within the bin (%)", ylim=(0, 100))
    ax2.set(xlabel="sites", ylabel="share of crystals (%)")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
