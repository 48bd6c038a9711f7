"""Crystal structure prediction by generate-and-rank: k candidates per target, the lowest-energy one kept.

Writes benchmarks/results/csp_rank_<dataset><suffix>.json.

For a seeded subset of target crystals (the same subset as ``atom_csp_sweep.py`` for the same
``--n`` and ``--seed``), an atom diffusion model makes several candidates per target composition,
each from its own recipe (``--candidates``: ``templates:SEED`` = on the symmetry of the training
crystal that fits the composition best, ``templates:SEED:RANK`` = on that of the best-fitting
crystal of the (RANK + 1)-th best space group, so that candidates differ in symmetry,
``plain:SEED`` = no symmetry, SEED the noise). Every
decoded candidate gets its static (unrelaxed) energy per atom from a machine-learned potential
(CHGNet by default); per target the structurally valid candidate of lowest energy is the answer
(none valid: the first recipe's); ``copy:RANK`` = no model: the rank-RANK template itself with the
target's elements (``csp_template_copy.py``'s prediction), so that prototype substitution can be
relaxed and ranked like the model's candidates. No target structure is used to choose. Scored with
:func:`crysgen.evaluation.csp.score_csp` (DiffCSP's matcher and validity):

- each recipe alone (one sample per target);
- the ranked answer (one sample per target: comparable with one-sample match rates, but it costs
  k samples and k energies per target, so it is labelled as ranked, never as one-shot); with
  ``--relax-steps N[,M...]`` also ranked by each candidate's CHGNet energy after N (M, ...) FIRE
  steps (the candidate as sampled stays the answer), and with ``--score-relaxed`` also that choice
  scored after its relaxation (the relaxed crystal is the answer: generate, relax, rank);
- with ``--vote``, the candidate that most of the target's other candidates match (DiffCSP's matcher
  between candidates, :func:`crysgen.evaluation.csp.mutual_matches`; ties by static energy): the
  sampler's own consensus, no target and no potential needed to choose; with ``--by-symmetry``,
  the candidate of the largest point group (spglib at 0.1 Å; ties by static energy); ``--table``
  writes every candidate's features and verdict (one CSV row each) for a learned choice;
- best of k (a target counts if any candidate matches, which needs the target to choose: an upper
  bound for any ranking; from each recipe's one-sample verdicts, so an invalid target is a miss,
  stricter than DiffCSP's k > 1 protocol).

Every candidate is matched once, by its recipe's scoring; the ranked answer and best of k reuse
those verdicts. Each target's validity is checked once for all scorings.

Usage::

    python benchmarks/csp_rank.py src/crysgen/pretrained/atom_diffusion_mp20 \
        --targets .gpuwork/mp_20_asis_test.npz --symmetry-prior .gpuwork/mp_20_asis_train_partial.npz \
        --n 1000 --candidates templates:0,templates:1,plain:0 --device cpu --workers 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from atom_csp_sweep import add_target_arguments, load_targets, predict
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.data.validity import structurally_valid
from crysgen.errors import CrysgenError
from crysgen.evaluation.csp import CSPSample, mutual_matches, score_csp
from crysgen.evaluation.potentials import static_energies
from crysgen.evaluation.stability import RelaxOptions
from crysgen.evaluation.suite import relax_all
from crysgen.pipelines.atoms import AtomDiffusionModel
from crysgen.pipelines.generators import resolve_model_dir
from crysgen.pipelines.symmetry import match_templates
from csp_template_copy import copies
from provenance import write_result


def parse_candidates(text: str, minimum: int = 2) -> list[tuple[str, int, int]]:
    """``templates:0,templates:0:1,plain:0`` -> [("templates", 0, 0), ("templates", 0, 1), ("plain", 0, 0)].

    Each item is KIND:SEED, or templates:SEED:RANK for the template of another space group
    (:func:`~crysgen.pipelines.symmetry.match_templates`'s ``rank``; 0 when left out), or
    copy:RANK (no model, no seed: ("copy", 0, RANK)); at least ``minimum`` of them
    (``--candidates`` ranks, so 2; an ``--also`` subset may be one recipe).
    """
    out = []
    for item in text.split(","):
        kind, _, rest = item.partition(":")
        if kind == "copy":
            if not rest.isdigit():
                raise CrysgenError(f"--candidates: {item!r} is not copy:RANK")
            out.append(("copy", 0, int(rest)))
            continue
        seed, _, rank = rest.partition(":")
        ok = (kind in ("templates", "plain") and seed.lstrip("-").isdigit()
              and (not rank or (kind == "templates" and rank.isdigit())))
        if not ok:
            raise CrysgenError(f"--candidates: {item!r} is not templates:SEED[:RANK], plain:SEED "
                               "or copy:RANK")
        out.append((kind, int(seed), int(rank or 0)))
    if len(out) < minimum:
        raise CrysgenError(f"--candidates: ranking needs at least {minimum} recipes")
    return out


def recipe_name(kind: str, seed: int, rank: int) -> str:
    """The recipe as ``--candidates`` spells it."""
    if kind == "copy":
        return f"copy:{rank}"
    return f"{kind}:{seed}" + (f":{rank}" if rank else "")


def pick_lowest(energies: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per target (row) the candidate (column) of lowest energy among the valid ones.

    Args:
        energies: float (n, k) eV/atom, NaN where there is none.
        valid: bool (n, k) structurally valid candidates.

    Returns:
        int (n,) the chosen column (0 where no candidate is valid with a finite energy).
    """
    e = np.where(valid & np.isfinite(energies), energies, np.inf)
    return np.where(np.isfinite(e).any(1), np.argmin(e, 1), 0)


def pick_most(score: np.ndarray, energies: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per target (row) the valid candidate of the highest ``score``, ties to the lower energy.

    Ties of both go to the first column; a target without a valid candidate gets column 0, as in
    :func:`pick_lowest`.

    Args:
        score: float or int (n, k), e.g. how many other candidates agree, or a point-group order.
        energies: float (n, k) eV/atom, NaN where there is none.
        valid: bool (n, k) structurally valid candidates.

    Returns:
        int (n,) the chosen column.
    """
    e = np.where(valid & np.isfinite(energies), energies, np.inf)
    chosen = np.zeros(len(valid), int)
    for i in range(len(valid)):
        ok = np.flatnonzero(valid[i])
        if len(ok):
            chosen[i] = ok[np.lexsort((e[i, ok], -score[i, ok]))[0]]
    return chosen


def votes(agree: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """int (n, k): how many of each candidate's fellow valid candidates match it (``mutual_matches``)."""
    return (agree & valid[:, None, :]).sum(2)


def point_group_orders(columns: list[list[CSPSample]], valid: np.ndarray,
                       symprec: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Each valid candidate's point-group order and space-group number (spglib at ``symprec`` Å).

    The point group's order does not depend on the cell chosen, unlike the count of space-group
    operations. Where spglib gives up: order 1, space group 0.

    Returns:
        (orders, space groups): int (n, k) each, 0 where the candidate is not valid.
    """
    from crysgen.data.guards import spacegroup_analyzer

    orders = np.zeros(valid.shape, int)
    groups = np.zeros(valid.shape, int)
    for i, j in zip(*np.nonzero(valid), strict=True):
        try:
            sga = spacegroup_analyzer(columns[j][i].structure, symprec)
            orders[i, j] = len(sga.get_point_group_operations())
            groups[i, j] = sga.get_space_group_number()
        except Exception:  # spglib gives up on some generated cells: no symmetry found
            orders[i, j], groups[i, j] = 1, 0
    return orders, groups


def rank_columns(matched: np.ndarray, rms: np.ndarray, energies: np.ndarray, valid: np.ndarray,
                 names: list[str], chosen: np.ndarray | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ranked answer and best of k over the candidates (columns) of every target (row).

    Each candidate's verdict is the one its recipe's one-sample scoring gave it (DiffCSP's matcher
    and validity), so the ranked answer needs no second matching.

    Args:
        matched: bool (n, k) the candidate matched its target.
        rms: float (n, k) its RMS distance where matched (NaN elsewhere).
        energies: float (n, k) static energies, eV/atom (NaN where none).
        valid: bool (n, k) structurally valid candidates.
        names: the k recipes' names.
        chosen: int (n,) the answer's column per target (None: the lowest energy, :func:`pick_lowest`).

    Returns:
        (ranked, best of k) rows: match rate in percent and RMSE over matches.
    """
    n = len(matched)
    if chosen is None:
        chosen = pick_lowest(energies, valid)
    hit = matched[np.arange(n), chosen]
    hit_rms = rms[np.arange(n), chosen][hit]
    ranked = {"match_rate_percent": 100 * float(hit.mean()),
              "rmse": float(hit_rms.mean()) if hit.any() else float("nan"),
              "chosen_per_recipe": {name: int((chosen == j).sum()) for j, name in enumerate(names)},
              "targets_without_a_valid_candidate": int((~valid).all(1).sum())}
    any_hit = matched.any(1)
    best = {"k": len(names), "match_rate_percent": 100 * float(any_hit.mean()),
            "rmse": float(np.nanmin(rms[any_hit], 1).mean()) if any_hit.any() else float("nan")}
    return ranked, best


def denoising_errors(model: AtomDiffusionModel, structures: list[Any], sigmas: list[float], *,
                     device: str, batch: int, seed: int = 0) -> np.ndarray:
    """Per crystal the model's denoising error with its elements given: a plausibility score.

    Each crystal (in its Niggli cell, as the model was trained) is noised at every σ of ``sigmas``
    with noise from a CPU generator seeded ``[seed, crystal]``, denoised once, and scored by the
    EDM loss of its coordinates and lattice (the raw-output squared error, λ(σ)·|D − x|², the
    parts weighted by the model's loss weights), averaged over the σ levels. Lower means the
    model finds the crystal more like the ones it was trained on.

    Returns:
        float (n,) errors.
    """
    import torch

    from crysgen.objectives.atom_edm import Constants, Parts, denoise, wrap, wrap_centered
    from crysgen.pipelines.seeding import torch_generator
    from crysgen.representations.atoms import niggli_reduce

    ids = [str(i) for i in range(len(structures))]
    crystals = niggli_reduce(CrystalSet.from_structures(structures, ids=ids))
    sets = model.encode(crystals)
    net, cfg, consts = model.net.to(device).eval(), model.edm, Constants.from_spec(model.spec)
    w_c, w_l = cfg.weights[1], cfg.weights[2]
    out = np.zeros(len(structures))
    for lo in range(0, len(structures), batch):
        idx = np.arange(lo, min(lo + batch, len(structures)))
        mask = torch.as_tensor(sets.mask[idx]).to(device)
        m = mask[..., None].float()
        x0 = Parts(torch.as_tensor(sets.types[idx]).to(device), torch.as_tensor(sets.frac[idx]).to(device),
                   torch.as_tensor(sets.lattice[idx]).to(device))
        given = torch.ones(len(idx), dtype=torch.bool, device=device)
        for k, sigma in enumerate(sigmas):
            gens = [torch_generator([seed, int(i), k]) for i in idx]
            eps_c = torch.stack([torch.randn(x0.frac.shape[1:], generator=g) for g in gens]).to(device)
            eps_l = torch.stack([torch.randn(6, generator=g) for g in gens]).to(device)
            xt = Parts(x0.types, wrap(x0.frac + sigma * eps_c) * m, x0.lattice + sigma * eps_l)
            s = torch.full((len(idx),), float(sigma), device=device)
            with torch.no_grad():  # the preconditioning's output scales come with the raw outputs
                d, _, (_, _, out_c, _, out_l) = denoise(net, xt, s, mask, given, cfg, consts, raw=True)
            err_c = ((wrap_centered(d.frac - x0.frac) / out_c) ** 2 * m).sum((1, 2)) / (3 * m.sum((1, 2)))
            err_l = ((d.lattice - x0.lattice) / out_l).pow(2).mean(1)
            out[idx] += ((w_c * err_c + w_l * err_l) / (w_c + w_l)).cpu().numpy() / len(sigmas)
    return out


def relaxed_energies(columns: list[list[CSPSample]], valid: np.ndarray, steps: int,
                     device: str, workers: int,
                     batch: int | None = None) -> tuple[np.ndarray, dict[tuple[int, int], Any]]:
    """Each valid candidate's CHGNet energy after at most ``steps`` FIRE steps, and its relaxed structure.

    Relaxed as the suite relaxes (:func:`~crysgen.evaluation.suite.relax_all`): on a GPU with the
    torch engine, on the CPU in lockstep batches by ``workers`` processes; CHGNet passes of
    ``batch`` structures (None: the engine's default).

    Returns:
        (energies, structures): float (n, k) eV/atom (NaN: none), and the relaxed structure of
        each (target, candidate) that has one.
    """
    out = np.full(valid.shape, np.nan)
    where = [(i, j) for j in range(valid.shape[1]) for i in range(valid.shape[0]) if valid[i, j]]
    structures = [columns[j][i].structure for i, j in where]
    results = relax_all(structures, RelaxOptions(steps=steps, device=device, batch_size=batch), workers,
                        progress=False)
    relaxed = {}
    for (i, j), r in zip(where, results, strict=True):
        if r.energy_per_atom is not None:
            out[i, j] = r.energy_per_atom
        if r.structure is not None:
            relaxed[i, j] = r.structure
    return out, relaxed


def relaxed_answers(columns: list[list[CSPSample]], chosen: np.ndarray,
                    relaxed: dict[tuple[int, int], Any]) -> list[CSPSample]:
    """Per target its chosen candidate after relaxation (as sampled where the relaxation gave none)."""
    out = []
    for i, j in enumerate(chosen.tolist()):
        s = columns[j][i]
        out.append(CSPSample(id=s.id, target=s.target, structure=relaxed.get((i, j), s.structure),
                             problem=s.problem))
    return out


def write_table(path: str, targets: CrystalSet, names: list[str], valid: np.ndarray, matched: np.ndarray,
                rms: np.ndarray, energies: np.ndarray, agreeing: np.ndarray | None, orders: np.ndarray | None,
                groups: np.ndarray | None, structures: list[list[Any]]) -> None:
    """One CSV row per (target, candidate): what each candidate was and whether it matched.

    Columns: target, recipe, sites, valid, matched, rms_dist (empty unless matched), energy_per_atom
    (static, eV/atom; empty where none), agreeing (other valid candidates that match it; empty
    without --vote), point_group_order and space_group (spglib at 0.1 Å; empty without
    --by-symmetry). Written atomically.
    """
    def cell(a: np.ndarray | None, i: int, j: int, fmt: str = "{}") -> str:
        return "" if a is None or not np.isfinite(a[i, j]) else fmt.format(a[i, j])

    rows = ["target,recipe,sites,valid,matched,rms_dist,energy_per_atom,agreeing,point_group_order,"
            "space_group"]
    for i, t in enumerate(targets.ids):
        for j, name in enumerate(names):
            s = structures[i][j]
            rows.append(",".join([str(t), name, "" if s is None else str(len(s)), str(int(valid[i, j])),
                                  str(int(matched[i, j])), cell(rms, i, j, "{:.5f}"),
                                  cell(energies, i, j, "{:.5f}"), cell(agreeing, i, j),
                                  cell(orders, i, j), cell(groups, i, j)]))
    write_text_atomic(Path(path), "\n".join(rows) + "\n")
    print(f"wrote {path}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the atom diffusion model directory ('none' when every recipe is a copy)")
    add_target_arguments(p)
    p.add_argument("--symmetry-prior", required=True, metavar="TRAIN.npz",
                   help="the crystals templates come from (the model's training split)")
    p.add_argument("--candidates", default="templates:0,templates:1,plain:0")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--churn", type=float, default=10.0)
    p.add_argument("--anneal-rho", type=float, default=0.0,
                   help="anti-annealing exponent of every recipe (0: off, the default here, as in the "
                        "runs before the option; the bundled model samples with 4)")
    p.add_argument("--anneal-rho-lattice", type=float, default=None,
                   help="the lattice's own exponent (0: its steps plain; default: --anneal-rho)")
    p.add_argument("--potential", default="chgnet", choices=("chgnet", "sevennet"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--batch", type=int, default=None,
                   help="crystals per forward pass (default: 64 on a cpu, 2048 on cuda)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--suffix", default="")
    p.add_argument("--relax-steps", default="",
                   help="also rank by CHGNet energy after this many FIRE steps; comma-separated for "
                        "several lengths, each its own relaxation (empty: static energies only)")
    p.add_argument("--relax-batch", type=int, default=RelaxOptions.batch_size,
                   help="structures per CHGNet pass of the relaxations (default: the engine's, 64 "
                        "on a CPU and 512 on a GPU)")
    p.add_argument("--score-relaxed", action="store_true",
                   help="with --relax-steps, also score each ranking's chosen candidate after its "
                        "relaxation (the relaxed crystal is the answer: a generate-relax-rank pipeline)")
    p.add_argument("--denoising-sigmas", default="",
                   help="also rank by the model's denoising error (denoising_errors) at these "
                        "comma-separated σ, averaged (needs a model; e.g. 0.02,0.05,0.1)")
    p.add_argument("--vote", action="store_true",
                   help="also rank by agreement: per target the valid candidate that most of the others "
                        "match (DiffCSP's matcher between candidates, no target used), ties by energy")
    p.add_argument("--by-symmetry", action="store_true",
                   help="also rank by symmetry: per target the valid candidate of the largest point group "
                        "(spglib at 0.1 Å), ties by energy")
    p.add_argument("--table", default=None, metavar="CSV",
                   help="also write one row per candidate (target, recipe, validity, match, RMS distance, "
                        "energy, agreement, point group, space group): what a learned choice would train on")
    p.add_argument("--also", action="append", default=[], metavar="RECIPES",
                   help="also rank within these recipes only (a subset of --candidates, same syntax, one "
                        "recipe allowed; repeatable): the same candidates, fewer of them")
    args = p.parse_args()
    recipes = parse_candidates(args.candidates)
    relax_lengths = [int(x) for x in args.relax_steps.split(",") if x.strip()]
    if any(n < 1 for n in relax_lengths):
        raise CrysgenError(f"--relax-steps {args.relax_steps!r}: every length must be a positive step count")
    if args.score_relaxed and not relax_lengths:
        raise CrysgenError("--score-relaxed needs --relax-steps")
    if relax_lengths and args.potential != "chgnet":
        raise CrysgenError("--relax-steps relaxes with CHGNet: use it with --potential chgnet")
    for text in args.also:
        if not set(parse_candidates(text, minimum=1)) <= set(recipes):
            raise CrysgenError(f"--also {text!r}: every recipe must be one of --candidates")
    batch = args.batch or (64 if args.device == "cpu" else 2048)

    if args.model == "none" and any(kind != "copy" for kind, _, _ in recipes):
        raise CrysgenError("model 'none' serves copy:RANK recipes only")
    model = None if args.model == "none" else AtomDiffusionModel.from_pretrained(args.model)
    targets = load_targets(args)
    targets_z = (targets.atomic_numbers if model is None
                 else model.compositions_from_targets(targets).atomic_numbers)
    prior = CrystalSet.load(args.symmetry_prior)
    templates = {rank: match_templates(targets_z, prior, rank=rank)
                 for rank in sorted({r for kind, _, r in recipes if kind in ("templates", "copy")} | {0})}
    columns: list[list[CSPSample]] = []
    recipe_rows = []
    n_targets = len(targets)
    matched = np.zeros((n_targets, len(recipes)), bool)
    rms = np.full((n_targets, len(recipes)), np.nan)
    target_verdicts: dict[str, str | None] = {}  # every scoring checks each target once
    for j, (kind, seed, rank) in enumerate(recipes):
        if kind == "copy":
            t0 = time.perf_counter()
            samples = copies(targets, templates[rank])
            seconds = time.perf_counter() - t0
        else:
            assert model is not None  # refused above
            samples, seconds = predict(model, targets, steps=args.steps, churn=args.churn, device=args.device,
                                       batch=batch, seed=seed, precision=args.precision,
                                       templates=templates[rank] if kind == "templates" else None,
                                       anneal_rho=args.anneal_rho, anneal_rho_lattice=args.anneal_rho_lattice)
        columns.append(samples)
        res = score_csp(samples, targets, workers=args.workers, metre=False, progress=False,
                        target_verdicts=target_verdicts)
        row_of = {r["id"]: r for r in res.rows}
        for i, t in enumerate(targets.ids):
            r = row_of[str(t)]
            matched[i, j] = bool(r["matched"])
            rms[i, j] = float(r["rms_dist"]) if r["matched"] else np.nan
        recipe_rows.append({"recipe": recipe_name(kind, seed, rank),
                            "match_rate_percent": 100 * res.match_rate,
                            "rmse": res.rmse, "n_invalid_samples": res.n_invalid_samples,
                            "sampling_seconds": round(seconds, 2), "scoring_seconds": res.seconds})
        print(json.dumps(recipe_rows[-1]), flush=True)
    energies = np.full((n_targets, len(recipes)), np.nan)
    valid = np.zeros((n_targets, len(recipes)), bool)
    t0 = time.perf_counter()
    for j, samples in enumerate(columns):
        have = [i for i, s in enumerate(samples) if s.structure is not None]
        valid[have, j] = [structurally_valid(samples[i].structure) for i in have]
        ok = [i for i in have if valid[i, j]]  # only a valid candidate can be chosen
        energies[ok, j] = static_energies([samples[i].structure for i in ok], args.potential,
                                          device=args.device)
    energy_seconds = time.perf_counter() - t0
    names = [recipe_name(*r) for r in recipes]
    every = list(range(len(recipes)))

    def ranked_within(cols: list[int],
                      score: np.ndarray | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """rank_columns over the recipes ``cols``: by static energy, or with ``score`` (n, len(cols))
        the valid candidate of the highest score, ties by energy (:func:`pick_most`)."""
        e, v = energies[:, cols], valid[:, cols]
        return rank_columns(matched[:, cols], rms[:, cols], e, v, [names[c] for c in cols],
                            chosen=None if score is None else pick_most(score, e, v))

    ranked_row, best_row = ranked_within(every)
    ranked_row["energy_seconds"] = round(energy_seconds, 1)
    print(json.dumps(ranked_row), flush=True)
    print(json.dumps(best_row), flush=True)
    denoising_row = None
    if args.denoising_sigmas:
        if model is None:
            raise CrysgenError("--denoising-sigmas needs a model")
        sig = [float(v) for v in args.denoising_sigmas.split(",")]
        errors = np.full((n_targets, len(recipes)), np.nan)
        t0 = time.perf_counter()
        for j, samples in enumerate(columns):
            ok = [i for i in range(n_targets) if valid[i, j]]
            errors[ok, j] = denoising_errors(model, [samples[i].structure for i in ok], sig,
                                             device=args.device, batch=batch)
        denoising_row = {"sigmas": sig} | rank_columns(matched, rms, errors, valid, names)[0]
        denoising_row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({"ranked_by_denoising_error": denoising_row}), flush=True)
    by_target = [[col[i].structure for col in columns] for i in range(n_targets)]  # (n, k) structures
    agree = None
    agreement_row = None
    if args.vote:
        t0 = time.perf_counter()
        agree = mutual_matches([[s if valid[i, j] else None for j, s in enumerate(row)]
                                for i, row in enumerate(by_target)], workers=args.workers, progress=False)
        agreement_row = ranked_within(every, votes(agree, valid))[0]
        agreement_row["seconds"] = round(time.perf_counter() - t0, 1)
        agreement_row["mean_agreeing_pairs"] = float(agree.sum((1, 2)).mean() / 2)
        print(json.dumps({"ranked_by_agreement": agreement_row}), flush=True)
    orders = groups = None
    symmetry_row = None
    if args.by_symmetry:
        t0 = time.perf_counter()
        orders, groups = point_group_orders(columns, valid)
        symmetry_row = ranked_within(every, orders)[0]
        symmetry_row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({"ranked_by_symmetry": symmetry_row}), flush=True)
    if args.table:
        write_table(args.table, targets, names, valid, matched, rms, energies,
                    votes(agree, valid) if agree is not None else None, orders, groups, by_target)
    relaxed_rows: list[dict[str, Any]] = []
    subsets = []
    for text in args.also:  # the same candidates' verdicts and energies, fewer recipes
        cols = [recipes.index(r) for r in parse_candidates(text, minimum=1)]
        sub_ranked, sub_best = ranked_within(cols)
        subsets.append({"recipes": [names[c] for c in cols], "columns": cols, "ranked": sub_ranked,
                        "best_of_k": sub_best})
        if agree is not None:
            subsets[-1]["ranked_by_agreement"] = ranked_within(
                cols, votes(agree[:, cols][:, :, cols], valid[:, cols]))[0]
        if orders is not None:
            subsets[-1]["ranked_by_symmetry"] = ranked_within(cols, orders[:, cols])[0]
        print(json.dumps(subsets[-1]), flush=True)
    result = {"model": args.model, "dataset": args.dataset, "targets": args.targets, "n_targets": n_targets,
              "subset_seed": args.seed, "steps": args.steps, "s_churn": args.churn,
              "anneal_rho": args.anneal_rho, "anneal_rho_lattice": args.anneal_rho_lattice,
              "potential": args.potential,
              "precision": args.precision, "symmetry_prior": args.symmetry_prior,
              "share_with_template": {str(r): t.share_fitted() for r, t in templates.items()},
              "recipes": recipe_rows, "ranked": ranked_row, "best_of_k": best_row, "subsets": subsets,
              "ranked_by_denoising_error": denoising_row, "ranked_by_agreement": agreement_row,
              "ranked_by_symmetry": symmetry_row, "table": args.table,
              "ranked_relaxed": relaxed_rows, "relax_steps_asked": relax_lengths,
              "complete": not relax_lengths,
              "note": "ranked = per target the structurally valid candidate of lowest static energy per atom "
                      "(no target used); ranked_relaxed = the same by CHGNet energy after relax_steps FIRE "
                      "steps (relaxed_answer: that choice scored after its relaxation); best_of_k = any "
                      "candidate matched (the target chooses; invalid targets are misses, as with one "
                      "sample); ranked_by_agreement = per target the valid candidate most other "
                      "candidates match (DiffCSP's matcher between candidates; ties by static energy); "
                      "ranked_by_symmetry = the valid candidate of the largest point group (spglib at "
                      "0.1 Å; ties by static energy); "
                      "complete = false while relaxations asked for are still to come (the file "
                      "is rewritten after each phase, so a run cut short keeps what it finished)"}
    name = f"csp_rank_{args.dataset}{args.suffix}"
    model_dir = None if model is None else resolve_model_dir(args.model)
    write_result(name, result, args.device, model=model_dir)

    def relaxed_row(cols: list[int], energies_n: np.ndarray, structures_n: dict[tuple[int, int], Any],
                    steps: int) -> dict[str, Any]:
        """The ranking within the recipes ``cols`` by relaxed energies (its choice scored relaxed too
        with --score-relaxed): one row of ``ranked_relaxed``, overall or of a subset."""
        row = {"relax_steps": steps} | rank_columns(matched[:, cols], rms[:, cols], energies_n[:, cols],
                                                    valid[:, cols], [names[c] for c in cols])[0]
        if args.score_relaxed:  # the chosen candidate after its relaxation is the answer
            pick = np.asarray(cols)[pick_lowest(energies_n[:, cols], valid[:, cols])]
            res = score_csp(relaxed_answers(columns, pick, structures_n), targets, workers=args.workers,
                            metre=False, progress=False, target_verdicts=target_verdicts)
            row["relaxed_answer"] = {"match_rate_percent": 100 * res.match_rate, "rmse": res.rmse,
                                     "n_invalid_samples": res.n_invalid_samples}
        return row

    for n_done, steps in enumerate(relax_lengths, 1):  # the same candidates ranked after a relaxation
        t0 = time.perf_counter()
        energies_n, structures_n = relaxed_energies(columns, valid, steps, args.device, args.workers,
                                                    args.relax_batch)
        relax_seconds = round(time.perf_counter() - t0, 1)
        row = relaxed_row(list(range(len(recipes))), energies_n, structures_n, steps)
        relaxed_rows.append(row | {"relax_seconds": relax_seconds})
        print(json.dumps(relaxed_rows[-1]), flush=True)
        for sub in subsets:
            sub_row = relaxed_row(sub["columns"], energies_n, structures_n, steps)
            sub.setdefault("ranked_relaxed", []).append(sub_row)
            print(json.dumps({"recipes": sub["recipes"], **sub_row}), flush=True)
        result["complete"] = n_done == len(relax_lengths)
        write_result(name, result, args.device, model=model_dir)


if __name__ == "__main__":
    main()
