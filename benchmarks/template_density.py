"""How composition-first samples on symmetry templates change density -> template_density_mp_20.json.

For each `crysgen sample --composition-prior TRAIN --symmetry-prior TRAIN` folder given, over its
structurally valid samples whose template is a crystal of TRAIN: the mean and standard deviation of
ln(sample / template) for the formula mass per atom, the volume per atom and the density, and the
W1 distance of the samples' densities to the templates' (the part of W(ρ) the composition change
and the model's volume response add). A model that kept the template's volume per atom would show
ln(volume ratio) 0 and ln(density ratio) = ln(mass ratio).

Usage: python benchmarks/template_density.py --train TRAIN.npz NAME=SAMPLES_DIR [NAME=SAMPLES_DIR ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import wasserstein_distance

from crysgen.crystal_set import CrystalSet
from provenance import write_result


def ratios(folder: Path, train: CrystalSet, index: dict[str, int]) -> dict[str, float | int]:
    """The statistics of one samples folder (module docstring)."""
    from pymatgen.core import Structure

    rows = [r for r in csv.DictReader((folder / "samples.csv").open())
            if not r["failure"] and r["structurally_valid"] == "1" and r.get("template") in index]
    out = []
    for r in rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_file(folder / r["cif"])
        t = train.to_structure(index[r["template"]])
        out.append((s.composition.weight / len(s), t.composition.weight / len(t),
                    s.volume / len(s), t.volume / len(t), s.density, t.density))
    a = np.array(out)
    res: dict[str, float | int] = {"n": len(a)}
    for name, (i, j) in {"mass_per_atom": (0, 1), "volume_per_atom": (2, 3), "density": (4, 5)}.items():
        ln = np.log(a[:, i] / a[:, j])
        res[f"ln_{name}_ratio_mean"] = float(ln.mean())
        res[f"ln_{name}_ratio_std"] = float(ln.std())
    res["w_density_to_templates"] = float(wasserstein_distance(a[:, 4], a[:, 5]))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, help="the CrystalSet the templates were drawn from")
    p.add_argument("folders", nargs="+", metavar="NAME=SAMPLES_DIR")
    args = p.parse_args()
    train = CrystalSet.load(args.train)
    index = {str(i): k for k, i in enumerate(train.ids)}
    runs = {}
    for item in args.folders:
        name, folder = item.split("=", 1)
        runs[name] = ratios(Path(folder), train, index) | {"folder": folder}
        print(name, json.dumps(runs[name]), flush=True)
    write_result("template_density_mp_20", {
        "training_data": f"{args.train} (mp_20: the partial train split, 57 %)", "runs": runs}, "cpu")


if __name__ == "__main__":
    main()
