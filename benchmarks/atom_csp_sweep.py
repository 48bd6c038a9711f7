"""Sampler settings of an atom diffusion model against crystal structure prediction.

Writes benchmarks/results/atom_csp_sweep_<dataset><suffix>.json.

One trained model, a seeded subset of the target crystals (one sample each, the elements given), and
a grid of sampler settings: Heun steps, EDM churn (``s_churn``: fresh noise added before every
step, raising σ by a factor up to √2; 0 = deterministic) and anti-annealing (``--anneal-rho``:
coordinate and lattice steps lengthened towards low σ; 0 = off; default: the model's own). Each
setting is scored with :func:`crysgen.evaluation.csp.score_csp` (DiffCSP's matcher and validity), so
the rows show what sampling alone buys before any retraining, and each row's ``breakdown`` the
match rate by the target's site and element counts and the targets per miss reason, and its
``per_target`` each target's outcome (``benchmarks/paired_compare.py`` pairs two sweeps on it); its
``cell`` the lattice alone (``score_csp``'s, :func:`crysgen.evaluation.csp.cell_agreement`: how many
samples' cells, scaled to the target's volume, map onto the target's cell, and the median |ln V
ratio|), and ``per_target_cell`` each target's.
With ``--relax`` each setting's samples are also relaxed with CHGNet (positions and cell,
``crysgen evaluate --stability``'s FIRE settings) and scored again: the row's ``relaxed`` entry. A
sample whose relaxation fails is scored as generated (counted in ``relaxed.kept_as_generated``).

Usage (GPU machine)::

    python benchmarks/atom_csp_sweep.py RUN/model --targets benchmarks/.work/mp_20_asis_test.npz \
        --n 1000 --steps 50,100,200 --churn 0,10,30 --device cuda --workers 12
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import numpy as np

from crysgen.crystal_set import CrystalSet, reduced_formula
from crysgen.evaluation.csp import CSPResult, CSPSample, score_csp
from crysgen.evaluation.relaxation import RelaxOptions
from crysgen.evaluation.suite import relax_all
from crysgen.pipelines.atoms import AtomDiffusionModel
from crysgen.pipelines.generators import resolve_model_dir
from crysgen.pipelines.symmetry import Templates, match_templates
from crysgen.pipelines.template_ranking import load_ranker, ranker_file
from crysgen.representations.atoms import niggli_reduce
from provenance import file_sha256, write_result


def predict(model: AtomDiffusionModel, targets: CrystalSet, *, steps: int, churn: float, device: str,
            batch: int, seed: int, templates: Templates | None = None, precision: str = "fp32",
            anneal_rho: float = 0.0, anneal_rho_lattice: float | None = None,
            template_start: float | None = None,
            lattices: np.ndarray | None = None) -> tuple[list[CSPSample], float]:
    """One sample per target with the given sampler settings, and the seconds it took.

    ``lattices``: (n, 6) cells to hold fixed (the targets' own with ``--given-lattice``), or None.
    """
    comps = model.compositions_from_targets(targets)
    t0 = time.perf_counter()
    res = model.generate(len(targets), steps=steps, seed=seed, device=device, batch_size=batch,
                         compositions=comps, churn=churn, templates=templates, precision=precision,
                         anneal_rho=anneal_rho, anneal_rho_lattice=anneal_rho_lattice,
                         template_start=template_start, lattices=lattices)
    seconds = time.perf_counter() - t0
    by_index = dict(zip(res.index.tolist(), res.crystals.to_structures(), strict=True))
    samples = [CSPSample(id=f"s{i}", target=str(t), structure=by_index.get(i),
                         problem=None if i in by_index else "decode failed")
               for i, t in enumerate(targets.ids)]
    return samples, seconds


def relax_samples(samples: list[CSPSample], options: RelaxOptions,
                  workers: int) -> tuple[list[CSPSample], dict]:
    """The samples with their structures relaxed by CHGNet, and what the relaxation did.

    Relaxed as the suite relaxes (:func:`~crysgen.evaluation.suite.relax_all`: the torch engine in
    one batched call, ASE's in ``workers`` processes).

    A sample without a structure stays as it is; one whose relaxation fails keeps its generated
    structure. Returns the relaxed samples and counts (converged, kept as generated), the mean
    displacement RMSD (Å) and the seconds.
    """
    t0 = time.perf_counter()
    todo = [i for i, x in enumerate(samples) if x.structure is not None]
    results = relax_all([samples[i].structure for i in todo], options, workers, progress=True)
    out = list(samples)
    kept, rmsd = 0, []
    for i, r in zip(todo, results, strict=True):
        if r.structure is None:
            kept += 1
            continue
        out[i] = CSPSample(id=samples[i].id, target=samples[i].target, structure=r.structure)
        if r.rmsd is not None:
            rmsd.append(r.rmsd)
    info = {"relaxed": len(todo) - kept, "converged": sum(r.converged for r in results),
            "kept_as_generated": kept, "mean_rmsd_A": float(np.mean(rmsd)) if rmsd else None,
            "seconds": round(time.perf_counter() - t0, 1)}
    return out, info


def per_target(res: CSPResult) -> dict[str, list]:
    """Target id -> [its number of sites, the matched sample's RMS distance or None (a miss)]: what
    ``paired_compare.py`` pairs two sweeps of the same targets and seed on."""
    return {r["id"]: [r["num_sites"], r["rms_dist"] if r["matched"] else None] for r in res.rows}


def seeded_subset(targets: CrystalSet, n: int, seed: int) -> CrystalSet:
    """``n`` targets drawn without replacement by ``seed``, in the set's order (every CSP benchmark's)."""
    pick = np.random.default_rng(seed).choice(len(targets), min(n, len(targets)), replace=False)
    return targets.subset(np.sort(pick))


def add_target_arguments(p: argparse.ArgumentParser, *,
                         seed_help: str = "the seed of the targets' subset") -> None:
    """The target options every CSP benchmark shares: ``--targets``, ``--dataset``, ``--n``, ``--seed``."""
    p.add_argument("--targets", required=True, help="target CrystalSet .npz (e.g. the mp_20 test split)")
    p.add_argument("--dataset", default="mp_20", help="dataset name in the result file name")
    p.add_argument("--n", type=int, default=1000, help="targets drawn (seeded) from the set")
    p.add_argument("--seed", type=int, default=0, help=seed_help)


def load_targets(args: argparse.Namespace) -> CrystalSet:
    """The seeded subset that :func:`add_target_arguments`' options name."""
    return seeded_subset(CrystalSet.load(args.targets), args.n, args.seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    add_target_arguments(p, seed_help="the seed of the targets' subset and of the sampling noise")
    p.add_argument("--steps", default="50,100,200", help="comma-separated Heun step counts")
    p.add_argument("--churn", default="0,10,30", help="comma-separated s_churn values")
    p.add_argument("--anneal-rho", default=None, help="comma-separated anti-annealing exponents (0: off; "
                   "`crysgen sample --anneal-rho`; default: the model's own)")
    p.add_argument("--anneal-rho-lattice", type=float, default=None,
                   help="the lattice's own anti-annealing exponent in every row (default: the "
                        "model's own with the model's --anneal-rho, else the row's --anneal-rho)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--symmetry-prior", default=None, metavar="TRAIN.npz",
                   help="each target keeps the symmetry of its best-fitting crystal of this set "
                        "(`crysgen sample --compositions ... --symmetry-prior`; template-based CSP)")
    p.add_argument("--template-ranker", default=None, metavar="bundled|RANKER.json",
                   help="with --symmetry-prior: choose each target's template with this ranker "
                        "(`crysgen sample --template-ranker`) instead of the most alike exchange")
    p.add_argument("--template-start", default="", metavar="SIGMAS",
                   help="with --symmetry-prior: comma-separated σ to start each target from its "
                        "template crystal at (`crysgen sample --template-start`; '' or 'none': from noise)")
    p.add_argument("--given-lattice", action="store_true",
                   help="hold every sample's cell at its target's Niggli-reduced cell: only the sites are "
                        "sampled (an oracle: how much of the miss rate is the lattice's)")
    p.add_argument("--suffix", default="", help="appended to the result file's name (e.g. _cosine)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="the network's arithmetic (crysgen sample --precision)")
    p.add_argument("--relax", action="store_true",
                   help="also score every setting's samples after a CHGNet relaxation (slow on a CPU)")
    p.add_argument("--relax-engine", default="auto", choices=("auto", "ase", "torch"),
                   help="relaxation engine (crysgen evaluate --relax-engine)")
    args = p.parse_args()

    model = AtomDiffusionModel.from_pretrained(args.model)
    targets = load_targets(args)
    templates, template_info = None, None
    if args.symmetry_prior:
        t0 = time.perf_counter()
        prior = CrystalSet.load(args.symmetry_prior)
        ranker = load_ranker(args.template_ranker) if args.template_ranker else None
        templates = match_templates(model.compositions_from_targets(targets).atomic_numbers, prior,
                                    ranker=ranker)
        row_of = {str(i): r for r, i in enumerate(prior.ids)}
        same = [reduced_formula(prior.atomic_numbers[row_of[s]]) == reduced_formula(t)
                for s, t in zip(templates.sources, targets.atomic_numbers, strict=True) if s]
        template_info = {"prior": args.symmetry_prior, "ranker": args.template_ranker,
                         "ranker_sha256": (file_sha256(ranker_file(args.template_ranker))
                                           if args.template_ranker else None),
                         "share_with_template": templates.share_fitted(),
                         "seconds": round(time.perf_counter() - t0, 2),
                         "share_with_a_template_of_the_same_formula": float(np.sum(same)) / len(targets)}
        print(json.dumps(template_info), flush=True)
    relax = RelaxOptions(device=args.device, engine=args.relax_engine)
    lattices = niggli_reduce(targets).lattice if args.given_lattice else None
    rows = []
    if args.template_ranker and templates is None:
        p.error("--template-ranker needs --symmetry-prior")
    starts = [None if v in ("", "none") else float(v) for v in args.template_start.split(",")]
    if any(v is not None for v in starts) and templates is None:
        p.error("--template-start needs --symmetry-prior")
    if args.anneal_rho is None:  # the model's own anti-annealing, lattice included
        args.anneal_rho = str(model.edm.anneal_rho)
        if args.anneal_rho_lattice is None:
            args.anneal_rho_lattice = model.edm.anneal_rho_lattice
    grid = [(int(s), float(c), float(a), t) for s in args.steps.split(",") for c in args.churn.split(",")
            for a in args.anneal_rho.split(",") for t in starts]
    for steps, churn, anneal, start in grid:
        samples, seconds = predict(model, targets, steps=steps, churn=churn, device=args.device,
                                   batch=args.batch, seed=args.seed, templates=templates,
                                   precision=args.precision, anneal_rho=anneal,
                                   anneal_rho_lattice=args.anneal_rho_lattice, template_start=start,
                                   lattices=lattices)
        res = score_csp(samples, targets, workers=args.workers, metre=False, progress=False)
        row = {"steps": steps, "s_churn": churn, "anneal_rho": anneal,
               "anneal_rho_lattice": args.anneal_rho_lattice, "template_start": start,
               "given_lattice": args.given_lattice,
               "match_rate_percent": 100 * res.match_rate, "rmse": res.rmse, "n_targets": res.n_targets,
               "n_invalid_samples": res.n_invalid_samples, "sampling_seconds": round(seconds, 2),
               "scoring_seconds": res.seconds, "breakdown": res.breakdown(),
               "per_target": per_target(res),
               "cell": res.cell.summary(), "per_target_cell": res.cell.per_target}
        if args.relax:
            relaxed, info = relax_samples(samples, relax, args.workers)
            rr = score_csp(relaxed, targets, workers=args.workers, metre=False, progress=False)
            row["relaxed"] = {"match_rate_percent": 100 * rr.match_rate, "rmse": rr.rmse,
                              "n_invalid_samples": rr.n_invalid_samples, "relaxation": info,
                              "breakdown": rr.breakdown()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"model": args.model, "dataset": args.dataset, "targets": args.targets,
              "n_targets": len(targets), "subset_seed": args.seed, "rows": rows,
              "note": "one sample per target, elements given; DiffCSP matcher and validity",
              "symmetry_templates": template_info, "precision": args.precision,
              "relax": asdict(relax) if args.relax else None}
    write_result(f"atom_csp_sweep_{args.dataset}{args.suffix}", result, args.device,
                 model=resolve_model_dir(args.model))


if __name__ == "__main__":
    main()
