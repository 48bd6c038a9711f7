"""What a CHGNet relaxation did to a sample folder -> benchmarks/results/relax_effect_<name>.json.

Reads a `crysgen relax` output folder (its ``relax.csv``, ``samples.csv`` and the relaxation
record in ``sample_config.json``) and the sample folder it was relaxed from (``samples.csv``),
pairs the crystals by id and records: how many relaxed and converged, structural validity before
and after, the RMSD of the atoms' displacements and the CHGNet energy drop (quantiles), the ratio
of relaxed to generated volume (on a seeded ``--volume-sample`` of the relaxed crystals, read from
both folders' CIFs), and the symmetry that spglib finds (symprec 0.1, the ``spglib_space_group`` column)
before and after: the share of triclinic crystals (groups 1-2), and the share whose group number
rose or fell. The evaluation of the relaxed folder (`crysgen evaluate`, `benchmarks/eval_model.py
--samples`) is a separate file; this one says what moved.

    python benchmarks/relax_effect.py benchmarks/.work/relaxed/relaxed_samples_c24s6 \\
        benchmarks/.work/cpu_samples/samples_c24s6 --name c24sites6_10k
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from provenance import write_result

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"n": 0}
    return {"n": len(values), "mean": float(values.mean()),
            **{f"q{int(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES}}


def volume_ratios(relaxed: Path, source: Path, ids: list[str], k: int, seed: int = 0) -> np.ndarray:
    """Relaxed over generated cell volume of a seeded ``k`` of ``ids`` (both folders' CIFs)."""
    import warnings

    from pymatgen.core import Structure

    pick = np.random.default_rng(seed).permutation(len(ids))[:k]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([Structure.from_file(relaxed / "cifs" / f"{ids[j]}.cif").volume
                         / Structure.from_file(source / "cifs" / f"{ids[j]}.cif").volume
                         for j in sorted(pick)])


def measure(relaxed: Path, source: Path, volume_sample: int = 1000) -> dict:
    """The effect of the relaxation (see the module docstring)."""
    table = _rows(relaxed / "relax.csv")
    after, before = _rows(relaxed / "samples.csv"), _rows(source / "samples.csv")
    missing = sorted(set(after) ^ set(before))
    if missing:
        raise SystemExit(f"{len(missing)} ids differ between {relaxed} and {source} (e.g. {missing[0]})")
    done = [r for r in table.values() if r["relaxed"] == "1"]
    rmsd = np.array([float(r["rmsd"]) for r in done if r["rmsd"]])
    drop = np.array([float(r["initial_energy_per_atom"]) - float(r["energy_per_atom"])
                     for r in done if r["energy_per_atom"] and r["initial_energy_per_atom"]])
    both = [i for i in after if after[i]["spglib_space_group"] and before[i]["spglib_space_group"]]
    g0 = np.array([int(before[i]["spglib_space_group"]) for i in both])
    g1 = np.array([int(after[i]["spglib_space_group"]) for i in both])
    n = len(after)

    def valid(rows: dict[str, dict[str, str]]) -> float:
        return sum(r.get("structurally_valid") == "1" for r in rows.values()) / n

    record = json.loads((relaxed / "sample_config.json").read_text()).get("relaxation", {})
    return {
        "n": n, "relaxed": len(done), "converged": sum(r["converged"] == "1" for r in table.values()),
        "reasons": _count(r["reason"] for r in table.values() if r["reason"]),
        "struct_valid_before": valid(before), "struct_valid_after": valid(after),
        "rmsd_A": _quantiles(rmsd), "energy_drop_eV_per_atom": _quantiles(drop),
        "volume_ratio": _quantiles(volume_ratios(relaxed, source, sorted(r["id"] for r in done),
                                                 volume_sample)) | {"sample_seed": 0},
        "symmetry": {"n": len(both), "triclinic_before": float((g0 <= 2).mean()),
                     "triclinic_after": float((g1 <= 2).mean()),
                     "group_rose": float((g1 > g0).mean()), "group_fell": float((g1 < g0).mean())},
        "relaxation": record,
    }


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        key = item.split(":")[0][:60]
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("relaxed", type=Path, help="a `crysgen relax` output folder")
    p.add_argument("source", type=Path, help="the sample folder it was relaxed from")
    p.add_argument("--name", required=True, help="result file: relax_effect_<name>.json")
    p.add_argument("--volume-sample", type=int, default=1000, help="crystals whose volumes are read (1000)")
    args = p.parse_args()
    result = {"relaxed_folder": str(args.relaxed), "source_folder": str(args.source)}
    write_result(f"relax_effect_{args.name}", result | measure(args.relaxed, args.source, args.volume_sample))


if __name__ == "__main__":
    main()
