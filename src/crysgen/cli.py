"""The ``crysgen`` command: thin wrappers over tested library functions."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    from crysgen.crystal_set import CrystalSet
    from crysgen.representations.crystens.layout import CrysTensLayout


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from crysgen.data.guards import check_output_file
    from crysgen.data.prepare import PrepareOptions, prepare_dataset, write_prepared

    options = PrepareOptions(cell=args.cell, max_sites=args.max_sites, limit=args.limit,
                             symprec=args.symprec, max_z=args.max_z, min_distance=args.min_distance)
    check_output_file(args.out, suffix=".npz")
    if not Path(args.source).exists():
        raise CrysgenError(f"source not found: {args.source}")
    t0 = time.perf_counter()
    crystals, report = prepare_dataset(args.source, options, workers=args.workers,
                                       progress=not args.quiet)
    report_path = write_prepared(crystals, report, args.out)
    dt = time.perf_counter() - t0
    dropped = ", ".join(f"{k} {v}" for k, v in report.dropped_by_reason.items()) or "none"
    print(f"kept {report.n_kept} of {report.n_input} crystals in {dt:.1f} s (dropped: {dropped})")
    print(f"wrote {args.out} and {report_path}")
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from crysgen.data.download import download_dataset

    paths = download_dataset(args.name, args.out_dir, base_url=args.base_url,
                             progress=not args.quiet, overwrite=args.overwrite)
    for p in paths:
        print(p)
    print(f"next: crysgen data prepare {paths[0]} --out {Path(args.out_dir) / args.name}_train.npz")
    return 0


def _cmd_data_label(args: argparse.Namespace) -> int:
    from crysgen.data.guards import check_device, check_input_file, check_output_file
    from crysgen.properties.label import label_file

    check_device(args.device)  # before the model loads
    check_input_file(args.data, "DATA")
    check_output_file(args.out, suffix=".npz")
    report = label_file(args.data, args.model, args.property, args.out, overwrite=args.overwrite,
                        device=args.device)
    print(f"{args.property}: {report.n_predicted} predicted, {report.n_kept} known kept, "
          f"{report.n_failed} could not be featurised")
    print(f"wrote {args.out}")
    return 0


def _sites(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _add_layout_options(p: argparse.ArgumentParser) -> None:
    """--sites and --element-code: the CrysTens layout (representations.crystens.layout)."""
    p.add_argument("--sites", type=_sites, default=None,
                   help="CrysTens site rows S (tensor side 12 + S, +10 with element codes), or "
                        "'auto': the data's largest crystal (default: the config's, else the paper's 52)")
    p.add_argument("--element-code", action=argparse.BooleanOptionalAction, default=None,
                   help="header rows with each site's element code (period + group one-hot), "
                        "decoded by snapping to the nearest element (default: the config's, else off)")


def _layout(args: argparse.Namespace, crystals: Callable[[], CrystalSet],
            current: CrysTensLayout | None = None) -> CrysTensLayout:
    """The CrysTens layout: --sites/--element-code over ``current`` (default: the paper's).

    ``crystals`` gives the data, read only for ``--sites auto``.
    """
    from crysgen.representations.crystens.layout import CrysTensLayout

    current = current or CrysTensLayout()
    code = current.element_code if args.element_code is None else args.element_code
    if args.sites == "auto":
        return CrysTensLayout.fitting(crystals().num_sites, element_code=code)
    return CrysTensLayout(sites=current.sites if args.sites is None else args.sites, element_code=code)


def _cmd_codec_roundtrip(args: argparse.Namespace) -> int:
    from crysgen.codec.roundtrip import roundtrip
    from crysgen.crystal_set import CrystalSet
    from crysgen.representations.crystens import CrysTensScaling, DecodeOptions

    options = DecodeOptions(mode=args.mode, symprec=args.symprec, elements=args.elements)
    crystals = CrystalSet.load(args.file)
    if args.limit is not None:
        crystals = crystals.subset(slice(0, args.limit))
    if args.scaling:
        scaling = CrysTensScaling.load(args.scaling)
        scaling = replace(scaling, layout=_layout(args, lambda: crystals, scaling.layout))
    else:
        scaling = CrysTensScaling.fit(crystals, layout=_layout(args, lambda: crystals))
    res = roundtrip(crystals, scaling=scaling, options=options, noise=args.noise, seed=args.seed,
                    workers=args.workers, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(res.summary(), indent=1))
        return 0
    print(f"round trip of {args.file} ({args.mode} decode, noise sigma {args.noise:g})")
    print(f"  crystals           {res.n}")
    print(f"  matched            {res.matched}  ({100 * res.match_rate:.2f} %, StructureMatcher())")
    print(f"  decode failures    {res.failures}  {res.failure_reasons or ''}")
    print(f"  wrong elements     {res.num_elements_mismatch}")
    print(f"  wrong atom count   {res.atom_count_errors}")
    for k, v in res.mean_diagnostics.items():
        print(f"  {k:<18} {v:.4g}")
    print(f"  encode             {res.encode_per_s:,.0f} crystals/s")
    print(f"  decode             {res.decode_per_s:,.0f} crystals/s")
    return 0


def _cmd_codec_fit_scaling(args: argparse.Namespace) -> int:
    from crysgen.crystal_set import CrystalSet
    from crysgen.data.guards import check_input_file, check_output_file
    from crysgen.representations.crystens import CrysTensScaling

    check_input_file(args.file, "FILE")
    check_output_file(args.out, suffix=".json")
    crystals = CrystalSet.load(args.file)
    scaling = CrysTensScaling.fit(crystals, layout=_layout(args, lambda: crystals))
    print(f"wrote {scaling.save(args.out)}")
    return 0


def _cmd_train_diffusion(args: argparse.Namespace) -> int:
    from crysgen.crystal_set import CrystalSet
    from crysgen.training.config import load_config
    from crysgen.training.diffusion import train_diffusion

    config = None if args.resume else load_config(args.config)
    if args.sites is not None or args.element_code is not None:
        if args.resume:
            raise CrysgenError("--sites/--element-code set a new run's layout; a resumed run keeps its own")
        config = config.with_layout(_layout(args, lambda: CrystalSet.load(args.data), config.crystens))
    model_dir = train_diffusion(args.data, args.out, config=config, val=args.val,
                                max_steps=args.max_steps, devices=args.devices, resume=args.resume,
                                progress=not args.quiet, max_minutes=args.max_minutes,
                                init=args.init)
    print(f"model directory: {model_dir}")
    return 0


def _cmd_train_atoms(args: argparse.Namespace) -> int:
    from crysgen.training.atoms import train_atom_diffusion
    from crysgen.training.config import AtomTrainConfig, load_config

    config = None if args.resume else load_config(args.config, AtomTrainConfig)
    model_dir = train_atom_diffusion(args.data, args.out, config=config, val=args.val,
                                     max_steps=args.max_steps, devices=args.devices, resume=args.resume,
                                     progress=not args.quiet, max_minutes=args.max_minutes, init=args.init)
    print(f"model directory: {model_dir}; training curves: {Path(args.out) / 'curves.png'}")
    return 0


def _cmd_train_adversarial(args: argparse.Namespace) -> int:
    from crysgen.training.adversarial import train_adversarial
    from crysgen.training.config import AdversarialTrainConfig, load_config

    config = None
    if not args.resume and args.config is not None:
        config = load_config(args.config, AdversarialTrainConfig)
    model_dir = train_adversarial(args.data, args.out, kind=args.train_command, config=config,
                                  max_steps=args.max_steps, devices=args.devices,
                                  resume=args.resume, progress=not args.quiet,
                                  max_minutes=args.max_minutes)
    print(f"model directory: {model_dir}; training curves: {Path(args.out) / 'curves.png'}")
    return 0


def _cmd_train_voxel(args: argparse.Namespace) -> int:
    from crysgen.training.config import VoxelTrainConfig, load_config
    from crysgen.training.voxel import train_voxel

    config = None
    condition = getattr(args, "condition", None)
    if not args.resume and (args.config is not None or condition):
        config = (load_config(args.config, VoxelTrainConfig) if args.config
                  else VoxelTrainConfig.default(args.train_command))
        if condition:
            config = replace(config, condition=condition)
    model_dir = train_voxel(args.data, args.out, kind=args.train_command, config=config,
                            segmenter=getattr(args, "segmenter", None), init=args.init,
                            max_steps=args.max_steps,
                            devices=args.devices, resume=args.resume, progress=not args.quiet,
                            max_minutes=args.max_minutes)
    print(f"model directory: {model_dir}; training curves: {Path(args.out) / 'curves.png'}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from crysgen.sampling import SampleOptions, sample_to_dir

    n = args.points if args.interpolate else args.n
    if n is None and args.compositions:
        from crysgen.crystal_set import CrystalSet

        if not Path(args.compositions).is_file():
            raise CrysgenError(f"--compositions: no such file {args.compositions}")
        n = len(CrystalSet.load(args.compositions)) * args.per_target
    if n is None:
        raise CrysgenError("-n is required (or --interpolate A B --points K, or --compositions FILE)")
    options = SampleOptions(n=n, steps=args.steps, sampler=args.sampler, seed=args.seed,
                            decode_mode=args.decode_mode, symprec=args.symprec,
                            chunk_size=args.chunk_size,
                            save_tensors=args.save_tensors, condition=args.condition,
                            around=args.around, sigma2=args.sigma, prior=args.prior,
                            interpolate=tuple(args.interpolate) if args.interpolate else None,
                            formula=args.formula, num_atoms=args.num_atoms,
                            compositions=args.compositions, per_target=args.per_target,
                            space_group=args.space_group, guidance=args.guidance, churn=args.churn)
    summary = sample_to_dir(args.model, args.out, options, device=args.device,
                            batch_size=args.batch_size, progress=not args.quiet,
                            workers=args.workers)
    print(f"{summary.decoded} of {summary.n} samples decoded ({summary.failures} failures "
          f"{summary.failure_reasons or ''}), {summary.structurally_valid} structurally valid "
          f"(atoms >= 0.5 Å apart, volume >= 0.1 Å³); {summary.crystals_per_s} crystals/s")
    print(f"CIFs in {Path(args.out) / 'cifs'}, table in {Path(args.out) / 'samples.csv'}, "
          f"summary in {Path(args.out) / 'summary.json'}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from crysgen.data.guards import check_device, check_output_file
    from crysgen.data.structures import load_inputs
    from crysgen.properties.predict import predict_properties
    from crysgen.properties.registry import DEFAULT_MODELS, available_models, load_property_model

    check_device(args.device)  # options, inputs and output before any model loads
    if args.out:
        check_output_file(args.out)
    for item in args.input:
        if not Path(item).exists():
            raise CrysgenError(f"input not found: {item}")
    names = (list(DEFAULT_MODELS) if args.models is None
             else available_models(args.models_dir) if args.models == "all"
             else [n.strip() for n in args.models.split(",") if n.strip()])
    models = {n: load_property_model(n, args.models_dir) for n in names}  # fail before reading inputs
    crystals = load_inputs(args.input)
    res = predict_properties(crystals, models, batch_size=args.batch_size, device=args.device,
                             progress=not args.quiet)
    bad = sum(1 for r in res.rows if r["problem"])
    n = len(res.rows)
    if args.out:
        res.to_csv(args.out)
        print(f"{n - bad} of {n} crystals predicted ({bad} with a problem) by {len(models)} models "
              f"in {res.seconds_featurize + res.seconds_predict:.1f} s; wrote {args.out}")
    else:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=res.columns)
        writer.writeheader()
        writer.writerows(res.rows)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from crysgen.data.guards import check_output_dir
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
                          device=args.device, relax_steps=args.relax_steps,
                          relax_time_limit_s=args.relax_time_limit, cache_dir=args.cache_dir,
                          relax_workers=args.relax_workers, relax_batch_size=args.relax_batch,
                          potential=args.potential)
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
            print(f"{name:<20} {m['value']:>10.4g} {m['n']:>7}")
    print(f"wrote {Path(args.out) / 'metrics.json'}, structures.csv and report.html "
          f"({ev.seconds['total']:.0f} s)")
    return 0


def _cmd_train_property(args: argparse.Namespace) -> int:
    from crysgen.training.property import PropertyTrainConfig, train_property

    config = PropertyTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 seed=args.seed, classification=args.classification)
    model_dir = train_property(args.data, args.out, target=args.target, config=config, val=args.val,
                               init=args.init, freeze_conv=args.freeze_conv,
                               models_dir=args.models_dir, unit=args.unit, progress=not args.quiet)
    metrics = json.loads((Path(args.out) / "metrics.json").read_text())
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")}
    print(f"held-out ({metrics['n_val']} crystals): {shown}; model directory: {model_dir}")
    return 0


def _cmd_model_export(args: argparse.Namespace) -> int:
    from crysgen.training.diffusion import export_checkpoint

    print(f"model directory: {export_checkpoint(args.run, args.out, step=args.step)}")
    return 0


def _cmd_model_cascade(args: argparse.Namespace) -> int:
    from crysgen.pipelines.cascade import assemble_cascade

    out = assemble_cascade(args.base, args.sr, args.out, aug_sample=args.aug_sample)
    print(f"cascade model directory: {out}")
    return 0


def _add_run_options(p: argparse.ArgumentParser, steps_help: str = "override optim.max_steps") -> None:
    """The options every `crysgen train` model kind shares: length, devices, resume, quiet."""
    p.add_argument("--max-steps", type=_positive_int, default=None, help=steps_help)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--devices", type=_positive_int, default=1, help="GPUs (DDP when > 1)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoints/last.ckpt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``crysgen`` command."""
    from crysgen import __version__
    from crysgen.data.download import DATASETS
    from crysgen.data.prepare import CELL_CONVENTIONS
    from crysgen.evaluation.coverage import COV_CUTOFFS
    from crysgen.representations.crystens import DECODE_MODES

    parser = argparse.ArgumentParser(
        prog="crysgen", description="Generative models of inorganic crystal structures."
    )
    parser.add_argument("--version", action="version", version=f"crysgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="prepare and download datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("prepare", help="CSV / CIF folder / ASE file -> CrystalSet .npz + report")
    p.add_argument("source", help="CDVAE-style CSV(.gz), folder of .cif files, or an ASE-readable file")
    p.add_argument("--out", required=True, help="output FILE.npz (FILE.report.json goes beside it)")
    p.add_argument("--cell", choices=CELL_CONVENTIONS, default="conventional",
                   help="cell convention (default: spglib conventional standard cell)")
    p.add_argument("--max-sites", type=_positive_int, default=52, help="drop larger crystals (52)")
    p.add_argument("--workers", type=_positive_int, default=1, help="parsing processes (1)")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N entries only")
    p.add_argument("--symprec", type=float, default=0.01, help="spglib tolerance in Å, > 0 (0.01)")
    p.add_argument("--min-distance", type=float, default=0.5,
                   help="drop crystals with two sites closer than this, in Å (0.5; 0: no check)")
    p.add_argument("--max-z", type=_positive_int, default=99,
                   help="drop crystals with heavier elements (99: the paper's CrysTens scaling)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_prepare)

    p = dsub.add_parser("download", help="download a public benchmark dataset (needs internet)")
    p.add_argument("name", choices=sorted(DATASETS))
    p.add_argument("--out-dir", default="data", help="parent folder (default: ./data)")
    p.add_argument("--base-url", default=None, help="mirror URL (default: the GitHub original)")
    p.add_argument("--overwrite", action="store_true", help="download files that already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_download)

    p = dsub.add_parser("label", help="fill a property of a CrystalSet with a property model's predictions")
    p.add_argument("data", help="CrystalSet .npz")
    p.add_argument("--model", required=True, help="property model directory (crysgen train property)")
    p.add_argument("--property", required=True, help="property key to fill, e.g. heat_ref")
    p.add_argument("--out", required=True, help="labelled CrystalSet .npz (the input is left as is)")
    p.add_argument("--overwrite", action="store_true", help="also replace values that are known")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=_cmd_data_label)

    codec = sub.add_parser("codec", help="measure the CrysTens codec")
    csub = codec.add_subparsers(dest="codec_command", required=True)
    p = csub.add_parser("roundtrip", help="encode, add noise, decode, match with StructureMatcher")
    p.add_argument("file", help="CrystalSet .npz from `crysgen data prepare`")
    p.add_argument("--mode", choices=DECODE_MODES, default="auto", help="decoder (auto)")
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std, scaled units")
    p.add_argument("--seed", type=int, default=0, help="noise seed (0)")
    p.add_argument("--scaling", default=None,
                   help="scaling JSON or 'paper' (default: fitted on FILE)")
    p.add_argument("--symprec", type=float, default=None,
                   help="auto mode: snap decoded crystals to spglib symmetry at this tolerance (Å)")
    p.add_argument("--elements", choices=("map", "round"), default="map",
                   help="auto mode: nearest element code (element-code layouts) or MAP element set "
                        "(default), or per-site rounding of Z (ablation)")
    _add_layout_options(p)
    p.add_argument("--workers", type=_positive_int, default=1, help="processes")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N crystals only")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_codec_roundtrip)

    p = sub.add_parser("sample", help="sample crystals from a model directory (resumable)")
    p.add_argument("model", nargs="?", default=None,
                   help="model directory of any kind: diffusion, cascade, gan, wgan, voxel_vae; a training "
                        "run directory is taken to mean its model/ (default: the bundled mp_20 "
                        "diffusion model)")
    p.add_argument("-n", type=_positive_int, default=None, help="number of samples")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--condition", type=int, default=None,
                   help="voxel VAE: condition decile class 0..9 (default: random per sample, or the base's)")
    p.add_argument("--around", default=None, metavar="DATA.npz:ID|CIF",
                   help="voxel VAE: sample around this base crystal (targeted sampling)")
    p.add_argument("--sigma", type=float, default=0.5,
                   help="voxel VAE: latent variance σ² around the base (0.5)")
    p.add_argument("--prior", choices=("standard", "posterior"), default="standard",
                   help="voxel VAE: random latents from N(0, I) (the authors') or from the Gaussian "
                        "matched to the training crystals' posteriors (latent_prior.npz)")
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
    p.add_argument("--compositions", default=None, metavar="TARGETS.npz",
                   help="atom or single-stage CrysTens diffusion: one sample per crystal of this CrystalSet "
                        "with its elements (crystal structure prediction; samples.csv names each "
                        "sample's target)")
    p.add_argument("--per-target", type=_positive_int, default=1,
                   help="samples per target of --compositions (1)")
    p.add_argument("--space-group", type=int, default=None,
                   help="atom diffusion models trained with space groups: sample this one (1-230)")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance weight of --space-group (1: conditional model alone)")
    p.add_argument("--churn", type=float, default=None,
                   help="atom diffusion: EDM's S_churn, fresh noise before every step (0: deterministic; "
                        "default: the model's setting)")
    p.add_argument("--steps", type=_positive_int, default=50,
                   help="diffusion sampler steps (50; GANs ignore it; atom diffusion: Heun steps)")
    p.add_argument("--sampler", choices=("ddim", "dpmsolver", "ddpm"), default="ddim",
                   help="CrysTens diffusion sampler (ddim; an EDM model: ddim = EDM's Euler, dpmsolver = "
                        "EDM's DPM-Solver++, no ddpm)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="tensors per forward pass (default: 256 on cuda, 16 on cpu, where small "
                        "batches are faster)")
    p.add_argument("--chunk-size", type=_positive_int, default=256,
                   help="samples per resumable chunk (part of the options a resume must match)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--decode-mode", choices=DECODE_MODES, default="auto")
    p.add_argument("--symprec", type=float, default=None,
                   help="auto decode: snap crystals to spglib symmetry at this tolerance (Å)")
    p.add_argument("--save-tensors", action="store_true", help="also keep the raw tensors (.npz)")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="processes that write CIFs and check crystals, and the voxel VAE's watershed "
                        "(1; does not change the crystals)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_sample)

    train = sub.add_parser("train", help="train a generative model")
    tsub = train.add_subparsers(dest="train_command", required=True)
    p = tsub.add_parser("diffusion", help="CrysTens diffusion model (Lightning; bf16 on GPU)")
    p.add_argument("--data", required=True, help="training CrystalSet .npz")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--val", default=None, help="validation CrystalSet .npz (EMA loss is logged)")
    p.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    p.add_argument("--init", default=None,
                   help="warm start a new run from a model directory's weights (fresh optimiser)")
    _add_layout_options(p)
    _add_run_options(p)
    p.set_defaults(func=_cmd_train_diffusion)

    p = tsub.add_parser("atom-diffusion",
                        help="crysgen's diffusion transformer over atoms (EDM; Lightning, bf16 on GPU)")
    p.add_argument("--data", required=True, help="training CrystalSet .npz (cells are Niggli-reduced)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--val", default=None, help="validation CrystalSet .npz (EMA loss is logged)")
    p.add_argument("--config", default=None,
                   help="YAML config with net/edm/optim/data sections (default: built-in defaults)")
    p.add_argument("--init", default=None, metavar="MODEL_DIR",
                   help="warm start a new run from a model directory's weights (fresh optimiser)")
    _add_run_options(p)
    p.set_defaults(func=_cmd_train_atoms)

    for kind, what in (("gan", "the paper's vanilla GAN (BCE, Adam 1e-5, batch 64)"),
                       ("wgan", "the paper's WGAN-GP (λ 10, 5 critic steps, Adam 1e-4 β (0, 0.9))")):
        p = tsub.add_parser(kind, help=f"{what}; Lightning, bf16 on GPU")
        p.add_argument("--data", required=True, help="training CrystalSet .npz")
        p.add_argument("--out", required=True, help="run directory")
        p.add_argument("--config", default=None,
                       help="YAML config with net/optim sections (default: the authors' settings)")
        _add_run_options(p, "override optim.max_steps (generator updates)")
        p.set_defaults(func=_cmd_train_adversarial)

    for kind, what in (("segmenter", "Court et al.'s 3-D UNet segmenter of voxel grids (train it first)"),
                       ("vae", "Court et al.'s conditional DFC-VAE on voxel grids (needs --segmenter)")):
        p = tsub.add_parser(kind, help=f"{what}; Lightning, bf16 on GPU")
        p.add_argument("--data", required=True, help="training CrystalSet .npz (orthogonal cells are used)")
        p.add_argument("--out", required=True, help="run directory")
        p.add_argument("--config", default=None, help="YAML config (default: the authors' settings)")
        if kind == "vae":
            p.add_argument("--segmenter", default=None, help="the trained segmenter's model directory")
            p.add_argument("--condition", default=None,
                           help="property to condition on (default: formation_energy_per_atom)")
        p.add_argument("--init", default=None, metavar="MODEL_DIR",
                       help=f"start from the weights of an exported {kind} model (fresh optimiser)")
        _add_run_options(p)
        p.set_defaults(func=_cmd_train_voxel)

    p = tsub.add_parser("property", help="CGCNN property model (optionally transfer-learned)")
    p.add_argument("--data", required=True, help="training CrystalSet .npz with the target column")
    p.add_argument("--target", required=True, help="property column kept by `crysgen data prepare`")
    p.add_argument("--out", required=True, help="run directory (new)")
    p.add_argument("--val", default=None,
                   help="CrystalSet for the held-out metrics (default: 10 %% of --data, seeded)")
    p.add_argument("--init", default=None,
                   help="start the graph layers from this property model (name or directory)")
    p.add_argument("--freeze-conv", action="store_true", help="keep the --init graph layers fixed")
    p.add_argument("--unit", default="", help="the target's unit, e.g. eV/atom")
    p.add_argument("--classification", action="store_true", help="0/1 target: train a classifier")
    p.add_argument("--epochs", type=_positive_int, default=100)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models-dir", default=None,
                   help="where model names and atom_init.json are found (default: $CRYSGEN_MODELS_DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_property)

    p = sub.add_parser("evaluate", help="score generated crystals (validity, coverage, novelty, ...)")
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
    p.add_argument("--comp-scaler", default="cdvae",
                   help="what standardises Magpie composition fingerprints for COV: cdvae (CDVAE's "
                        "fixed constants, default), reference (the reference's own statistics) or a "
                        "CrystalSet .npz whose statistics are used")
    p.add_argument("--cov-over", choices=("all", "valid"), default="all",
                   help="generated crystals COV uses: all with fingerprints (CDVAE, default) or only "
                        "the valid ones")
    p.add_argument("--smact-tables", choices=("smact-2.2.1", "installed"), default="smact-2.2.1",
                   help="oxidation states and electronegativities of compositional validity "
                        "(CDVAE's SMACT 2.2.1, default; or the installed smact)")
    p.add_argument("--csp-validity", choices=("cdvae", "structural", "none"), default="cdvae",
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
    p.add_argument("--workers", type=_positive_int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N samples only")
    p.add_argument("--reference-limit", type=_positive_int, default=None,
                   help="a seeded random subset of N reference crystals")
    p.add_argument("--stability", action="store_true",
                   help="also run CHGNet stability: relaxation, energy above the train+reference "
                        "hull, stable and S.U.N. rates (slow on a CPU; use --device cuda)")
    p.add_argument("--relax-steps", type=_positive_int, default=500, help="FIRE steps at most (500)")
    p.add_argument("--relax-time-limit", type=float, default=120.0,
                   help="seconds per relaxation before it is stopped with a reason (120)")
    p.add_argument("--relax-workers", type=_positive_int, default=None,
                   help="processes for the relaxation (default: --workers; on a GPU each holds a "
                        "CUDA context and ~25 MB per structure of its forward batch)")
    p.add_argument("--relax-batch", type=_positive_int, default=64,
                   help="structures per CHGNet forward pass (64)")
    p.add_argument("--potential", default="chgnet",
                   help="what rates stability: chgnet (default), sevennet (SevenNet-0's static "
                        "energies of the CHGNet-relaxed structures and of the hull; needs "
                        "pip install 'crysgen[potentials]') or both (E_hull under each, both "
                        "stable rates and their agreement)")
    p.add_argument("--cache-dir", default=None,
                   help="cache of reference energies and fingerprints "
                        "(default $CRYSGEN_CACHE or ~/.cache/crysgen)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predict properties of crystals with CGCNN models")
    p.add_argument("input", nargs="+",
                   help="CIF file(s), a folder of CIFs, a `crysgen sample` output, a CrystalSet .npz, "
                        "a CSV or an ASE file")
    p.add_argument("--models", default=None,
                   help="comma-separated model names or directories, or 'all' (default: the seven "
                        "pre-trained cgcnn regressors and the metal/semiconductor classifier)")
    p.add_argument("--models-dir", default=None,
                   help="where models are found by name (default: $CRYSGEN_MODELS_DIR)")
    p.add_argument("--out", default=None, help="CSV to write (default: print to stdout)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)

    model = sub.add_parser("model", help="assemble model directories")
    msub = model.add_subparsers(dest="model_command", required=True)
    p = msub.add_parser("cascade", help="base + super-resolution stage -> one cascade model directory")
    p.add_argument("base", help="model directory of the base stage (RUN_DIR/model)")
    p.add_argument("sr", help="model directory of the super-resolution stage")
    p.add_argument("--out", required=True, help="cascade directory to write (new or empty)")
    p.add_argument("--aug-sample", type=float, default=None,
                   help="noise level of the SR conditioning when sampling, fraction of T "
                        "(default: the SR stage's stage.aug_sample)")
    p.set_defaults(func=_cmd_model_cascade)
    p = msub.add_parser("export", help="a run's checkpoint (EMA weights) -> model directory")
    p.add_argument("run", help="run directory of `crysgen train diffusion`")
    p.add_argument("--step", type=int, default=None,
                   help="export checkpoints/stepNNNNNNN.ckpt (default: last.ckpt)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.set_defaults(func=_cmd_model_export)

    p = csub.add_parser("fit-scaling", help="fit the min-max scaling on a CrystalSet")
    p.add_argument("file", help="training CrystalSet .npz")
    p.add_argument("--out", required=True, help="scaling JSON to write")
    _add_layout_options(p)
    p.set_defaults(func=_cmd_codec_fit_scaling)
    return parser


@contextlib.contextmanager
def _quiet_spglib() -> Iterator[None]:
    """Silence spglib's C-level warnings for the command, unless the user set SPGLIB_WARNING.

    spglib prints lines such as "ssm_get_exact_positions failed" for every noisy cell; they are
    not errors. The variable is set here, for the command and its worker processes, and not at
    ``import crysgen``, so a program that imports the library keeps its environment.
    """
    if "SPGLIB_WARNING" in os.environ:
        yield
        return
    os.environ["SPGLIB_WARNING"] = "OFF"
    try:
        yield
    finally:
        os.environ.pop("SPGLIB_WARNING", None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crysgen`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _quiet_spglib():
            return int(args.func(args))
    except CrysgenError as exc:
        print(f"crysgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crysgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
