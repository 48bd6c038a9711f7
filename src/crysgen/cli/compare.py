"""``crysgen compare``: two evaluations of paired samples, crystal by crystal."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crysgen compare``."""
    from crysgen.evaluation.comparison import PAIRED_COLUMNS

    p = subparsers.add_parser(
        "compare", help="compare two models' evaluations of paired samples (McNemar's exact test)",
        description="Pairs the rows of two `crysgen evaluate` reports by sample id (samples drawn with "
                    "the same seed and -n have the same sizes and noise) and tests whether the crystals "
                    "on which the models disagree split unevenly, overall and by number of sites.")
    p.add_argument("report_a", help="model A's `crysgen evaluate` report folder (or its structures.csv)")
    p.add_argument("report_b", help="model B's, of samples drawn with the same seed and -n")
    p.add_argument("--column", choices=PAIRED_COLUMNS, default="cov_precise",
                   help="the per-crystal yes/no outcome compared (%(default)s: counted by COV-P)")
    p.add_argument("--json", default=None, help="also write the comparison to this .json file")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from crysgen.crystal_set import write_text_atomic
    from crysgen.data.guards import check_output_file
    from crysgen.evaluation.comparison import compare_reports

    if args.json:
        check_output_file(args.json, "--json", suffix=".json")
    c = compare_reports(args.report_a, args.report_b, args.column)
    print(f"{c.column}: {c.overall.n} pairs ({c.dropped} without an outcome left out; "
          f"{100 * c.same_sites:.1f} % with equal site counts)")
    print(f"{'sites':>8} {'pairs':>7} {'A':>8} {'B':>8} {'only A':>7} {'only B':>7} {'p':>8}")
    for label, k in [("all", c.overall), *c.by_sites.items()]:
        print(f"{label:>8} {k.n:>7} {100 * k.rate_a:>7.2f}% {100 * k.rate_b:>7.2f}% {k.only_a:>7} "
              f"{k.only_b:>7} {k.p_value:>8.3g}")
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(asdict(c), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0
