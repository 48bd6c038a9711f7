"""Fit the template ranker: which of a composition's fitting training crystals to copy.

Writes benchmarks/results/template_ranker_<dataset><suffix>.json and the ranker file (``--out``,
default ``src/crysgen/pretrained/template_ranker_mp20.json``, crysgen's bundled ranker).

For every crystal of ``--targets`` (the validation split: never the test split a CSP benchmark
scores) the candidate templates of :class:`crysgen.pipelines.template_ranking.TemplateRanker` are
taken from ``--prior`` (the training split): the ``--best`` best-fitting crystals and the best
crystal of each of the first ``--groups`` space groups. Each candidate is labelled by copying it
with the target's elements (``csp_template_copy.py``'s prediction) and matching the copy against
the target with DiffCSP's matcher (no validity check: the label says whether the structure type is
right). Then ``--folds``-fold cross-validation over targets: a ranker fitted on the other folds
chooses one candidate per target, and its choice's match rate is set beside the best-fitting
candidate's (``match_templates``'s choice) and the best of all candidates (the bound); finally the
ranker is fitted on all targets and written. The match rates here are of copies without validity
checks; ``csp_template_copy.py --ranker`` scores the test split with the full protocol.

Usage::

    python benchmarks/template_ranker.py --targets .gpuwork/mp_20_asis_val.npz \
        --prior .gpuwork/mp_20_asis_train_partial.npz --workers 2 \
        [--labels benchmarks/.work/ranker_labels.npz]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from atom_csp_sweep import seeded_subset
from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.csp import score_csp
from crysgen.pipelines.symmetry import fit_rows, fitting_rows
from crysgen.pipelines.template_ranking import (
    BUNDLED_RANKER,
    FEATURES,
    candidate_features,
    candidate_pool,
    fit_ranker,
)
from csp_template_copy import copies
from provenance import write_result


def label(targets: CrystalSet, prior: CrystalSet, pools: list[np.ndarray], workers: int) -> list[np.ndarray]:
    """Per target bool (k,): whether each candidate's copy matches it (one matching pass per rank)."""
    width = max((len(p) for p in pools), default=0)
    matched = [np.zeros(len(p), bool) for p in pools]
    for j in range(width):
        rows = [int(p[j]) if j < len(p) else None for p in pools]
        samples = copies(targets, fit_rows(prior, rows, targets.atomic_numbers))
        keep = [s for s, r in zip(samples, rows, strict=True) if r is not None]
        res = score_csp(keep, targets, validity="none", require_valid_target=False, metre=False,
                        workers=workers, progress=False)
        verdict = {r["id"]: bool(r["matched"]) for r in res.rows}  # rows are per target
        for i, s in enumerate(samples):
            if rows[i] is not None:
                matched[i][j] = verdict.get(s.target, False)
        print(f"candidate {j + 1}/{width}: {sum(r is not None for r in rows)} copies scored", flush=True)
    return matched


def save_labels(path: str, targets: CrystalSet, candidates: list[np.ndarray],
                matched: list[np.ndarray]) -> None:
    """Write the labels with what they were made for (target ids, candidate rows)."""
    sizes = np.array([len(c) for c in candidates])
    np.savez_compressed(path, ids=np.asarray(targets.ids).astype(str), sizes=sizes,
                        rows=np.concatenate(candidates), matched=np.concatenate(matched))


