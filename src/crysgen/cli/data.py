"""``crysgen data prepare|download|label``: datasets in, CrystalSet .npz out."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from crysgen.cli.options import _positive_int
from crysgen.errors import CrysgenError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crysgen data`` and its subcommands."""
    from crysgen.data.download import DATASETS
    from crysgen.data.prepare import CELL_CONVENTIONS
    from crysgen.data.prepare import PrepareOptions as D  # the defaults, written once there

    data = subparsers.add_parser("data", help="prepare and download datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("prepare", help="CSV / CIF folder / ASE file -> CrystalSet .npz + report")
    p.add_argument("source", help="CDVAE-style CSV(.gz), folder of .cif files, or an ASE-readable file")
    p.add_argument("--out", required=True, help="output FILE.npz (FILE.report.json goes beside it)")
    p.add_argument("--cell", choices=CELL_CONVENTIONS, default=D.cell,
                   help="cell convention (default: spglib conventional standard cell)")
    p.add_argument("--max-sites", type=_positive_int, default=D.max_sites,
                   help="drop larger crystals (%(default)s)")
    p.add_argument("--workers", type=_positive_int, default=1, help="parsing processes (1)")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N entries only")
    p.add_argument("--symprec", type=float, default=D.symprec,
                   help="spglib tolerance in Å, > 0 (%(default)g)")
    p.add_argument("--min-distance", type=float, default=D.min_distance,
                   help="drop crystals with two sites closer than this, in Å (%(default)g; 0: no check)")
    p.add_argument("--max-z", type=_positive_int, default=D.max_z,
                   help="drop crystals with heavier elements (%(default)s: the paper's CrysTens scaling)")
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
