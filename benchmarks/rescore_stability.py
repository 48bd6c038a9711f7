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

Usage::

    python benchmarks/rescore_stability.py benchmarks/.work/eval_gan_mp_20/report \
        benchmarks/results/eval_gan_mp_20.json
    python benchmarks/rescore_stability.py REPORT [RESULT.json] --potential sevennet \
        --train ../shared/data/mp_20/train.npz --reference ../shared/data/mp_20/test.npz
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from codec import stamp
from crysgen.crystal_set import write_text_atomic
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
    p.add_argument("report", help="the evaluation's report folder (structures.csv)")
    p.add_argument("result", nargs="?", help="the result JSON to update")
    p.add_argument("--potential", default=None,
                   help="re-rate the relaxed structures with this potential (sevennet) instead")
    p.add_argument("--train", help="with --potential: the training CrystalSet the evaluation used")
    p.add_argument("--reference", help="with --potential: the reference CrystalSet it used")
    p.add_argument("--device", default=None, help="with --potential: cpu or cuda (default: the report's)")
    args = p.parse_args()
    if args.potential:
        rescore_with(args)
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
