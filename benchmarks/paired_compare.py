"""Two models' evaluations of paired samples, crystal by crystal -> benchmarks/results/paired_<name>.json.

Samples drawn with the same seed and -n (``crysgen sample``'s default seed) have the same site
counts and noise, so each crystal of model A has a twin of model B. McNemar's exact test on the
crystals where they disagree (:func:`crysgen.evaluation.comparison.compare_reports`) resolves a
difference in COV-P (or validity) of a point or less on 10,000 samples, overall and by site count.

    python benchmarks/paired_compare.py eval_atom_diffusion_c24sites6_10k_carbon_24_cpu \\
        eval_atom_diffusion_c24cont6_10k_carbon_24_cpu --name c24sites6_vs_cont6 --work benchmarks/.work

Each NAME is a result file ``benchmarks/results/NAME.json`` whose report folder (``--work``/NAME/report)
still exists, or whose ``structures.csv`` was kept as ``benchmarks/results/reports/NAME_structures.csv.gz``
(``--keep`` writes that copy); the two must score the same dataset with the same samples' ids.

Two CSP sweeps (``atom_csp_sweep_*.json`` with ``per_target`` rows: one sample per target, the same
targets and seed) are paired target by target on ``csp_matched`` instead, and on ``cell_shape_matched``
where both rows keep ``per_target_cell`` (``--row I`` of each file,
``--row-b J`` for B where its row differs,
default 0; site-count bins by the target's sites)::

    python benchmarks/paired_compare.py atom_csp_sweep_mp_20_bundled_cpu atom_csp_sweep_mp_20_site13k_cpu \
        --name csp_bundled_vs_site13k
"""

from __future__ import annotations

import argparse
import gzip
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from crysgen.crystal_set import part_path
from crysgen.evaluation.comparison import PAIRED_COLUMNS, compare_outcomes, compare_reports
from provenance import ROOT, write_result

KEPT = ROOT / "benchmarks" / "results" / "reports"


def report_of(name: str, work: Path, *, keep: bool) -> Path:
    """The structures.csv of result NAME: its report folder under ``work``, else the kept copy."""
    table, kept = work / name / "report" / "structures.csv", KEPT / f"{name}_structures.csv.gz"
    if table.exists():
        if keep:
            tmp = part_path(kept)
            tmp.write_bytes(gzip.compress(table.read_bytes(), mtime=0))
            tmp.replace(kept)
            print(f"kept {kept}")
        return table
    if kept.exists():
        return kept
    raise SystemExit(f"neither {table} nor {kept}: re-make the report with the command in {name}.json")


def csp_outcomes(result: dict, row: int, name: str) -> dict[str, tuple[bool | None, int]]:
    """A CSP sweep's row ``row`` as target id -> (matched, the target's sites)."""
    rows = result["rows"]
    if not 0 <= row < len(rows) or "per_target" not in rows[row]:
        raise SystemExit(f"{name} has no row {row} with per-target outcomes (sweeps written before "
                         "they were kept have none: run the sweep again)")
    return {t: (rms is not None, int(sites)) for t, (sites, rms) in rows[row]["per_target"].items()}


def cell_outcomes(result: dict, row: int) -> dict[str, tuple[bool | None, int]] | None:
    """A CSP sweep row's cell shape matches as target id -> (matched, the target's sites), or None
    where the row has no ``per_target_cell`` (sweeps written before it was kept)."""
    r = result["rows"][row]
    if "per_target_cell" not in r:
        return None
    sites = {t: int(n) for t, (n, _) in r["per_target"].items()}
    return {t: (bool(m), sites[t]) for t, (_, m) in r["per_target_cell"].items()}


