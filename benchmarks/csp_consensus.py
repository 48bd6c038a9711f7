"""Crystal structure prediction by consensus over several samples' cells (atom diffusion models).

Writes benchmarks/results/csp_consensus_<dataset><suffix>.json.

The cell accounts for much of the CSP miss rate (``atom_csp_sweep.py --given-lattice``: each target's
own cell held raised the bundled model's match rate from 47.1 % to 60.7 % on the CPU). This asks how
much of that a model gets without the answer: per target, K samples (seeds 0 … K-1, the elements
given), and then

- ``first``: the seed-0 sample alone (what one sample per target scores);
- ``medoid``: the structurally valid sample whose Niggli-reduced cell lies nearest the others'
  (the least summed distance of the model's standardised lattice features: ln lengths per atom,
  angles), i.e. the most typical cell;
- ``medoid_cell``: sampled again (seed K) with the medoid's cell held (``lattices=``), in the
  setting the model wrote it (not Niggli-reduced: 88 % of the model's cells change setting under
  the reduction, and holding the reduced ones cost ~10 points in a first run, clean f9eb8c9:
  38.8 % against 48.1 % for the medoid itself; the mean of several cells' features (29.9 %) was
  dropped for the same reason);
- ``any``: a target counts if any of the K samples matches (the bound a perfect choice reaches);
  its ``cell_shape_match_percent``, if any of them has the target's cell shape.

Every answer also scores the lattice alone (``cell``: :func:`crysgen.evaluation.csp.cell_agreement`'s
share of right cell shapes and median volume error; by target size in ``breakdown``).

No target is used to choose. Every answer is scored with DiffCSP's matcher and validity
(:func:`crysgen.evaluation.csp.score_csp`), one answer per target.

Usage (GPU machine)::

    python benchmarks/csp_consensus.py MODEL --targets mp_20_asis_test.npz --n 1000 --k 5 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from atom_csp_sweep import add_target_arguments, load_targets, per_target, predict
from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.csp import CSPResult, CSPSample, score_csp
from crysgen.evaluation.validity import structurally_valid
from crysgen.pipelines.atoms import AtomDiffusionModel
from crysgen.pipelines.generators import resolve_model_dir
from crysgen.representations.atoms import AtomSetSpec, lattice_features
from provenance import write_result


def consensus_cells(candidates: list[list[CSPSample]], num_sites: np.ndarray,
                    spec: AtomSetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per target, the medoid candidate among its valid candidates and that candidate's cell.

    Args:
        candidates: K lists of samples, each with one sample per target (in the targets' order).
        num_sites: int (n,) sites per target (its samples' site count).
        spec: the model's encoding (the lattice features' standardisation).

    The candidates' cells are compared in their Niggli-reduced settings (the distance of the
    model's standardised lattice features); the cell returned is the medoid's as written.

    Returns:
        int (n,) the medoid candidate's index (-1: no valid candidate) and float (n, 6) its cell
        (NaN rows where no candidate is valid).
    """
    k, n = len(candidates), len(candidates[0])
    pick = np.full(n, -1, np.int64)
    medoid = np.full((n, 6), np.nan)
    for t in range(n):
        ok = [j for j in range(k) if candidates[j][t].structure is not None
              and structurally_valid(candidates[j][t].structure)]
        if not ok:
            continue
        cells = np.array([candidates[j][t].structure.lattice.get_niggli_reduced_lattice().parameters
                          for j in ok])
        feats = lattice_features(cells, np.full(len(ok), num_sites[t]), spec)
        dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1).sum(1)
        best = int(np.argmin(dist))
        pick[t] = ok[best]
        medoid[t] = candidates[ok[best]][t].structure.lattice.parameters
    return pick, medoid