def cached_labels(path: str, targets: CrystalSet, candidates: list[np.ndarray]) -> list[np.ndarray] | None:
    """The labels of ``path`` when it holds these targets' candidates, else None (a note says why)."""
    try:
        data = np.load(path)
    except FileNotFoundError:
        return None
    same = (data["ids"].tolist() == np.asarray(targets.ids).astype(str).tolist()
            and data["sizes"].tolist() == [len(c) for c in candidates]
            and np.array_equal(data["rows"], np.concatenate(candidates)))
    if not same:
        print(f"{path}: made for other targets or candidates; labelling again", flush=True)
        return None
    return np.split(data["matched"].astype(bool), np.cumsum(data["sizes"])[:-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", required=True, help="labelled crystals (the validation split)")
    p.add_argument("--prior", required=True, help="the crystals templates come from (the training split)")
    p.add_argument("--dataset", default="mp_20")
    p.add_argument("--n", type=int, default=None, help="targets drawn (seeded) from --targets (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--best", type=int, default=8)
    p.add_argument("--groups", type=int, default=6)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(BUNDLED_RANKER), help="where the ranker fitted on all targets goes")
    p.add_argument("--labels", default=None, metavar="LABELS.npz",
                   help="keep the labels here and reuse them when they were made for the same targets and "
                        "candidates (feature or network changes then skip the matching)")
    p.add_argument("--without", default="", metavar="NAME[,NAME]",
                   help="an ablation: these features (or prefixes of their names, e.g. vote_) set to 0 "
                        "before fitting; cross-validation only, no ranker file written")
    p.add_argument("--suffix", default="")
    args = p.parse_args()
    dropped = [i for i, name in enumerate(FEATURES)
               if any(name.startswith(w) for w in args.without.split(",") if w)]
    if args.without and not dropped:
        p.error(f"--without {args.without!r} names none of {', '.join(FEATURES)}")

    t0 = time.perf_counter()
    full = CrystalSet.load(args.targets)
    targets = seeded_subset(full, args.n or len(full), args.seed)
    prior = CrystalSet.load(args.prior)
    fits = fitting_rows(targets.atomic_numbers, prior)
    keep = np.array([f is not None for f in fits])
    targets = targets.subset(np.flatnonzero(keep))
    fits = [f for f in fits if f is not None]
    pools = [candidate_pool(rows, prior, best=args.best, groups=args.groups) for rows, _ in fits]
    features = [candidate_features(z, prior, rows, costs, pool)
                for z, (rows, costs), pool in zip(targets.atomic_numbers, fits, pools, strict=True)]
    candidates = [rows[pool] for (rows, _), pool in zip(fits, pools, strict=True)]
    matched = cached_labels(args.labels, targets, candidates) if args.labels else None
    if matched is None:
        matched = label(targets, prior, candidates, args.workers)
        if args.labels:
            save_labels(args.labels, targets, candidates, matched)
    seconds_labels = round(time.perf_counter() - t0, 1)

    for f in features:
        f[:, dropped] = 0.0
    n = len(targets)
    chosen = np.zeros(n, bool)
    folds = np.random.default_rng(args.seed).permutation(n) % args.folds
    per_fold = []
    for f in range(args.folds):
        train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        ranker = fit_ranker([features[i] for i in train], [matched[i] for i in train],
                            hidden=(args.hidden,), best=args.best, groups=args.groups, seed=args.seed)
        for i in test:
            chosen[i] = matched[i][int(np.argmax(ranker.score(features[i])))]
        per_fold.append(100 * float(chosen[test].mean()))
    first = np.array([m[0] for m in matched])
    anyone = np.array([m.any() for m in matched])
    fitted_on = (f"{args.targets} ({n} crystals with a fitting template) against {args.prior}; "
                 f"labels: the copy matches (DiffCSP matcher)")
    if not dropped:
        final = fit_ranker(features, matched, hidden=(args.hidden,), best=args.best, groups=args.groups,
                           seed=args.seed, fitted_on=fitted_on)
        final.save(args.out)
    result = {"dataset": args.dataset, "targets": args.targets, "prior": args.prior,
              "n_targets_drawn": len(keep), "n_with_template": n, "features": list(FEATURES),
              "best": args.best, "groups": args.groups, "hidden": args.hidden,
              "candidates_per_target": float(np.mean([len(m) for m in matched])),
              "match_rate_percent": {"best_fitting": 100 * float(first.mean()),
                                     "ranker_cross_validated": 100 * float(chosen.mean()),
                                     "any_candidate": 100 * float(anyone.mean())},
              "per_fold_percent": per_fold, "folds": args.folds,
              "ranker_file": None if dropped else args.out,
              "without": [FEATURES[i] for i in dropped],
              "seconds": {"labels": seconds_labels, "total": round(time.perf_counter() - t0, 1)},
              "note": "copies of candidate templates with the target's elements, DiffCSP matcher, no "
                      "validity check; rates over targets with a fitting template; cross-validated over "
                      "targets"}
    print(result["match_rate_percent"], per_fold, flush=True)
    write_result(f"template_ranker_{args.dataset}{args.suffix}", result, "cpu")


if __name__ == "__main__":
    main()
