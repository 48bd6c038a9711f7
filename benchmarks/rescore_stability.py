"""Recount the stable and S.U.N. rates of an evaluation from its per-structure rows.

When the stability rules change (``stability.stability_rates``) after a GPU evaluation, the
per-structure energies above hull, convergence flags and uniqueness/novelty in the report's
``structures.csv`` are enough to recount them with the library function; no relaxation is
repeated. Replaces the ``stable_*`` and ``sun_*`` metrics of the result JSON and records the
recount (command, commit, date) under ``rescored``.

With ``--potential sevennet`` it rates the report's relaxed structures (``relaxed.extxyz``,
kept by ``crysgen evaluate --stability``) with the second potential instead
(:func:`crysgen.evaluation.suite.rescore_report`): SevenNet-0 static energies of them and of the
hull of ``--train`` + ``--reference``, its E_hull column in ``structures.csv``, its stable and
S.U.N. rates and the agreement with CHGNet in ``metrics.json``; the result JSON, when given,
gets the new metrics.

With ``--hull all`` it places every rated row on a new CHGNet hull of ``--train`` and the whole
``--reference`` split (the suite's default since ``EvalOptions.hull_reference``; files written
before it used eval_model.py's seeded ``--reference-limit`` subset of the test split), from the
row's own relaxed energy (``energy_per_atom``): CHGNet static energies of every reference crystal
on the CPU (cached under ``--cache-dir``: ~25 minutes on 2 cores for mp_20's train + test, then
seconds for every further report) and the elemental terminals as the suite relaxes them.
``structures.csv``'s E_hull column and the result JSON's stable and S.U.N. rates, E_hull
mean/median and ``hull_reference`` are replaced; the values before are kept under ``rescored_hull``.

With ``--novelty TRAIN.npz --samples DIR`` it recounts novelty against another training set (e.g.
a model trained on the train and validation splits, evaluated against the train split alone, so
that its hull matches the other models'): every structurally valid sample's CIF in ``DIR/cifs``
is matched to ``TRAIN.npz`` with the suite's matcher, and ``structures.csv``'s ``novel`` column, the
result JSON's ``novel``, ``unique_and_novel`` and S.U.N. rates and its ``training_data`` are
replaced; the values before are kept under ``rescored_novelty``.

Usage::

    python benchmarks/rescore_stability.py benchmarks/.work/eval_gan_mp_20/report \
        benchmarks/results/eval_gan_mp_20.json
    python benchmarks/rescore_stability.py REPORT [RESULT.json] --potential sevennet \
        --train ../shared/data/mp_20/train.npz --reference ../shared/data/mp_20/test.npz
    python benchmarks/rescore_stability.py benchmarks/results/reports/eval_X_mp_20_structures.csv \
        benchmarks/results/eval_X_mp_20.json --hull all --train .gpuwork/mp_20_asis_train_partial.npz \
        --reference .gpuwork/mp_20_asis_test.npz
    python benchmarks/rescore_stability.py benchmarks/results/reports/eval_X_mp_20_structures.csv \
        benchmarks/results/eval_X_mp_20.json --novelty .gpuwork/mp_20_asis_train_partial_val.npz \
        --samples SAMPLE_DIR
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from codec import stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.evaluation.stability import IMPLAUSIBLE_BELOW
from crysgen.evaluation.suite import stable_metrics


def recount(rows: list[dict[str, str]]) -> dict[str, dict]:
    """The stable/S.U.N. metrics of the suite, from ``structures.csv`` rows (all samples)."""
    e = np.array([float(r["e_above_hull_eV_atom"]) if r.get("e_above_hull_eV_atom") else np.nan
                  for r in rows])
    converged = np.array([r.get("relax_converged") == "True" for r in rows])
    un = np.array([r.get("unique") == "True" and r.get("novel") == "True" for r in rows])
    with_novelty = any(r.get("unique") for r in rows)
    return stable_metrics(e, un if with_novelty else None, len(rows), converged)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", help="the evaluation's report folder (structures.csv), or with --hull its "
                   "structures.csv itself")
    p.add_argument("result", nargs="?", help="the result JSON to update")
    p.add_argument("--potential", default=None,
                   help="re-rate the relaxed structures with this potential (sevennet) instead")
    p.add_argument("--train", help="with --potential: the training CrystalSet the evaluation used")
    p.add_argument("--reference", help="with --potential: the reference CrystalSet it used")
    p.add_argument("--device", default=None, help="with --potential: cpu or cuda (default: the report's)")
    p.add_argument("--hull", choices=["all", "subset"], default=None,
                   help="place the rows on a CHGNet hull of --train and the whole --reference (all), or "
                        "check that the evaluation's own hull (subset: --reference-limit crystals of "
                        "--reference drawn with --seed) reproduces the file's E_hull (writes nothing)")
    p.add_argument("--reference-limit", type=int, default=1000, help="with --hull subset (eval_model.py's)")
    p.add_argument("--seed", type=int, default=0, help="with --hull subset: the evaluation's seed")
    p.add_argument("--cache-dir", default=None, help="with --hull: the reference energies' cache")
    p.add_argument("--novelty", default=None, metavar="TRAIN.npz",
                   help="recount novelty and S.U.N. against this training CrystalSet (needs --samples)")
    p.add_argument("--samples", default=None, help="with --novelty: the evaluated sample folder (cifs/)")
    args = p.parse_args()
    if args.novelty:
        renovel(args)
        return
    if args.potential:
        rescore_with(args)
        return
    if args.hull:
        rehull(args)
        return
    if not args.result:
        p.error("the result JSON is needed without --potential")
    with (Path(args.report) / "structures.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    result = json.loads(Path(args.result).read_text())
    if len(rows) != result["metrics"]["n_samples"]["value"]:
        raise SystemExit(f"{args.report}: {len(rows)} rows, the result has "
                         f"{result['metrics']['n_samples']['value']} samples")
    new = recount(rows)
    before = {k: result["metrics"].get(k, {}).get("value") for k in new}
    result["metrics"].update(new)
    result["rescored"] = {"from": str(Path(args.report) / "structures.csv"), "before": before,
                          "why": "stable now requires a converged relaxation and E_hull >= "
                                 f"{IMPLAUSIBLE_BELOW:g} eV/atom"} | stamp()
    write_text_atomic(Path(args.result), json.dumps(result, indent=1, default=float, sort_keys=True) + "\n")
    for k, v in new.items():
        print(f"{k}: {before[k]} -> {v['value']}")


def _rows_and_result(report: str, result_path: str) -> tuple[Path, list[dict[str, str]], dict]:
    """``structures.csv`` (given itself or its report folder), its rows and the result JSON, which
    must count as many samples as there are rows (SystemExit otherwise)."""
    path = Path(report)
    path = path / "structures.csv" if path.is_dir() else path
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    result = json.loads(Path(result_path).read_text())
    if len(rows) != result["metrics"]["n_samples"]["value"]:
        raise SystemExit(f"{path}: {len(rows)} rows, the result has "
                         f"{result['metrics']['n_samples']['value']} samples")
    return path, rows, result


def renovel(args: argparse.Namespace) -> None:
    """``--novelty``: novelty, unique-and-novel and S.U.N. against another training set."""
    from pymatgen.core import Structure

    from crysgen.evaluation.novelty import MATCHER_SETTINGS, novel_mask
    from crysgen.evaluation.suite import write_rows

    if not (args.samples and args.result):
        raise SystemExit("--novelty needs --samples and the result JSON")
    csv_path, rows, result = _rows_and_result(args.report, args.result)
    if not any(r.get("unique") for r in rows):
        raise SystemExit(f"{csv_path}: no novelty columns (the evaluation ran without novelty)")
    valid = [k for k, r in enumerate(rows) if r.get("struct_valid") == "True"]
    cifs = Path(args.samples) / "cifs"
    missing = [rows[k]["id"] for k in valid if not (cifs / f"{rows[k]['id']}.cif").is_file()]
    if missing:
        raise SystemExit(f"{cifs}: no CIF for {len(missing)} structurally valid rows (first: {missing[0]})")
    structures = [Structure.from_file(cifs / f"{rows[k]['id']}.cif") for k in valid]
    train = CrystalSet.load(args.novelty)
    novel = novel_mask(structures, train.to_structures())
    unique = np.array([rows[k]["unique"] == "True" for k in valid])
    for k, v in zip(valid, novel, strict=True):
        rows[k]["novel"] = str(bool(v))
    against = f"{Path(args.novelty).name} ({len(train)})"
    new = {"novel": {"value": float(novel.mean()), "n": len(valid), "matcher": MATCHER_SETTINGS,
                     "against": against},
           "unique_and_novel": {"value": float((unique & novel).mean()), "n": len(valid)}}
    new |= {k: v for k, v in recount(rows).items() if k.startswith("sun_")}
    before = {k: result["metrics"].get(k, {}).get("value") for k in new}
    result["metrics"].update(new)
    result.setdefault("rescored_novelty", []).append(
        {"from": str(csv_path), "samples": str(args.samples), "against": against,
         "training_data_before": result.get("training_data"), "before": before} | stamp())
    result["training_data"] = (f"{Path(args.novelty).name} ({len(train)} crystals; novelty and S.U.N. "
                               "against it, the hull as evaluated)")
    write_rows(csv_path, rows)
    write_text_atomic(Path(args.result), json.dumps(result, indent=1, default=float, sort_keys=True) + "\n")
    for k in new:
        print(f"{k}: {before[k]} -> {new[k]['value']}")


def rehull(args: argparse.Namespace) -> None:
    """``--hull all``: every rated row on the hull of the training set and the whole reference split."""
    from types import SimpleNamespace

    from pymatgen.core import Composition

    from crysgen.evaluation.stability import ReferenceHull, RelaxOptions
    from crysgen.evaluation.suite import rate_with, reference_subset, write_rows

    if not (args.train and args.reference and args.result):
        raise SystemExit("--hull needs --train, --reference and the result JSON")
    csv_path, rows, result = _rows_and_result(args.report, args.result)
    rated = [k for k, r in enumerate(rows) if r.get("energy_per_atom")]
    comps = [Composition(rows[k]["formula"]) for k in rated]
    needed = {el.symbol for c in comps for el in c.elements}
    reference = CrystalSet.load(args.reference)
    if args.hull == "subset":
        reference = reference_subset(reference, args.reference_limit, np.random.default_rng(args.seed))
    sets = [CrystalSet.load(args.train), reference]
    hull = ReferenceHull.build(sets, needed, options=RelaxOptions(device="cpu"), cache_dir=args.cache_dir,
                               progress=True)
    sub = [rows[k] for k in rated]
    in_file = np.array([float(r["e_above_hull_eV_atom"]) if r.get("e_above_hull_eV_atom") else np.nan
                        for r in sub])
    for r in sub:  # every rated row is placed again; a reason of the old hull must not stay
        r["e_above_hull_eV_atom"], r["e_above_hull_reason"] = "", ""
    converged = np.array([r.get("relax_converged") == "True" for r in sub] + [False] * (len(rows) - len(sub)))
    un = np.array([r.get("unique") == "True" and r.get("novel") == "True" for r in sub]
                  + [False] * (len(rows) - len(sub)))
    _, new = rate_with("chgnet", hull, [SimpleNamespace(composition=c) for c in comps],
                       [float(r["energy_per_atom"]) for r in sub], sub, len(rows), converged,
                       un if any(r.get("unique") for r in rows) else None)
    before = {k: result["metrics"].get(k, {}).get("value") for k in new}
    if args.hull == "subset":  # a check of this function against the evaluation: nothing is written
        placed = np.array([float(r["e_above_hull_eV_atom"]) if r["e_above_hull_eV_atom"] != "" else np.nan
                           for r in sub])
        both = np.isfinite(placed) & np.isfinite(in_file)
        print(f"rows placed in both: {int(both.sum())} of {len(sub)}; in one only: "
              f"{int((np.isfinite(placed) != np.isfinite(in_file)).sum())}; max |E_hull - file| "
              f"{np.abs(placed[both] - in_file[both]).max():.2e} eV/atom")
        for k in new:
            print(f"{k}: file {before[k]}, this hull {new[k]['value']}")
        return
    result["metrics"].update(new)
    result.setdefault("rescored_hull", []).append(
        {"from": str(csv_path), "hull": "train + every reference crystal (EvalOptions.hull_reference "
         "'all')", "train": args.train,
         "reference": args.reference, "before": before} | stamp())
    write_rows(csv_path, rows)
    write_text_atomic(Path(args.result), json.dumps(result, indent=1, default=float, sort_keys=True) + "\n")
    for k in new:
        print(f"{k}: {before[k]} -> {new[k]['value']}")


def rescore_with(args: argparse.Namespace) -> None:
    """``--potential``: rate the report's relaxed structures with another potential."""
    from crysgen.evaluation.suite import rescore_report

    if not (args.train and args.reference):
        raise SystemExit("--potential needs --train and --reference (the evaluation's)")
    new = rescore_report(args.report, args.train, args.reference, potential=args.potential,
                         device=args.device)
    for k, v in new.items():
        print(f"{k}: {v['value']}")
    if args.result:
        result = json.loads(Path(args.result).read_text())
        result["metrics"].update(new)
        result.setdefault("rescored_potentials", []).append(
            {"from": str(args.report), "potential": args.potential, "train": args.train,
             "reference": args.reference} | stamp())
        write_text_atomic(Path(args.result),
                          json.dumps(result, indent=1, default=float, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
