"""``crysgen train diffusion|atom-diffusion|gan|wgan|segmenter|vae|property|composition``."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from crysgen.cli.options import (
    _add_layout_options,
    _add_run_options,
    _add_set_option,
    _layout,
    _positive_int,
    _with_set,
)
from crysgen.errors import CrysgenError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crysgen train`` and one subcommand per model kind."""
    train = subparsers.add_parser("train", help="train a generative model")
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

    # the defaults named in these help texts are PropertyTrainConfig's (tests/test_cli.py checks
    # them; the config is not imported here, so that the command line starts without torch)
    p = tsub.add_parser("property", help="CGCNN property model (optionally transfer-learned); Lightning")
    p.add_argument("--data", required=True, help="training CrystalSet .npz with the target column")
    p.add_argument("--target", default=None,
                   help="property column kept by `crysgen data prepare` (a new run needs it, here or "
                        "as target: in --config; a resumed run keeps its own)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--val", default=None,
                   help="CrystalSet for the held-out metrics (default: a seeded val_fraction of --data, "
                        "10 %%)")
    p.add_argument("--config", default=None,
                   help="YAML config with PropertyTrainConfig's keys (target, epochs, lr, ...); the "
                        "options below override it (default: built-in defaults)")
    p.add_argument("--init", default=None,
                   help="start the graph layers from this property model (name or directory)")
    p.add_argument("--freeze-conv", action="store_true", default=None,
                   help="keep the --init graph layers fixed")
    p.add_argument("--unit", default=None, help="the target's unit, e.g. eV/atom")
    p.add_argument("--classification", action="store_true", default=None,
                   help="0/1 target: train a classifier")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="passes over the training crystals (default: 100); --max-steps overrides it")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="crystals per step (default: 64)")
    p.add_argument("--lr", type=float, default=None,
                   help="AdamW learning rate, decayed to 0 on a cosine (default: 0.001)")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds the split, the initialisation and the batches (default: 0)")
    p.add_argument("--models-dir", default=None,
                   help="where model names and atom_init.json are found (default: $CRYSGEN_MODELS_DIR)")
    _add_run_options(p, "optimiser steps in total, in place of --epochs × batches per epoch "
                        "(a resumed run continues up to it)")
    p.set_defaults(func=_cmd_train_property)

    p = tsub.add_parser("composition",
                        help="a composition language model: the learned prior of `crysgen sample "
                             "--composition-prior MODEL_DIR` (small; minutes on a CPU)")
    p.add_argument("--data", required=True,
                   help="training CrystalSet .npz (its cell compositions are learned)")
    p.add_argument("--out", required=True, help="model directory (with metrics.csv and curves.png)")
    p.add_argument("--val", default=None,
                   help="validation CrystalSet .npz: its likelihood is logged and picks the epoch kept")
    p.add_argument("--config", default=None,
                   help="YAML config with CompositionTrainConfig's keys (epochs, lr, net: {d_model, ...})")
    p.add_argument("--epochs", type=_positive_int, default=None, help="passes over the data (default: 30)")
    p.add_argument("--seed", type=int, default=None, help="seeds the initialisation and batches (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_set_option(p, "--set net.layers=6 --set net.dropout=0.3")
    p.set_defaults(func=_cmd_train_composition, resume=False)


def _cmd_train_diffusion(args: argparse.Namespace) -> int:
    from crysgen.crystal_set import CrystalSet
    from crysgen.training.config import DiffusionTrainConfig, load_config
    from crysgen.training.diffusion import train_diffusion

    config = None if args.resume else load_config(args.config)
    if args.sites is not None or args.element_code is not None:
        if config is None:  # --resume: the run's saved config is read by train_diffusion
            raise CrysgenError("--sites/--element-code set a new run's layout; a resumed run keeps its own")
        config = config.with_layout(_layout(args, lambda: CrystalSet.load(args.data), config.crystens))
    config = _with_set(args, config, DiffusionTrainConfig)
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
    config = _with_set(args, config, AtomTrainConfig)
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
    config = _with_set(args, config, lambda: AdversarialTrainConfig.default(args.train_command))
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
    config = _with_set(args, config, lambda: VoxelTrainConfig.default(args.train_command))
    model_dir = train_voxel(args.data, args.out, kind=args.train_command, config=config,
                            segmenter=getattr(args, "segmenter", None), init=args.init,
                            max_steps=args.max_steps,
                            devices=args.devices, resume=args.resume, progress=not args.quiet,
                            max_minutes=args.max_minutes)
    print(f"model directory: {model_dir}; training curves: {Path(args.out) / 'curves.png'}")
    return 0


def _cmd_train_composition(args: argparse.Namespace) -> int:
    from crysgen.data.guards import check_device
    from crysgen.training.compositions import CompositionTrainConfig, train_composition_model
    from crysgen.training.config import load_config

    check_device(args.device)
    config = load_config(args.config, CompositionTrainConfig)
    overrides = {k: getattr(args, k) for k in ("epochs", "seed") if getattr(args, k) is not None}
    config = _with_set(args, replace(config, **overrides), CompositionTrainConfig) or config
    out = train_composition_model(args.data, args.out, config=config, val=args.val, device=args.device,
                                  progress=not args.quiet)
    print(f"model directory: {out}; per-epoch likelihoods: {out / 'metrics.csv'}, {out / 'curves.png'}")
    return 0


NEW_RUN_OPTIONS = {"config": "--config", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
                   "seed": "--seed", "classification": "--classification"}
"""Options of `train property` that set a new run's config (a resumed run keeps its saved one)."""


def _cmd_train_property(args: argparse.Namespace) -> int:
    from crysgen.training.config import PropertyTrainConfig, load_config
    from crysgen.training.property import train_property

    overrides = {k: getattr(args, k) for k in NEW_RUN_OPTIONS
                 if k != "config" and getattr(args, k) is not None}
    config = None
    if args.resume:
        given = [flag for k, flag in NEW_RUN_OPTIONS.items() if getattr(args, k) is not None]
        if given:
            raise CrysgenError(f"{', '.join(given)} set a new run's settings; a resumed run keeps its own "
                               f"({Path(args.out) / 'config.yaml'}; --max-steps extends it)")
    else:
        config = replace(load_config(args.config, PropertyTrainConfig), **overrides)
    config = _with_set(args, config, PropertyTrainConfig)
    model_dir = train_property(args.data, args.out, target=args.target, config=config, val=args.val,
                               init=args.init, freeze_conv=args.freeze_conv, models_dir=args.models_dir,
                               unit=args.unit, max_steps=args.max_steps, devices=args.devices,
                               resume=args.resume, progress=not args.quiet, max_minutes=args.max_minutes)
    metrics_path = Path(args.out) / "metrics.json"
    if metrics_path.is_file():  # written by the main process only
        metrics = json.loads(metrics_path.read_text())
        shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")}
        print(f"held-out ({metrics['n_val']} crystals) at step {metrics['step']}: {shown}; "
              f"model directory: {model_dir}; training curves: {Path(args.out) / 'curves.png'}")
    return 0
