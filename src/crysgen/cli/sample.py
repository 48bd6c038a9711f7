"""``crysgen sample``: crystals from a model directory."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from crysgen.cli.options import _positive_int
from crysgen.errors import CrysgenError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crysgen sample``."""
    from crysgen.data.substitution import DRAWS
    from crysgen.pipelines.protocol import PRECISIONS
    from crysgen.pipelines.protocol import SampleOptions as D  # the defaults, written once there
    from crysgen.representations.crystens import DECODE_MODES

    p = subparsers.add_parser("sample", help="sample crystals from a model directory (resumable)")
    p.add_argument("model", nargs="?", default=None,
                   help="model directory of any kind: atom_diffusion, diffusion, cascade, gan, wgan, "
                        "voxel_vae; a training run directory is taken to mean its model/ (default: the "
                        "bundled mp_20 atom diffusion model)")
    p.add_argument("-n", type=_positive_int, default=None, help="number of samples")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--condition", type=int, default=None,
                   help="voxel VAE: condition decile class 0..9 (default: random per sample, or the base's)")
    p.add_argument("--around", default=None, metavar="DATA.npz:ID|CIF",
                   help="voxel VAE: sample around this base crystal (targeted sampling)")
    p.add_argument("--sigma", type=float, default=D.sigma2,
                   help="voxel VAE: latent variance σ² around the base (%(default)s)")
    p.add_argument("--prior", choices=("standard", "posterior"), default=D.prior,
                   help="voxel VAE: random latents from N(0, I) (the authors') or from the Gaussian "
                        "matched to the training crystals' posteriors (latent_prior.npz)")
    p.add_argument("--merge-tol", type=float, default=None, metavar="ANGSTROM",
                   help="voxel VAE: decoded regions closer than this are one site (default: the model's "
                        "voxel.json merge_tol, the training crystals' closest nearest-neighbour distance)")
    p.add_argument("--interpolate", nargs=2, default=None, metavar=("A", "B"),
                   help="voxel VAE: decode points on the latent line between two crystals "
                        "(DATA.npz:ID or CIF)")
    p.add_argument("--points", type=_positive_int, default=10, help="points of --interpolate (10)")
    p.add_argument("--formula", default=None,
                   help="atom or single-stage CrysTens diffusion: sample crystals of exactly this "
                        "composition, e.g. LiFePO4")
    p.add_argument("--num-atoms", type=_positive_int, default=None,
                   help="with --formula: sites per cell (a multiple of the formula's; "
                        "default: drawn from the training distribution)")
    p.add_argument("--cell", type=_cell, default=None, metavar="A,B,C,ALPHA,BETA,GAMMA",
                   help="atom diffusion with --formula and --num-atoms: hold every sample's cell at these "
                        "lattice parameters (Å, degrees; e.g. indexed from a powder pattern) and sample "
                        "only the sites; written in its Niggli-reduced setting")
    p.add_argument("--compositions", default=None, metavar="TARGETS.npz",
                   help="atom or single-stage CrysTens diffusion: one sample per crystal of this CrystalSet "
                        "with its elements (crystal structure prediction; samples.csv names each "
                        "sample's target)")
    p.add_argument("--composition-prior", default=None, metavar="TRAIN.npz|MODEL_DIR|bundled",
                   help="atom or single-stage CrysTens diffusion: give each of the -n samples the "
                        "composition of a crystal drawn (seeded) from this CrystalSet, typically the "
                        "model's training set, or one sampled from a composition model (`crysgen train "
                        "composition`; 'bundled': the one fitted to mp_20): composition first, then "
                        "structure")
    p.add_argument("--substitute", nargs="?", const="probability", default=None, type=_draw,
                   metavar="{" + ",".join(DRAWS) + "}",
                   help="with --composition-prior: change each drawn composition by one ion "
                        "substitution to a composition the CrystalSet does not hold, drawn by "
                        "pymatgen's data-mined probabilities ('probability', the default) or by those "
                        "probabilities tilted so that the formula mass does not change on average "
                        "('mass-balanced': the data-mined draw favours heavier ions, and so denser "
                        "crystals); summary.json counts the substituted")
    p.add_argument("--symmetry-prior", default=None, metavar="TRAIN.npz",
                   help="atom diffusion: give each sample the symmetry (site count, space-group "
                        "operations, Wyckoff orbits) of a crystal of this CrystalSet, kept at every "
                        "sampling step: drawn from it de novo, the drawn crystal with --composition-prior "
                        "(same file), the best-fitting one with --compositions or --formula")
    p.add_argument("--template-start", type=float, default=None, metavar="SIGMA",
                   help="atom diffusion with --symmetry-prior and given elements: start each sample "
                        "from its template crystal itself (coordinates and cell) noised to this σ "
                        "(e.g. 1), so the model refines the template (prototype substitution, then "
                        "diffusion) instead of sampling from noise")
    p.add_argument("--restart", type=_restart, default=None, metavar="SIGMA:STEPS[:ROUNDS]",
                   help="atom diffusion: noise every finished sample again to SIGMA and sample it back "
                        "down with STEPS Heun steps, ROUNDS times (default 1): restart sampling, which "
                        "lets the model correct what the first pass got wrong above SIGMA (e.g. 0.1:20)")
    p.add_argument("--repair", type=functools.partial(_restart, flag="--repair"), default=None,
                   metavar="SIGMA:STEPS[:ROUNDS]|off",
                   help="atom diffusion: sample again from SIGMA (STEPS Heun steps) every sample with two "
                        "sites closer than 0.5 Å, the later site of each such pair from a fresh random "
                        "position; up to ROUNDS times (default 1) while any still collide (e.g. 0.3:20:3); "
                        "default: the model's own (the bundled mp_20 model: 0.3:20:3), 'off': none")
    p.add_argument("--template-ranker", default=None, metavar="bundled|RANKER.json",
                   help="atom diffusion with --symmetry-prior and --compositions or --formula: choose each "
                        "composition's template among its fitting crystals with a learned ranker ('bundled': "
                        "fitted on mp_20's validation split against its training split) instead of the "
                        "most alike exchange of elements")
    p.add_argument("--per-target", type=_positive_int, default=D.per_target,
                   help="samples per target of --compositions (%(default)s)")
    p.add_argument("--space-group", type=int, default=None,
                   help="atom diffusion models trained with space groups: sample this one (1-230)")
    p.add_argument("--guidance", type=float, default=D.guidance,
                   help="classifier-free guidance weight of --space-group (%(default)g; a weight of 1 "
                        "is the conditional model alone)")
    p.add_argument("--churn", type=float, default=None,
                   help="atom diffusion: EDM's S_churn, fresh noise before every step (0: deterministic; "
                        "default: the model's setting)")
    p.add_argument("--anneal-rho", type=float, default=None,
                   help="atom diffusion: anti-annealing, each step's coordinate and lattice move "
                        "lengthened to that of a Karras schedule of this exponent where longer, never "
                        "past the denoised estimate (e.g. 4 against the schedule's 7: sharper sites; 0: off; "
                        "default: the model's setting)")
    p.add_argument("--anneal-rho-lattice", type=float, default=None,
                   help="atom diffusion: the lattice's own anti-annealing exponent (0: off, e.g. with "
                        "--anneal-rho 4 for sharper sites at the trained densities; default: the model's "
                        "setting, else --anneal-rho)")
    p.add_argument("--precision", choices=PRECISIONS, default=D.precision,
                   help="atom diffusion: the network's arithmetic (%(default)s: bf16 on cuda, as it was "
                        "trained, fp32 on cpu)")
    p.add_argument("--limit-element-count", action="store_true",
                   help="atom diffusion models conditioned on the number of elements: snap each "
                        "sample to at most the count it was conditioned on (default: every site to "
                        "its nearest element)")
    p.add_argument("--steps", type=_positive_int, default=D.steps,
                   help="diffusion sampler steps (%(default)s; GANs ignore it; atom diffusion: Heun steps)")
    p.add_argument("--sampler", choices=("ddim", "dpmsolver", "ddpm"), default=D.sampler,
                   help="CrysTens diffusion sampler (%(default)s; an EDM model: ddim = EDM's Euler, "
                        "dpmsolver = EDM's DPM-Solver++, no ddpm)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="tensors per forward pass (default: 256 on cuda; on cpu 16, or 64 for atom "
                        "diffusion, where these measured faster)")
    p.add_argument("--chunk-size", type=_positive_int, default=D.chunk_size,
                   help="samples per resumable chunk (%(default)s; part of the options a resume must match)")
    p.add_argument("--seed", type=int, default=D.seed)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--decode-mode", choices=DECODE_MODES, default=D.decode_mode)
    p.add_argument("--symprec", type=float, default=None,
                   help="auto decode: snap crystals to spglib symmetry at this tolerance (Å)")
    p.add_argument("--save-tensors", action="store_true", help="also keep the raw tensors (.npz)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="processes that write CIFs and check crystals, and the voxel VAE's watershed "
                        "(1; does not change the crystals)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_sample)


def _draw(text: str) -> str:
    """``--substitute``'s value: a draw name; a path there is a model directory put after the option."""
    from crysgen.data.substitution import DRAWS

    if text in DRAWS:
        return text
    hint = (f"; {text} is a path: give the model directory before the options, or write "
            "--substitute=probability" if Path(text).exists() else "")
    raise argparse.ArgumentTypeError(f"must be one of {', '.join(DRAWS)}, got {text!r}{hint}")


def _cell(text: str) -> tuple[float, ...]:
    """``--cell``'s value A,B,C,ALPHA,BETA,GAMMA as six floats, refused as argparse refuses."""
    try:
        cell = tuple(float(v) for v in text.split(","))
    except ValueError:
        cell = ()
    if len(cell) != 6:
        raise argparse.ArgumentTypeError(f"must be six comma-separated numbers a,b,c,alpha,beta,gamma, "
                                         f"got {text!r}")
    return cell


def _restart(text: str, flag: str = "--restart") -> tuple[float, int, int] | str | None:
    """``flag``'s value SIGMA:STEPS[:ROUNDS] as (σ, steps, rounds), refused as argparse refuses.

    ``--repair off`` stays "off" (no repair, where the model's own default would repair).
    """
    from crysgen.pipelines.protocol import restart_schedule

    if flag == "--repair" and text == "off":
        return text
    try:
        return restart_schedule(text, flag=flag)
    except CrysgenError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _cmd_sample(args: argparse.Namespace) -> int:
    from crysgen.pipelines.sampling import SampleOptions, sample_to_dir

    n = args.points if args.interpolate else args.n
    if n is None and args.compositions:
        from crysgen.crystal_set import CrystalSet
        from crysgen.data.guards import check_input_file

        check_input_file(args.compositions, "--compositions")
        n = len(CrystalSet.load(args.compositions)) * args.per_target
    if n is None:
        raise CrysgenError("-n is required (or --interpolate A B --points K, or --compositions FILE)")
    options = SampleOptions(n=n, steps=args.steps, sampler=args.sampler, seed=args.seed,
                            decode_mode=args.decode_mode, symprec=args.symprec,
                            chunk_size=args.chunk_size,
                            save_tensors=args.save_tensors, condition=args.condition,
                            around=args.around, sigma2=args.sigma, prior=args.prior,
                            merge_tol=args.merge_tol,
                            interpolate=tuple(args.interpolate) if args.interpolate else None,
                            formula=args.formula, num_atoms=args.num_atoms,
                            compositions=args.compositions, per_target=args.per_target,
                            space_group=args.space_group, guidance=args.guidance, churn=args.churn,
                            anneal_rho=args.anneal_rho, anneal_rho_lattice=args.anneal_rho_lattice,
                            limit_element_count=args.limit_element_count,
                            composition_prior=args.composition_prior, substitute=args.substitute,
                            symmetry_prior=args.symmetry_prior, precision=args.precision,
                            template_start=args.template_start, template_ranker=args.template_ranker,
                            restart=args.restart, repair=args.repair, cell=args.cell)
    summary = sample_to_dir(args.model, args.out, options, device=args.device,
                            batch_size=args.batch_size, progress=not args.quiet,
                            workers=args.workers)
    reasons = f" {summary.failure_reasons}" if summary.failure_reasons else ""
    print(f"{summary.decoded} of {summary.n} samples decoded ({summary.failures} failures"
          f"{reasons}), {summary.structurally_valid} structurally valid "
          f"(atoms >= 0.5 Å apart, volume >= 0.1 Å³)"
          f"{'' if summary.repaired is None else f', {summary.repaired} repaired'}; "
          f"{summary.crystals_per_s} crystals/s")
    print(f"CIFs in {Path(args.out) / 'cifs'}, table in {Path(args.out) / 'samples.csv'}, "
          f"summary in {Path(args.out) / 'summary.json'}")
    return 0
