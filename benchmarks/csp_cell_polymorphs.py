"""Are a CSP model's wrong cells the cells of other polymorphs it was trained on?

Writes benchmarks/results/csp_cell_polymorphs_<dataset><suffix>.json.

A model that gets a target's cell wrong gets it wrong in every sample (``csp_consensus.py``: any of
three samples has the right cell shape for 76.4 % of the mp_20 test targets, one sample for 71.2 %).
This asks where those cells come from. One sample per target (elements given, as
``atom_csp_sweep.py``); per target, the training crystals of the same reduced formula and the same
number of sites (the sample's), and whether

- ``target_cell_in_train``: one of them has the target's cell shape (the target's structure type,
  or one with its cell, was seen for this composition);
- ``sample_cell_right``: the sample has the target's cell shape
  (:func:`crysgen.evaluation.csp.same_cell_shape`, the verdict of ``cell_agreement``);
- ``sample_cell_in_train``: the sample's cell has the shape of one of them (the model wrote a cell it
  was trained on for this composition).

Targets are then counted by these verdicts, for targets whose sample has a wrong cell and for
those with a right one.

Usage::

    python benchmarks/csp_cell_polymorphs.py MODEL --targets mp_20_asis_test.npz \\
        --train mp_20_asis_train_partial.npz --n 1000 --device cpu --workers 2
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from atom_csp_sweep import add_target_arguments, load_targets, predict
from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.csp import same_cell_shape, score_csp
from crysgen.evaluation.diversity import reduced_formulas
from crysgen.pipelines.atoms import AtomDiffusionModel
from crysgen.pipelines.generators import resolve_model_dir
from provenance import write_result


def polymorph_cells(targets: CrystalSet, train: CrystalSet) -> list[list[int]]:
    """Per target, the rows of ``train`` with its reduced formula and its number of sites."""
    rows: dict[tuple[str, int], list[int]] = defaultdict(list)
    for j, key in enumerate(zip(reduced_formulas(train), train.num_sites.tolist(), strict=True)):
        rows[key].append(j)
    keys = zip(reduced_formulas(targets), targets.num_sites.tolist(), strict=True)
    return [rows.get(key, []) for key in keys]


def share(flags: list[bool]) -> float | None:
    """Percent of True (None for no flags)."""
    return round(100 * sum(flags) / len(flags), 2) if flags else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    add_target_arguments(p)
    p.add_argument("--train", required=True, help="the model's training CrystalSet .npz")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--churn", type=float, default=None, help="EDM churn (default: the model's own)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--suffix", default="")
    args = p.parse_args()

    model = AtomDiffusionModel.from_pretrained(args.model)
    targets = load_targets(args)
    train = CrystalSet.load(args.train)
    churn = model.edm.s_churn if args.churn is None else args.churn
    sampler = {"steps": args.steps, "churn": churn, "anneal_rho": model.edm.anneal_rho,
               "anneal_rho_lattice": model.edm.anneal_rho_lattice}
    samples, seconds = predict(model, targets, device=args.device, batch=args.batch, seed=args.seed,
                               **sampler)  # type: ignore[arg-type]
    res = score_csp(samples, targets, workers=args.workers, metre=False, progress=True)
    matched = {r["id"]: bool(r["matched"]) for r in res.rows}
    same = polymorph_cells(targets, train)

    per_target = []
    for i, (t, s, rows) in enumerate(zip(targets.ids, samples, same, strict=True)):
        if s.structure is None:
            continue
        target = targets.to_structure(i)
        cells = [train.to_structure(j).lattice for j in rows]
        per_target.append({
            "id": str(t), "train_same_formula_and_sites": len(rows), "matched": matched[str(t)],
            "sample_cell_right": bool(res.cell.per_target[str(t)][1]),
            "target_cell_in_train": any(same_cell_shape(c, target.lattice) for c in cells),
            "sample_cell_in_train": any(same_cell_shape(s.structure.lattice, c) for c in cells)})

    def summary(group: list[dict]) -> dict:
        seen = [r for r in group if r["train_same_formula_and_sites"]]
        return {"targets": len(group),
                "with_training_polymorphs_percent": share([bool(r["train_same_formula_and_sites"])
                                                            for r in group]),
                "target_cell_in_train_percent": share([r["target_cell_in_train"] for r in group]),
                "sample_cell_in_train_percent": share([r["sample_cell_in_train"] for r in group]),
                "sample_cell_in_train_percent_of_those_with_polymorphs":
                    share([r["sample_cell_in_train"] for r in seen]),
                "matched_percent": share([r["matched"] for r in group])}

    wrong = [r for r in per_target if not r["sample_cell_right"]]
    right = [r for r in per_target if r["sample_cell_right"]]
    result = {"model": args.model, "dataset": args.dataset, "targets": args.targets, "train": args.train,
              "n_targets": len(targets), "sampler": sampler, "sampling_seconds": round(seconds, 1),
              "match_rate_percent": 100 * res.match_rate,
              "cell_shape_match_percent": 100 * res.cell.shape_match_rate,
              "samples_with_a_structure": len(per_target),
              "wrong_cell": summary(wrong), "right_cell": summary(right),
              "wrong_cell_from_another_training_polymorph_percent": share(
                  [r["sample_cell_in_train"] and not r["target_cell_in_train"] for r in wrong]),
              "per_target": per_target,
              "note": "one sample per target, elements given; training crystals of the target's reduced "
                      "formula and site count; cell shapes compared as cell_agreement does"}
    print(json.dumps({k: v for k, v in result.items() if k != "per_target"}, indent=1), flush=True)
    write_result(f"csp_cell_polymorphs_{args.dataset}{args.suffix}", result, args.device,
                 model=resolve_model_dir(args.model))


if __name__ == "__main__":
    main()