def volume_errors(row_a: dict, row_b: dict) -> dict:
    """Two sweep rows' |ln(V_sample / V_target)| on the targets where both have a sample: medians
    and Wilcoxon's signed-rank test on the pairs (two-sided)."""
    from scipy.stats import wilcoxon

    a, b = row_a["per_target_cell"], row_b["per_target_cell"]
    both = sorted(t for t in a.keys() & b.keys() if a[t][0] is not None and b[t][0] is not None)
    ea, eb = np.array([a[t][0] for t in both]), np.array([b[t][0] for t in both])
    return {"n": len(both), "median_a": float(np.median(ea)), "median_b": float(np.median(eb)),
            "b_smaller_share": float(np.mean(eb < ea)), "p_value": float(wilcoxon(ea, eb).pvalue),
            "test": "Wilcoxon signed-rank, two-sided"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name_a", help="model A's result file (benchmarks/results/NAME.json)")
    p.add_argument("name_b", help="model B's")
    p.add_argument("--name", required=True, help="output: paired_<name>.json")
    p.add_argument("--columns", default="cov_precise,struct_valid",
                   help=f"comma-separated, of {', '.join(PAIRED_COLUMNS)} (%(default)s)")
    p.add_argument("--row", type=int, default=0, help="CSP sweeps: the row (sampler setting) of each (0)")
    p.add_argument("--row-b", type=int, default=None,
                   help="CSP sweeps: model B's row, where it differs from A's (default --row)")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".work"))
    p.add_argument("--keep", action="store_true",
                   help="copy each report's structures.csv, gzipped, to benchmarks/results/reports/ so "
                        "that later comparisons with these samples need no --work folder")
    args = p.parse_args()
    work = Path(args.work)
    results = {n: json.loads((ROOT / "benchmarks" / "results" / f"{n}.json").read_text())
               for n in (args.name_a, args.name_b)}
    datasets = {r["dataset"] for r in results.values()}
    if len(datasets) != 1:
        raise SystemExit(f"the two score different datasets: {sorted(datasets)}")
    if all("rows" in r for r in results.values()):  # two CSP sweeps
        rows = {args.name_a: args.row, args.name_b: args.row if args.row_b is None else args.row_b}
        a, b = (csp_outcomes(results[n], rows[n], n) for n in (args.name_a, args.name_b))
        comparisons = {"csp_matched": asdict(compare_outcomes(a, b, "csp_matched"))}
        ca, cb = (cell_outcomes(results[n], rows[n]) for n in (args.name_a, args.name_b))
        if ca is not None and cb is not None:  # the lattice alone, where both rows kept it
            comparisons["cell_shape_matched"] = asdict(compare_outcomes(ca, cb, "cell_shape_matched"))
            comparisons["cell_volume_error"] = volume_errors(*(results[n]["rows"][rows[n]]
                                                               for n in (args.name_a, args.name_b)))
    else:
        reports = [report_of(n, work, keep=args.keep) for n in (args.name_a, args.name_b)]
        comparisons = {c: asdict(compare_reports(*reports, column=c)) for c in args.columns.split(",")}
    for c, d in comparisons.items():
        if "overall" not in d:  # the volume errors
            print(f"{c}: median A {d['median_a']:.4f}, B {d['median_b']:.4f}, p {d['p_value']:.3g}")
            continue
        o = d["overall"]
        print(f"{c}: A {100 * o['rate_a']:.2f} %, B {100 * o['rate_b']:.2f} %, only A {o['only_a']}, "
              f"only B {o['only_b']}, p {o['p_value']:.3g}")
    write_result(f"paired_{args.name}", {
        "a": {"file": args.name_a, "model": results[args.name_a]["model"]},
        "b": {"file": args.name_b, "model": results[args.name_b]["model"]},
        **({"rows": {"a": args.row, "b": args.row if args.row_b is None else args.row_b}}
           if all("rows" in r for r in results.values()) else {}),
        "dataset": datasets.pop(),
        "test": "McNemar's exact test (two-sided binomial on the discordant pairs)",
        "comparisons": comparisons,
    })


if __name__ == "__main__":
    main()
