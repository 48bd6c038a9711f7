"""``crysgen relax``: generated crystals relaxed by CHGNet, written out as a sample folder."""

from __future__ import annotations

import argparse

from crysgen.cli.options import _positive_int
from crysgen.evaluation.relaxation import RELAX_ENGINES, RelaxOptions

D = RelaxOptions()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crysgen relax``."""
    p = subparsers.add_parser(
        "relax", help="relax generated crystals with CHGNet (positions and cell); writes a sample folder",
        description="Relax every crystal of SAMPLES with CHGNet (FIRE on positions and cell, as "
                    "`crysgen evaluate --stability` does) and write OUT as a `crysgen sample` folder: "
                    "relaxed CIFs (the generated one where a relaxation fails), samples.csv, "
                    "relax.csv (energies, RMSD, convergence per crystal) and sample_config.json. "
                    "`crysgen evaluate OUT` then scores the relaxed crystals.")
    p.add_argument("samples", help="a `crysgen sample` folder, a folder of CIFs or a CrystalSet .npz")
    p.add_argument("--out", required=True, help="new folder to write (refused if it holds files)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (slow on a CPU: ~1 s per small crystal)")
    p.add_argument("--steps", type=_positive_int, default=D.steps, help="FIRE steps at most (%(default)s)")
    p.add_argument("--fmax", type=float, default=D.fmax,
                   help="force convergence criterion, eV/Å (%(default)g)")
    p.add_argument("--time-limit", type=float, default=D.time_limit_s,
                   help="seconds per relaxation before it is stopped with a reason (%(default)g)")
    p.add_argument("--fixed-cell", action="store_true",
                   help="relax the atoms' positions only, in the generated cell (the density stays "
                        "the model's)")
    p.add_argument("--engine", default=D.engine, choices=RELAX_ENGINES,
                   help="auto (torch on a GPU, ase on the CPU), ase or torch (%(default)s)")
    p.add_argument("--batch", type=_positive_int, default=None,
                   help="structures per CHGNet forward pass (default: the engine's)")
    p.add_argument("--workers", type=_positive_int, default=1, help="processes for the ase engine (1)")
    p.add_argument("--limit", type=_positive_int, default=None, help="the first N crystals only")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run that left OUT.partial (same SAMPLES, --limit, "
                        "--fixed-cell, --steps, --fmax and --time-limit); its saved parts are kept")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_relax)


def _cmd_relax(args: argparse.Namespace) -> int:
    from crysgen.data.guards import check_device
    from crysgen.errors import CrysgenError
    from crysgen.evaluation.relaxed_samples import check_relax_output, relax_samples

    check_device(args.device)  # every option and the output folder before any work
    if not args.fmax > 0:
        raise CrysgenError(f"--fmax must be > 0, got {args.fmax}")
    if not args.time_limit > 0:
        raise CrysgenError(f"--time-limit must be > 0, got {args.time_limit}")
    check_relax_output(args.out)
    options = RelaxOptions(fmax=args.fmax, steps=args.steps, time_limit_s=args.time_limit,
                           device=args.device, batch_size=args.batch, engine=args.engine)
    res = relax_samples(args.samples, args.out, options, relax_cell=not args.fixed_cell,
                        workers=args.workers, limit=args.limit, progress=not args.quiet, resume=args.resume)
    rmsd = "n/a" if res.mean_rmsd is None else f"{res.mean_rmsd:.3f} Å"
    print(f"relaxed {res.relaxed} of {res.n} crystals ({res.converged} converged, "
          f"{res.kept_as_generated} kept as generated, {res.without_structure} without a structure) "
          f"in {res.seconds:.0f} s; mean RMSD {rmsd}; structurally valid {res.structurally_valid_before} "
          f"-> {res.structurally_valid_after}")
    print(f"wrote {res.out} (cifs/, samples.csv, relax.csv); score it with `crysgen evaluate {res.out} ...`")
    return 0
