"""Crystal structure prediction by copying the template alone: what templates give without a model.

Writes benchmarks/results/csp_template_copy_<dataset><suffix>.json.

For the seeded subset of target crystals every CSP benchmark uses (``atom_csp_sweep.py``'s
``--n`` / ``--seed``), each target's template is chosen exactly as ``atom_csp_sweep.py
--symmetry-prior`` chooses it (:func:`crysgen.pipelines.symmetry.match_templates`: the training
crystal whose element counts fit after a one-to-one exchange of elements, the most alike exchange
first), and the prediction is that crystal with its elements exchanged: the template's own
(Niggli-reduced) cell and fractional coordinates, no network. This is prototype substitution
(Hautier et al. 2011), the baseline the model's template-based CSP rows must beat: DiffCSP's
matcher scales volumes, so the copied cell's wrong volume costs nothing and a match means the
template's geometry already was the answer. Scored with
:func:`crysgen.evaluation.csp.score_csp` (DiffCSP's matcher and validity), one sample per target;
with ``--ranks R`` also the best of the first R templates (ranks 0..R-1 of
``match_templates(rank=r)``: best crystal of each space group), a best-of-k bound that needs the
target to choose. With ``--vote k[,k...]`` the template is chosen by a vote of the k best-fitting
crystals' space groups (``match_templates(vote=k)``); choose k on the validation split
(``--targets …val.npz``), then score the test split once. With ``--ranker`` the template is the
candidate a learned template ranker scores highest (``template_ranker.py`` fits it on the
validation split).

Usage::

    python benchmarks/csp_template_copy.py --targets .gpuwork/mp_20_asis_test.npz \
        --prior .gpuwork/mp_20_asis_train_partial.npz --n 1000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from pymatgen.core import Lattice, Structure

from atom_csp_sweep import add_target_arguments, load_targets
from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.csp import CSPSample, score_csp
from crysgen.pipelines.symmetry import Templates, match_templates
from crysgen.pipelines.template_ranking import load_ranker, ranker_file
from provenance import file_sha256, write_result


def copies(targets: CrystalSet, templates: Templates) -> list[CSPSample]:
    """One sample per target: its template's Niggli cell and coordinates with the target's elements.

    Args:
        targets: the target crystals (their elements name each site of the copy).
        templates: per target the fitted template (None: no copy, a miss).
    """
    out = []
    for i, sym in enumerate(templates.symmetries):
        name = str(targets.ids[i])
        if sym is None or sym.cell is None:
            out.append(CSPSample(id=f"s{i}", target=name, structure=None, problem="no template"))
            continue
        z = targets.atomic_numbers[i, :sym.num_sites]
        structure = Structure(Lattice.from_parameters(*sym.cell), z.tolist(), sym.positions)
        out.append(CSPSample(id=f"s{i}", target=name, structure=structure))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(p)
    p.add_argument("--prior", required=True, help="the crystals templates come from (the training split)")
    p.add_argument("--ranks", type=int, default=1, help="also score the best of ranks 0..R-1 (R > 1)")
    p.add_argument("--vote", default="1", help="comma-separated k: the space groups of the k best-fitting "
                   "crystals vote (match_templates's vote; 1: none); one row per k and rank")
    p.add_argument("--ranker", default=None, metavar="bundled|RANKER.json",
                   help="choose each template with this template ranker (crysgen.pipelines.template_ranking) "
                        "instead of the most alike exchange; excludes --ranks and --vote")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--suffix", default="")
    args = p.parse_args()

    ranker = load_ranker(args.ranker) if args.ranker else None
    ranker_sha = file_sha256(ranker_file(args.ranker)) if args.ranker else None
    if ranker is not None and (args.ranks > 1 or args.vote != "1"):
        raise SystemExit("--ranker chooses one template per target: no --ranks or --vote beside it")
    targets = load_targets(args)
    prior = CrystalSet.load(args.prior)
    rows = []
    per_rank = []
    grid = [(int(k), rank) for k in args.vote.split(",") for rank in range(args.ranks)]
    for vote, rank in grid:
        t0 = time.perf_counter()
        templates = match_templates(targets.atomic_numbers, prior, rank=rank, vote=vote, ranker=ranker)
        samples = copies(targets, templates)
        res = score_csp(samples, targets, workers=args.workers, metre=False, progress=True)
        per_rank.append({r["id"]: bool(r["matched"]) for r in res.rows})
        row = {"rank": rank, "vote": vote, "ranker": args.ranker, "ranker_sha256": ranker_sha,
               "share_with_template": templates.share_fitted(),
               "match_rate_percent": 100 * res.match_rate, "rmse": res.rmse, "n_targets": res.n_targets,
               "n_invalid_samples": res.n_invalid_samples, "seconds": round(time.perf_counter() - t0, 1),
               "breakdown": res.breakdown()}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "breakdown"}), flush=True)
    result = {"dataset": args.dataset, "targets": args.targets, "prior": args.prior,
              "n_targets": len(targets), "subset_seed": args.seed, "rows": rows,
              "note": "no model: each target's best-fitting training crystal (match_templates) with the "
                      "target's elements, in the template's Niggli cell; one sample per target; DiffCSP "
                      "matcher (volume-scaled) and validity"}
    if args.ranks > 1 and args.vote == "1":
        matched = [any(d.get(t, False) for d in per_rank) for t in per_rank[0]]
        result["best_of_ranks"] = {"ranks": args.ranks, "match_rate_percent": 100 * float(np.mean(matched)),
                                   "note": "a target counts if any rank's copy matches: needs the target "
                                           "to choose (upper bound of a ranking)"}
    write_result(f"csp_template_copy_{args.dataset}{args.suffix}", result, "cpu")


if __name__ == "__main__":
    main()
