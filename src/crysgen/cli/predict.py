"""``crysgen predict``: properties of crystals from CGCNN models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crysgen.cli.options import _positive_int
from crysgen.errors import CrysgenError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crysgen predict``."""
    p = subparsers.add_parser("predict", help="predict properties of crystals with CGCNN models")
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
