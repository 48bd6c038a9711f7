"""CSP match rate per cell size from a csp.py per-target table -> results/csp_by_size_<name>.json.

Reads the ``.targets.csv`` that :mod:`csp` writes next to its result and bins the targets by
number of sites (:func:`csp.by_num_sites`), so an existing CSP run gets the breakdown without
re-matching.

Usage: python benchmarks/csp_by_size.py benchmarks/results/csp_atom_diffusion_mp_20.targets.csv [--name NAME]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from crysgen.crystal_set import write_text_atomic
from csp import by_num_sites
from provenance import ROOT, stamp


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("targets_csv", help="a csp.py per-target table (*.targets.csv)")
    p.add_argument("--name", default=None, help="result name (default: the table's, without csp_); "
                   "tables of several runs of one row share a name")
    args = p.parse_args()
    path = Path(args.targets_csv)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["matched"] = r["matched"] == "True"
    name = args.name or path.name.removesuffix(".targets.csv").removeprefix("csp_")
    write_breakdown("csp", name, path, {"targets": len(rows), "by_num_sites": by_num_sites(rows)})


def write_breakdown(kind: str, name: str, source: Path, fields: dict) -> Path:
    """results/<kind>_by_size_<name>.json: ``fields`` (with ``by_num_sites``) after the table's path."""
    where = str(source.relative_to(ROOT) if source.is_absolute() else source)
    result = {"source": where} | fields | stamp("cpu")
    out = ROOT / "benchmarks" / "results" / f"{kind}_by_size_{name}.json"
    write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["by_num_sites"], indent=1), f"\nwrote {out}")
    return out


if __name__ == "__main__":
    main()
