"""``crysgen evaluate``: score generated crystals."""

from __future__ import annotations

import argparse
from pathlib import Path

from crysgen.cli.options import _positive_int
from crysgen.errors import CrysgenError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crysgen evaluate``."""
    from crysgen.evaluation.coverage import COV_CUTOFFS
    from crysgen.evaluation.suite import HULL_REFERENCE
    from crysgen.evaluation.suite import EvalOptions as D  # the defaults, written once there

    p = subparsers.add_parser("evaluate", help="score generated crystals (validity, coverage, novelty, ...)")
    p.add_argument("samples", help="a `crysgen sample` output folder, a folder of CIFs or a CrystalSet .npz")
    p.add_argument("--train", default=None,
                   help="training CrystalSet .npz (needed by novelty and stability)")
    p.add_argument("--reference", required=True,
                   help="reference CrystalSet .npz (the test split; for csp: the target crystals)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--metrics", default=None,
                   help="comma-separated families: validity,distributions,coverage,novelty,properties "
                        "(the default), stability, csp (samples that name their targets: match rate, "
                        "RMSE, cRMSE, METRe)")
    p.add_argument("--cov-cutoffs", default=None, help="STRUCT,COMP fingerprint cut-offs")
    p.add_argument("--comp-scaler", default=D.comp_scaler,
                   help="what standardises Magpie composition fingerprints for COV: cdvae (CDVAE's "
                        "fixed constants, default), reference (the reference's own statistics) or a "
                        "CrystalSet .npz whose statistics are used")
    p.add_argument("--cov-over", choices=("all", "valid"), default=D.cov_over,
                   help="generated crystals COV uses: all with fingerprints (CDVAE, default) or only "
                        "the valid ones")
    p.add_argument("--smact-tables", choices=("smact-2.2.1", "installed"), default=D.smact_tables,
                   help="oxidation states and electronegativities of compositional validity "
                        "(CDVAE's SMACT 2.2.1, default; or the installed smact)")
    p.add_argument("--csp-validity", choices=("cdvae", "structural", "none"), default=D.csp_validity,
                   help="what makes a CSP sample valid (cdvae: DiffCSP's check, default)")
    p.add_argument("--no-metre", action="store_true", help="csp: skip OMatG's METRe matches")
    p.add_argument("--comp-scaler-from", default=None,
                   help="the older spelling of --comp-scaler FILE")
    p.add_argument("--dataset", default=None, choices=sorted(COV_CUTOFFS),
                   help="CDVAE cut-offs of this dataset (default: guessed from the --reference name, "
                        "else mp_20's with a printed note)")
    p.add_argument("--property-model", default=None,
                   help="property model for CDVAE's W(property), e.g. formation_energy")
    p.add_argument("--models-dir", default=None, help="default: $CRYSGEN_MODELS_DIR")
    p.add_argument("--workers", type=_positive_int, default=D.workers, help="processes (%(default)s)")
    p.add_argument("--device", default=D.device, help="cpu or cuda (%(default)s)")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N samples only")
    p.add_argument("--reference-limit", type=_positive_int, default=None,
                   help="a seeded random subset of N reference crystals for coverage, distributions "
                        "and properties (the stability hull takes them all unless --hull-reference subset)")
    p.add_argument("--hull-reference", choices=HULL_REFERENCE, default=D.hull_reference,
                   help="reference crystals in the stability hull beside the training set: all, or the "
                        "--reference-limit subset (%(default)s)")
    p.add_argument("--stability", action="store_true",
                   help="also run CHGNet stability: relaxation, energy above the train+reference "
                        "hull, stable and S.U.N. rates (slow on a CPU; use --device cuda)")
    p.add_argument("--relax-steps", type=_positive_int, default=D.relax_steps,
                   help="FIRE steps at most (%(default)s)")
    p.add_argument("--relax-time-limit", type=float, default=D.relax_time_limit_s,
                   help="seconds per relaxation before it is stopped with a reason (%(default)g)")
    p.add_argument("--relax-workers", type=_positive_int, default=None,
                   help="processes for the relaxation (default: --workers; on a GPU each holds a "
                        "CUDA context and ~25 MB per structure of its forward batch)")
    p.add_argument("--relax-batch", type=_positive_int, default=D.relax_batch_size,
                   help="structures per CHGNet forward pass (default: the relaxation engine's, 64 "
                        "for ase and 512 for torch; 64 for static energies)")
    p.add_argument("--relax-engine", default=D.relax_engine,
                   help="auto (default: torch on a GPU, ase on the CPU), ase (ASE's FIRE and "
                        "FrechetCellFilter per structure in --relax-workers processes) or torch "
                        "(the same steps as batched tensors on the device, graphs included; the "
                        "same relaxations to float noise)")
    p.add_argument("--potential", default=D.potential,
                   help="what rates stability: chgnet (default), sevennet (SevenNet-0's static "
                        "energies of the CHGNet-relaxed structures and of the hull; needs "
                        "pip install 'crysgen[potentials]') or both (E_hull under each, both "
                        "stable rates and their agreement)")
    p.add_argument("--cache-dir", default=None,
                   help="cache of reference energies and fingerprints "
                        "(default $CRYSGEN_CACHE or ~/.cache/crysgen)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from crysgen.data.guards import check_output_dir
    from crysgen.evaluation.report import notes
    from crysgen.evaluation.suite import FAMILIES, EvalOptions, evaluate, write_report

    cut = None
    if args.cov_cutoffs:
        try:
            s_cut, c_cut = (float(x) for x in args.cov_cutoffs.split(","))
        except ValueError as exc:
            raise CrysgenError(f"--cov-cutoffs takes STRUCT,COMP, got {args.cov_cutoffs!r}") from exc
        cut = (s_cut, c_cut)
    metrics = tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else FAMILIES
    if (args.stability or args.potential != "chgnet") and "stability" not in metrics:
        metrics = (*metrics, "stability")  # --potential sevennet|both implies --stability
    options = EvalOptions(metrics=metrics, cov_cutoffs=cut, dataset=args.dataset,
                          comp_scaler=args.comp_scaler, comp_scaler_from=args.comp_scaler_from,
                          cov_over=args.cov_over, smact_tables=args.smact_tables,
                          csp_validity=args.csp_validity, csp_metre=not args.no_metre,
                          property_model=args.property_model, models_dir=args.models_dir,
                          workers=args.workers, limit=args.limit, reference_limit=args.reference_limit,
                          hull_reference=args.hull_reference,
                          device=args.device, relax_steps=args.relax_steps,
                          relax_time_limit_s=args.relax_time_limit, cache_dir=args.cache_dir,
                          relax_workers=args.relax_workers, relax_batch_size=args.relax_batch,
                          relax_engine=args.relax_engine, potential=args.potential)
    check_output_dir(args.out)  # before any work (issue 22)
    # metrics.json says which step is running and how long each took, until the report replaces it
    ev = evaluate(args.samples, args.train, args.reference, options, progress=not args.quiet,
                  status_file=Path(args.out) / "metrics.json")
    write_report(ev, args.out, title=f"crysgen evaluate: {args.samples}", options=options)
    print(f"{'metric':<20} {'value':>10} {'n':>7}")
    for name, m in ev.metrics.items():
        if isinstance(m["value"], dict):
            shown = " ".join(f"{k}={v['statistic']:.3f}" for k, v in sorted(m["value"].items()))
            print(f"{name:<20} {shown}")
        else:
            print(f"{name:<20} {m['value']:>10.4g} {m['n']:>7}  {notes(m)}".rstrip())
    print(f"wrote {Path(args.out) / 'metrics.json'}, structures.csv and report.html "
          f"({ev.seconds['total']:.0f} s)")
    return 0
