"""Pack a `crysgen sample` folder into one CrystalSet .npz (+ a .sample.json sidecar) to carry it.

A folder of 1,000 CIFs is ~4 MB and thousands of files; the .npz holds the same structures (read
back from the CIFs, in samples.csv order, failures left out) in ~100 kB. ``eval_model.py
--samples X.npz`` reads the sidecar for the sampling settings.

Usage::

    python benchmarks/pack_samples.py benchmarks/.work/evalsamples/gan benchmarks/.work/evalsamples/gan.npz
"""

from __future__ import annotations

import argparse
import csv
import json
import warnings
from pathlib import Path

from crysgen.crystal_set import CrystalSet, write_text_atomic


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("out")
    args = p.parse_args()
    from pymatgen.core import Structure

    folder, out = Path(args.folder), Path(args.out)
    with open(folder / "samples.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("cif")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = [Structure.from_file(folder / r["cif"]) for r in rows]
    cs = CrystalSet.from_structures(structures, ids=[r["id"] for r in rows],
                                    metadata={"source": str(folder), "packed_from": "cifs"})
    cs.save(out)
    side = {"sample_config": json.loads((folder / "sample_config.json").read_text()),
            "summary": json.loads((folder / "summary.json").read_text())}
    write_text_atomic(out.with_suffix(".sample.json"), json.dumps(side, indent=1) + "\n")
    print(f"{len(cs)} structures -> {out}")


if __name__ == "__main__":
    main()
