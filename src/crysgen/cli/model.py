"""``crysgen model cascade|export``: assemble model directories."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crysgen model`` and its subcommands."""
    model = subparsers.add_parser("model", help="assemble model directories")
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
    p.add_argument("run", help="run directory of `crysgen train diffusion|atom-diffusion|gan|wgan|"
                               "property|segmenter|vae`")
    p.add_argument("--step", type=int, default=None,
                   help="export checkpoints/stepNNNNNNN.ckpt (default: last.ckpt)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--data", default=None,
                   help="the run's training CrystalSet (.npz), which a run directory does not keep: "
                        "needed for a vae run (its latent prior) and a property run without a --val "
                        "file (its held-out scores)")
    p.set_defaults(func=_cmd_model_export)


def _cmd_model_export(args: argparse.Namespace) -> int:
    from crysgen.training.exports import export_checkpoint

    print(f"model directory: {export_checkpoint(args.run, args.out, step=args.step, data=args.data)}")
    return 0


def _cmd_model_cascade(args: argparse.Namespace) -> int:
    from crysgen.pipelines.cascade import assemble_cascade

    out = assemble_cascade(args.base, args.sr, args.out, aug_sample=args.aug_sample)
    print(f"cascade model directory: {out}")
    return 0
