"""Are the crystals `crysgen sample --repair` repaired as stable as the rest? -> repaired_stability_NAME.json

`--repair` samples again only the samples with two sites closer than 0.5 Å; the rest of the draw
is the plain one bit for bit. This scores the repaired crystals alone and, beside them, a seeded
control of as many unrepaired crystals of the same folder (same model, sampler and scoring):
structural and compositional validity, the CHGNet relaxation (RMSD, convergence) and the energy
above the reference hull (training split + test split), with Fisher's exact test on the stable
shares and the Mann-Whitney U test on E_hull::

    python benchmarks/repaired_stability.py /tmp/cfgpu/cfrep --plain eval_cfL8d4_10k_mp_20_cpu \\
        --name cfL8d4_rep10k --dataset mp_20 --work /tmp/evA --cache-dir /tmp/evA/cache

The control holds one unrepaired sample with as many sites per repaired one (the colliding samples
gather in some cell sizes). It cannot match the rest of what made a sample collide (its
composition, its structure): a gap between the groups mixes what the repair costs with what sets
those samples apart. The repaired samples are the rows of ``samples.csv`` with ``repair_rounds``
> 0 (folders sampled since that column exists); for an older folder, ``--plain`` names the plain
draw of the same seed and settings: a `crysgen sample` folder, or an evaluation result whose
``structures.csv`` is still in ``--work`` or kept under ``benchmarks/results/reports/`` (see
``paired_compare.py``), and the repaired samples are those it has structurally invalid. ``--work``
holds ``<dataset>_train_partial.npz`` (else ``_train.npz``) and ``<dataset>_test.npz``.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from crysgen.evaluation.comparison import read_outcomes
from crysgen.evaluation.suite import EvalOptions, evaluate
from paired_compare import report_of
from provenance import write_result

STABLE = ("stable_e_hull_le_0", "stable_e_hull_le_0.1")
KEPT_METRICS = ("struct_valid", "comp_valid", *STABLE, "median_e_above_hull", "mean_relax_rmsd",
                "relax_converged")


def _samples(folder: Path) -> list[dict[str, str]]:
    """The rows of a `crysgen sample` folder's samples.csv."""
    with (folder / "samples.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def repaired_ids(rows: list[dict[str, str]], plain: str | None, work: Path) -> list[str]:
    """Ids of the repaired samples: ``repair_rounds`` > 0, else invalid in the plain draw ``plain``."""
    if any(r.get("repair_rounds") for r in rows):
        return [r["id"] for r in rows if r["repair_rounds"] not in ("", "0")]
    if plain is None:
        raise SystemExit("this folder's samples.csv has no repair_rounds (sampled before the column "
                         "existed): name the plain draw with --plain")
    folder = Path(plain)
    if (folder / "samples.csv").exists():
        valid = {r["id"] for r in _samples(folder) if r["structurally_valid"] == "1"}
    else:
        outcomes = read_outcomes(report_of(plain, work, keep=False), "struct_valid")
        valid = {i for i, (ok, _) in outcomes.items() if ok}
    return [r["id"] for r in rows if r["id"] not in valid]


def matched_control(chosen: list[str], rest: list[str], sites: dict[str, str], seed: int) -> list[str]:
    """One unrepaired sample per repaired one, of the same number of sites where one is left.

    The samples that collide are not a random subset (they gather in some cell sizes), so the
    control is matched on the number of sites, drawn without replacement (seeded); a size with no
    unrepaired sample left takes one of any size.
    """
    rng = np.random.default_rng(seed)
    pool: dict[str, list[str]] = {}
    for i in rest:
        pool.setdefault(sites[i], []).append(i)
    out = []
    for i in chosen:
        same = pool.get(sites[i]) or [j for ids in pool.values() for j in ids]
        pick = same[int(rng.integers(len(same)))]
        pool[sites[pick]].remove(pick)
        out.append(pick)
    return sorted(out)


def _summary(ev: Any) -> dict[str, Any]:
    """The kept metrics of one evaluation, and its per-structure E_hull (eV/atom, NaN: none)."""
    metrics = {k: ev.metrics[k] for k in KEPT_METRICS if k in ev.metrics}
    e_hull = np.array([float(r["e_above_hull_eV_atom"]) if r.get("e_above_hull_eV_atom") not in (None, "")
                       else np.nan for r in ev.rows])
    return {"metrics": metrics, "e_above_hull": e_hull}


def main() -> None:
    from scipy.stats import fisher_exact, mannwhitneyu

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", help="a `crysgen sample --repair` folder")
    p.add_argument("--plain", help="the plain draw (older folders without repair_rounds)")
    p.add_argument("--name", required=True)
    p.add_argument("--dataset", default="mp_20", choices=["mp_20", "perov_5", "carbon_24"])
    p.add_argument("--work", type=Path, default=Path("benchmarks/.work"))
    p.add_argument("--control-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--relax-steps", type=int, default=300)
    p.add_argument("--relax-time-limit", type=float, default=120.0)
    p.add_argument("--cache-dir")
    args = p.parse_args()

    folder = Path(args.samples)
    rows = [r for r in _samples(folder) if r["cif"]]
    repaired = set(repaired_ids(rows, args.plain, args.work))
    with_cif = {r["id"]: folder / r["cif"] for r in rows}
    chosen = sorted(i for i in repaired if i in with_cif)
    if not chosen:
        raise SystemExit(f"no repaired sample with a CIF in {folder}")
    sites = {r["id"]: r["num_sites"] for r in rows}
    control = matched_control(chosen, sorted(i for i in with_cif if i not in repaired), sites,
                              args.control_seed)
    train = args.work / f"{args.dataset}_train_partial.npz"
    train = train if train.exists() else args.work / f"{args.dataset}_train.npz"
    options = EvalOptions(metrics=("validity", "novelty", "stability"), dataset=args.dataset,
                          workers=args.workers, device=args.device, relax_steps=args.relax_steps,
                          relax_time_limit_s=args.relax_time_limit, cache_dir=args.cache_dir)
    groups = {}
    for label, ids in (("repaired", chosen), ("control", control)):
        print(f"{label}: {len(ids)} crystals")
        groups[label] = _summary(evaluate([with_cif[i] for i in ids], train,
                                          args.work / f"{args.dataset}_test.npz", options))
    tests = {}
    for key in STABLE:
        if all(key in g["metrics"] for g in groups.values()):
            table = [[round(g["metrics"][key]["value"] * g["metrics"][key]["n"]),
                      g["metrics"][key]["n"] - round(g["metrics"][key]["value"] * g["metrics"][key]["n"])]
                     for g in groups.values()]
            tests[key] = {"counts_stable_not": table, "fisher_p": float(fisher_exact(table).pvalue)}
    e = [g["e_above_hull"][np.isfinite(g["e_above_hull"])] for g in groups.values()]
    if all(len(x) for x in e):
        tests["e_above_hull_mannwhitney_p"] = float(mannwhitneyu(*e).pvalue)
    result = {
        "samples": str(folder), "plain": args.plain, "dataset": args.dataset,
        "repaired": len(chosen), "control": len(control), "control_seed": args.control_seed,
        "control_matched_on": "number of sites",
        "groups": {k: {"metrics": g["metrics"],
                       "e_above_hull_quartiles": [float(q) for q in
                                                  np.nanpercentile(g["e_above_hull"], [25, 50, 75])]}
                   for k, g in groups.items()},
        "tests": tests,
        "options": asdict(options),
        "ids": {"repaired": chosen, "control": [str(i) for i in control]},
    }
    write_result(f"repaired_stability_{args.name}", result, args.device)


if __name__ == "__main__":
    main()
