"""Recount the stable and S.U.N. rates of an evaluation from its per-structure rows.

When the stability rules change (``stability.stability_rates``) after a GPU evaluation, the
per-structure energies above hull, convergence flags and uniqueness/novelty in the report's
``structures.csv`` are enough to recount them with the library function; no relaxation is
repeated. Replaces the ``stable_*`` and ``sun_*`` metrics of the result JSON and records the
recount (command, commit, date) under ``rescored``.

Usage::

    python benchmarks/rescore_stability.py benchmarks/.work/eval_gan_mp_20/report \
        benchmarks/results/eval_gan_mp_20.json
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
    p.add_argument("result", help="the result JSON to update")
    args = p.parse_args()
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


if __name__ == "__main__":
    main()
