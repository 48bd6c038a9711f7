"""Space groups of generated against training crystals by site count -> results/symmetry_by_size_<name>.json.

Both sides get spglib at the same tolerance (0.1 Å, that of `crysgen sample`'s
``spglib_space_group`` column), the training crystals a seeded subset of each size. For each site
count: how many of each are triclinic (P1 or P-1), cubic (groups 195-230), and of the size's most
common training group; and the share of invalid samples. With ``--loose`` the same shares again at a
looser tolerance, on up to ``--per-size`` samples of each size read from their CIFs: a crystal that is
symmetric within noise gains its group there, one that is not stays triclinic. A generator that
reproduces a dataset's composition and density can still lose its symmetry, and a crystal that lost it
does not match its high-symmetry reference.

    python benchmarks/symmetry_by_size.py benchmarks/.work/cpu_samples/samples_mp20bund10k \\
        --train .gpuwork/mp_20_asis_train_partial.npz --name mp20_bundled_10k
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np
from pymatgen.core import Structure
from tqdm import tqdm

from crysgen import CrystalSet
from crysgen.data.guards import space_group_number_or_zero
from provenance import write_result

SYMPREC = 0.1  # Å: the tolerance of samples.csv's spglib_space_group column


def share(groups: list[int], test) -> float | None:
    """The fraction of ``groups`` for which ``test(group)`` holds (None for no groups)."""
    return sum(bool(test(g)) for g in groups) / len(groups) if groups else None


def train_groups(train: CrystalSet, per_size: int, symprec: float, seed: int = 0) -> dict[int, list[int]]:
    """spglib groups of up to ``per_size`` training crystals of each site count (0 where spglib fails)."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(train.num_sites)
    out: dict[int, list[int]] = {}
    for k in tqdm(sorted(set(sizes.tolist())), desc="train", unit="size"):
        idx = np.flatnonzero(sizes == k)
        pick = np.sort(rng.choice(idx, min(per_size, len(idx)), replace=False))
        out[int(k)] = [space_group_number_or_zero(s, symprec) for s in train.subset(pick).to_structures()]
    return out


def sample_groups(folder: Path, rows: list[dict[str, str]], per_size: int, symprec: float,
                  seed: int = 0) -> dict[int, list[int]]:
    """spglib groups at ``symprec`` of up to ``per_size`` samples of each site count, read from their CIFs."""
    rng = np.random.default_rng(seed)
    by: dict[int, list[dict[str, str]]] = {}
    for r in rows:
        by.setdefault(int(r["num_sites"]), []).append(r)
    out: dict[int, list[int]] = {}
    for k, rs in tqdm(sorted(by.items()), desc="samples", unit="size"):
        pick = np.sort(rng.choice(len(rs), min(per_size, len(rs)), replace=False))
        out[k] = [space_group_number_or_zero(Structure.from_file(folder / rs[i]["cif"]), symprec)
                  for i in pick]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("samples", type=Path, help="a `crysgen sample` output folder (its samples.csv)")
    p.add_argument("--train", type=Path, required=True, help="the training CrystalSet (.npz)")
    p.add_argument("--name", required=True, help="result name: benchmarks/results/symmetry_by_size_NAME.json")
    p.add_argument("--per-size", type=int, default=300, help="training crystals per site count (%(default)s)")
    p.add_argument("--loose", type=float, default=None,
                   help="also the shares at this looser tolerance (Å), from CIFs and training crystals")
    args = p.parse_args()
    table = args.samples / "samples.csv"
    if not table.exists():
        raise SystemExit(f"{table} not found: give a `crysgen sample` output folder")
    with table.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("num_sites")]
    train_set = CrystalSet.load(args.train)
    train = train_groups(train_set, args.per_size, SYMPREC)
    loose_t = train_groups(train_set, args.per_size, args.loose) if args.loose else {}
    loose_g = sample_groups(args.samples, rows, args.per_size, args.loose) if args.loose else {}
    gen: dict[int, list[tuple[int, bool]]] = {}
    for r in rows:
        sg, ok = int(r["spglib_space_group"]), r["structurally_valid"] == "1"
        gen.setdefault(int(r["num_sites"]), []).append((sg, ok))
    by_size = {}
    for k in sorted(set(train) | set(gen)):
        t, g = train.get(k, []), [sg for sg, _ in gen.get(k, [])]
        top = Counter(t).most_common(1)[0][0] if t else None
        by_size[str(k)] = {
            "train_read": len(t), "generated": len(g),
            "generated_invalid": sum(not ok for _, ok in gen.get(k, [])),
            "triclinic_train": share(t, lambda s: 1 <= s <= 2),
            "triclinic_generated": share(g, lambda s: 1 <= s <= 2),
            "cubic_train": share(t, lambda s: s >= 195),
            "cubic_generated": share(g, lambda s: s >= 195),
            "top_train_group": top,
            "top_group_train": share(t, lambda s, top=top: s == top),
            "top_group_generated": share(g, lambda s, top=top: s == top),
            "spglib_failed_generated": share(g, lambda s: s == 0),
        }
        if args.loose:
            lt, lg = loose_t.get(k, []), loose_g.get(k, [])
            by_size[str(k)] |= {"loose_triclinic_train": share(lt, lambda s: 1 <= s <= 2),
                                "loose_triclinic_generated": share(lg, lambda s: 1 <= s <= 2),
                                "loose_top_group_train": share(lt, lambda s, top=top: s == top),
                                "loose_top_group_generated": share(lg, lambda s, top=top: s == top)}
    all_t = [s for v in train.values() for s in v]
    weights = {k: len(v) for k, v in gen.items()}
    # the training side re-weighted to the generated site counts, so the totals compare like with like
    tri_t = sum(weights[k] * (share(train.get(k, []), lambda s: 1 <= s <= 2) or 0)
                for k in weights) / sum(weights.values())
    write_result(f"symmetry_by_size_{args.name}", {
        "samples": str(args.samples), "train": str(args.train), "symprec_A": SYMPREC,
        "loose_symprec_A": args.loose,
        "per_size": args.per_size, "seed": 0,
        "overall": {"generated": len(rows),
                    "triclinic_generated": share([int(r["spglib_space_group"]) for r in rows],
                                                 lambda s: 1 <= s <= 2),
                    "triclinic_train_at_generated_sizes": tri_t,
                    "train_read": len(all_t)},
        "by_size": by_size,
    })
    for k, v in by_size.items():
        print(k, {a: (round(b, 3) if isinstance(b, float) else b) for a, b in v.items()})


if __name__ == "__main__":
    main()