def resampled(model: AtomDiffusionModel, targets: CrystalSet, cells: np.ndarray, fallback: list[CSPSample],
              **kw: object) -> list[CSPSample]:
    """One sample per target in the given cells (targets without a cell keep ``fallback``'s)."""
    have = np.isfinite(cells).all(1)
    out = list(fallback)
    if have.any():
        sub = targets.subset(np.flatnonzero(have))
        samples, _ = predict(model, sub, lattices=cells[have], **kw)  # type: ignore[arg-type]
        for i, s in zip(np.flatnonzero(have), samples, strict=True):
            out[i] = CSPSample(id=f"r{i}", target=s.target, structure=s.structure, problem=s.problem)
    return out


def row(name: str, res: CSPResult, **extra: object) -> dict:
    """One answer's scores (what each row of the result file holds)."""
    out = {"answer": name, "match_rate_percent": 100 * res.match_rate, "rmse": res.rmse,
           "n_targets": res.n_targets, "n_invalid_samples": res.n_invalid_samples,
           "breakdown": res.breakdown(), "per_target": per_target(res),
           "cell": res.cell.summary()} | extra
    print(json.dumps({k: v for k, v in out.items() if k != "per_target"})[:600], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    add_target_arguments(p)
    p.add_argument("--k", type=int, default=5, help="samples per target")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--churn", type=float, default=None, help="EDM churn (default: the model's own)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--suffix", default="")
    args = p.parse_args()
    if args.k < 2:
        p.error("--k must be at least 2")

    model = AtomDiffusionModel.from_pretrained(args.model)
    targets = load_targets(args)
    churn = model.edm.s_churn if args.churn is None else args.churn
    kw = {"steps": args.steps, "churn": churn, "device": args.device, "batch": args.batch,
          "precision": args.precision, "anneal_rho": model.edm.anneal_rho,
          "anneal_rho_lattice": model.edm.anneal_rho_lattice}
    t0 = time.perf_counter()
    candidates = [predict(model, targets, seed=j, **kw)[0] for j in range(args.k)]  # type: ignore[arg-type]
    sampling = time.perf_counter() - t0
    verdicts: dict = {}

    def score(samples: list[CSPSample]) -> CSPResult:
        return score_csp(samples, targets, workers=args.workers, metre=False, progress=False,
                         target_verdicts=verdicts)

    scored = [score(c) for c in candidates]
    rows = [row("first", scored[0]),
            {"answer": "each", "match_rate_percent": [100 * r.match_rate for r in scored],
             "cell_shape_match_percent": [100 * r.cell.shape_match_rate for r in scored]}]
    print(json.dumps(rows[-1]), flush=True)
    matched = np.array([[{r["id"]: r["matched"] for r in res.rows}[str(t)] for t in targets.ids]
                        for res in scored])
    right_cell = np.array([[bool(res.cell.per_target[str(t)][1]) for t in targets.ids] for res in scored])
    rows.append({"answer": "any", "match_rate_percent": 100 * float(matched.any(0).mean()),
                 "cell_shape_match_percent": 100 * float(right_cell.any(0).mean()),
                 "n_targets": len(targets)})
    print(json.dumps(rows[-1]), flush=True)
    pick, medoid = consensus_cells(candidates, targets.num_sites.astype(int), model.spec)
    chosen = [candidates[j][t] if j >= 0 else candidates[0][t] for t, j in enumerate(pick)]
    rows.append(row("medoid", score(chosen),
                    chosen_candidate_counts=np.bincount(pick + 1, minlength=args.k + 1).tolist()))
    rows.append(row("medoid_cell", score(resampled(model, targets, medoid, chosen, seed=args.k, **kw))))
    result = {"model": args.model, "dataset": args.dataset, "targets": args.targets,
              "n_targets": len(targets), "k": args.k, "sampler": kw, "sampling_seconds": round(sampling, 1),
              "rows": rows,
              "note": "K samples per target (seeds 0..K-1, elements given); answers chosen without the "
                      "targets; DiffCSP matcher and validity, one answer per target"}
    write_result(f"csp_consensus_{args.dataset}{args.suffix}", result, args.device,
                 model=resolve_model_dir(args.model))


if __name__ == "__main__":
    main()
