"""How well a learned choice among a target's CSP candidates could do: cross-validated over targets.

Writes benchmarks/results/csp_choice_cv_<name>.json.

Reads the candidate table of ``csp_rank.py --table`` (one row per target and candidate: validity,
match verdict, static energy, agreement with the other candidates, point-group order) and fits a
logistic regression that predicts, from features that need no target, whether a candidate matches
its target; per target the valid candidate of the highest predicted probability is the answer. The
targets are split into ``--folds`` groups: each group's answers come from a model fitted on the
other groups only (scikit-learn ``GroupKFold``), so no target helps choose its own answer. Every
feature is relative to the target's other candidates, so that the model compares candidates:

- ``energy``: static energy per atom minus the lowest of the target's valid candidates (eV/atom);
- ``agreement``: the share of the target's other valid candidates that match the candidate;
- ``symmetry``: log2 of the point-group order (spglib at 0.1 Å) minus the target's largest;
- ``sites``: the target's site count (the same for every candidate: it only shifts the probability
  of all of them, but it lets the other features' weights depend on the cell size through the
  pairwise products of the last row, fitted with all four features and their products).

The figures are an estimate of what a choice trained on other compositions could reach on these
candidates (the targets are test crystals: a deployed choice would be fitted on candidates of
training compositions instead). Beside them (``single_rules``): best of k, the first candidate, and
the lowest static energy (csp_rank.py's ranked answer); the agreement and symmetry rules are in the
csp_rank.py file that wrote the table.

Usage::

    python benchmarks/csp_choice_cv.py benchmarks/results/csp_rank_mp_20_plain8_sym300_cpu_candidates.csv \\
        --name plain8_sym300_cpu
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from crysgen.errors import CrysgenError
from provenance import write_result

FEATURES = ("energy", "agreement", "symmetry", "sites")


def read_table(path: str) -> dict[str, np.ndarray]:
    """The candidate table as (targets, k) arrays: valid, matched, energy, agreeing, order, sites.

    Raises:
        CrysgenError: when the file lacks a column the choice needs, or targets have different k.
    """
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"target", "valid", "matched", "energy_per_atom", "agreeing", "point_group_order", "sites"}
    if not rows or not need <= set(rows[0]):
        raise CrysgenError(f"{path}: needs the columns {sorted(need)} (csp_rank.py --table with --vote "
                           "and --by-symmetry)")
    order: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        order.setdefault(r["target"], []).append(r)
    ks = {len(v) for v in order.values()}
    if len(ks) != 1:
        raise CrysgenError(f"{path}: every target needs the same number of candidates, got {sorted(ks)}")

    def col(name: str, empty: float) -> np.ndarray:
        return np.array([[float(r[name]) if r[name] != "" else empty for r in v] for v in order.values()])

    return {"valid": col("valid", 0).astype(bool), "matched": col("matched", 0).astype(bool),
            "energy": col("energy_per_atom", np.nan), "agreeing": col("agreeing", 0),
            "order": col("point_group_order", 1), "sites": col("sites", 0)}


def features(t: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """float (targets, k, len(names)): each candidate's features relative to its target's others."""
    valid = t["valid"]
    e = np.where(valid, t["energy"], np.nan)
    lowest = np.min(np.where(np.isfinite(e), e, np.inf), 1, keepdims=True)
    energy = np.where(np.isfinite(e), e - np.where(np.isfinite(lowest), lowest, 0), 1.0)
    others = np.maximum(valid.sum(1, keepdims=True) - 1, 1)
    logo = np.log2(np.maximum(t["order"], 1))
    top = np.max(np.where(valid, logo, -np.inf), 1, keepdims=True)
    symmetry = np.where(valid, logo - np.where(np.isfinite(top), top, 0), -6.0)
    sites = np.broadcast_to(np.nanmax(t["sites"], 1, keepdims=True), valid.shape)
    cols = {"energy": energy, "agreement": t["agreeing"] / others, "symmetry": symmetry, "sites": sites}
    return np.stack([cols[n] for n in names], -1)


def expand(x: np.ndarray, interactions: bool) -> np.ndarray:
    """The features, and with ``interactions`` every pairwise product as well."""
    if not interactions:
        return x
    f = x.shape[-1]
    pairs = [x[..., a] * x[..., b] for a in range(f) for b in range(a + 1, f)]
    return np.concatenate([x, np.stack(pairs, -1)], -1) if pairs else x


def chosen_rate(scores: np.ndarray, t: dict[str, np.ndarray]) -> float:
    """Match rate in percent when each target's valid candidate of the highest score is the answer."""
    s = np.where(t["valid"], scores, -np.inf)
    pick = np.argmax(s, 1)
    return 100 * float(t["matched"][np.arange(len(pick)), pick].mean())


def cross_validated(t: dict[str, np.ndarray], names: tuple[str, ...], folds: int, interactions: bool,
                    seed: int) -> dict[str, Any]:
    """Match rate of the learned choice, each fold's targets chosen by a model of the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = expand(features(t, names), interactions)
    n, k, f = x.shape
    flat_x, flat_y = x.reshape(-1, f), t["matched"].reshape(-1)
    flat_v = t["valid"].reshape(-1)
    groups = np.repeat(np.random.default_rng(seed).permutation(n), k)  # targets shuffled into folds
    scores = np.full(n * k, -np.inf)
    for train, test in GroupKFold(folds).split(flat_x, flat_y, groups):
        fit = train[flat_v[train]]
        if len(set(flat_y[fit].tolist())) < 2:
            raise CrysgenError("a fold's training candidates are all matched or all missed: too few targets")
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(flat_x[fit], flat_y[fit])
        scores[test] = model.predict_proba(flat_x[test])[:, 1]
    return {"features": list(names), "interactions": interactions,
            "match_rate_percent": chosen_rate(scores.reshape(n, k), t)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", help="csp_rank.py --table CSV (with --vote and --by-symmetry)")
    p.add_argument("--name", required=True, help="result name: csp_choice_cv_<name>.json")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="shuffles the targets into folds")
    args = p.parse_args()
    if args.folds < 2:
        p.error("--folds must be at least 2")
    t = read_table(args.table)
    n, k = t["valid"].shape
    e = np.where(t["valid"] & np.isfinite(t["energy"]), t["energy"], np.inf)
    rules = {"best_of_k": 100 * float(t["matched"].any(1).mean()),
             "first_candidate": 100 * float(t["matched"][:, 0].mean()),
             "lowest_energy": chosen_rate(-e, t)}
    sets = [("energy",), ("agreement",), ("symmetry",), ("energy", "agreement"), ("energy", "symmetry"),
            ("agreement", "symmetry"), ("energy", "agreement", "symmetry"), FEATURES]
    rows = [cross_validated(t, names, args.folds, False, args.seed) for names in sets]
    rows.append(cross_validated(t, FEATURES, args.folds, True, args.seed))
    for r in rows:
        print(json.dumps(r), flush=True)
    result = {"table": args.table, "n_targets": n, "k": k, "folds": args.folds, "fold_seed": args.seed,
              "single_rules": rules, "learned": rows,
              "note": "learned = logistic regression on the candidates' relative features, each fold of "
                      "targets chosen by a model fitted on the other folds (GroupKFold); the targets are "
                      "test crystals, so this estimates a choice trained on other compositions"}
    write_result(f"csp_choice_cv_{args.name}", result, "cpu")


if __name__ == "__main__":
    main()
