"""``crysgen codec roundtrip|fit-scaling``: measure the CrysTens codec."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from crysgen.cli.options import _add_layout_options, _layout, _positive_int


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crysgen codec`` and its subcommands."""
    from crysgen.representations.crystens import DECODE_MODES
    from crysgen.representations.crystens import DecodeOptions as D  # the defaults, written once there

    codec = subparsers.add_parser("codec", help="measure the CrysTens codec")
    csub = codec.add_subparsers(dest="codec_command", required=True)
    p = csub.add_parser("roundtrip", help="encode, add noise, decode, match with StructureMatcher")
    p.add_argument("file", help="CrystalSet .npz from `crysgen data prepare`")
    p.add_argument("--mode", choices=DECODE_MODES, default=D.mode, help="decoder (%(default)s)")
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std, scaled units")
    p.add_argument("--seed", type=int, default=0, help="noise seed (0)")
    p.add_argument("--scaling", default=None,
                   help="scaling JSON or 'paper' (default: fitted on FILE)")
    p.add_argument("--symprec", type=float, default=None,
                   help="auto mode: snap decoded crystals to spglib symmetry at this tolerance (Å)")
    p.add_argument("--elements", choices=("map", "round"), default=D.elements,
                   help="auto mode: nearest element code (element-code layouts) or MAP element set "
                        "(default), or per-site rounding of Z (ablation)")
    _add_layout_options(p)
    p.add_argument("--workers", type=_positive_int, default=1, help="processes")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N crystals only")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_codec_roundtrip)

    p = csub.add_parser("fit-scaling", help="fit the min-max scaling on a CrystalSet")
    p.add_argument("file", help="training CrystalSet .npz")
    p.add_argument("--out", required=True, help="scaling JSON to write")
    _add_layout_options(p)
    p.set_defaults(func=_cmd_codec_fit_scaling)


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
