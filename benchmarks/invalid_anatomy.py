"""Why a sample folder's invalid crystals are invalid -> benchmarks/results/invalid_anatomy_<name>.json.

CDVAE's structural validity fails a crystal with any two sites closer than 0.5 Å (or a volume
under 0.1 Å³). For each invalid crystal of a ``crysgen sample`` folder this records how many pairs
are too close, their distances and whether the two sites are one element, the crystal's volume per
atom against the valid crystals with as many sites, and whether dropping one site of each close
pair (the decode-time merge that would "fix" it, changing the crystal's composition) leaves a
valid crystal. It answers whether invalidity is a collision of two atoms the model meant as one
(one extra atom in a cell sized for fewer) or a crushed cell, before anyone changes the decoder.

    python benchmarks/invalid_anatomy.py benchmarks/.work/cpu_samples/samples_c24s6 --name c24sites6_10k

Reads samples.csv (its ``structurally_valid`` column, written by `crysgen sample` with the same
definition as the evaluation) and the invalid crystals' CIFs; the valid crystals' CIFs are read
only for their volume per atom (``--volume-sample`` of them, seeded).
"""

from __future__ import annotations

import argparse
import csv
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from crysgen.evaluation.validity import close_pairs, structurally_valid
from provenance import write_result

CUTOFF = 0.5  # Å, CDVAE's


def drop_one_of_each(structure: Structure, pairs: list[tuple[int, int, float]]) -> Structure:
    """``structure`` without the second site of each close pair (one site per pair kept)."""
    drop = sorted({j for _, j, _ in pairs})
    s = structure.copy()
    s.remove_sites(drop)
    return s


def summarise(crystals: list[dict], vpa_by_sites: dict[int, list[float]], n_samples: int) -> dict:
    """Counts and medians over the invalid ``crystals`` (rows of :func:`main`'s table)."""
    n_pairs = Counter(len(c["close_pairs"]) for c in crystals)
    paired = [c for c in crystals if c["close_pairs"]]
    same = [all(p["elements"][0] == p["elements"][1] for p in c["close_pairs"]) for c in paired]
    ratio = [c["volume_per_atom"] / c["valid_median_volume_per_atom_same_sites"] for c in crystals
             if c["valid_median_volume_per_atom_same_sites"]]
    after = []
    for c in paired:
        ref = vpa_by_sites.get(c["sites"] - len(c["close_pairs"]))
        if ref:
            after.append(c["volume_per_atom_after"] / float(np.median(ref)))
    closest = [min(p["distance"] for p in c["close_pairs"]) for c in paired]
    return {
        "n_samples": n_samples, "n_invalid": len(crystals),
        "invalid_percent": 100 * len(crystals) / n_samples if n_samples else None,
        "by_number_of_close_pairs": {str(k): v for k, v in sorted(n_pairs.items())},
        "volume_only_failures": n_pairs.get(0, 0),
        "close_pairs_of_one_element_percent": 100 * float(np.mean(same)) if same else None,
        "valid_after_dropping_one_site_per_pair": sum(c["valid_after_dropping_one_site_per_pair"]
                                                      for c in crystals),
        "median_volume_ratio_to_valid_same_sites": float(np.median(ratio)) if ratio else None,
        "median_volume_ratio_after_drop": float(np.median(after)) if after else None,
        "closest_distance_quantiles_A": np.quantile(closest, [0, 0.5, 1]).tolist() if closest else None,
    }


def read_rows(folder: Path) -> list[dict[str, str]]:
    path = folder / "samples.csv"
    if not path.exists():
        raise SystemExit(f"{path} not found: give a `crysgen sample` output folder")
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("cif")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("samples", type=Path, help="a `crysgen sample` output folder")
    p.add_argument("--name", required=True, help="result name: benchmarks/results/invalid_anatomy_NAME.json")
    p.add_argument("--volume-sample", type=int, default=2000,
                   help="valid crystals read for the volume-per-atom reference (%(default)s)")
    args = p.parse_args()
    rows = read_rows(args.samples)
    invalid = [r for r in rows if r["structurally_valid"] == "0"]
    valid = [r for r in rows if r["structurally_valid"] == "1"]
    rng = np.random.default_rng(0)
    pick = rng.choice(len(valid), min(args.volume_sample, len(valid)), replace=False) if valid else []
    vpa_by_sites: dict[int, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in pick:
            s = Structure.from_file(args.samples / valid[k]["cif"])
            vpa_by_sites.setdefault(len(s), []).append(s.volume / len(s))
        crystals = []
        for r in invalid:
            s = Structure.from_file(args.samples / r["cif"])
            pairs = close_pairs(s, CUTOFF)
            ref = vpa_by_sites.get(len(s), [])
            merged = drop_one_of_each(s, pairs) if pairs else s
            crystals.append({
                "id": r["id"], "formula": s.composition.reduced_formula, "sites": len(s),
                "volume_per_atom": s.volume / len(s),
                "valid_median_volume_per_atom_same_sites": float(np.median(ref)) if ref else None,
                "close_pairs": [{"distance": round(d, 4), "elements": [str(s[i].specie), str(s[j].specie)]}
                                for i, j, d in pairs],
                "valid_after_dropping_one_site_per_pair": bool(pairs) and structurally_valid(merged),
                "volume_per_atom_after": merged.volume / len(merged) if len(merged) else None,
            })
    summary = summarise(crystals, vpa_by_sites, len(rows))
    write_result(f"invalid_anatomy_{args.name}", {
        "samples": str(args.samples), "cutoff_A": CUTOFF, "summary": summary, "crystals": crystals,
        "volume_reference": {"valid_crystals_read": len(pick), "seed": 0},
        "note": "volume ratio: the invalid crystal's volume per atom over the median of valid samples "
                "with as many sites (a crude reference: it ignores the elements); above 1: room for "
                "fewer atoms. "
                "'after drop' compares with valid samples of the smaller size",
    })
    print(summary)


if __name__ == "__main__":
    main()
