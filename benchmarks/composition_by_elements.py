"""Compositional validity by number of distinct elements, samples against training crystals
-> results/composition_by_elements_<name>.json.

CDVAE's compositional validity (SMACT charge neutrality with the Pauling test, as the suite scores
it: :func:`crysgen.evaluation.compositional.smact_valid`) and W(#elements) are read as one problem
("too many elements"), but a composition with more elements has more oxidation-state combinations
to balance, so it passes more often. This splits both sides by the number of distinct elements:
the share of crystals with k elements and their validity. A generator whose k-element compositions
are as valid as the training crystals' but too many has a count problem; one whose compositions fail
at every k has a stoichiometry problem. ``generated_valid_at_training_counts`` weighs the samples'
validity at each k by the training crystals' share of k: the samples' validity with the element
counts corrected and nothing else. ``by_sites`` splits both sides by the number of sites, and
``invalid_one_site_off`` is the share of the invalid sample compositions that one atom more or fewer
of one of their elements makes valid: a generator that draws the number of sites first must fit a
composition to it. ``site_counts`` compares the numbers of sites themselves (total variation, share
of odd counts).

    python benchmarks/composition_by_elements.py benchmarks/.work/cpu_samples/samples_mp20bund10k \\
        --train .gpuwork/mp_20_asis_train_partial.npz --name mp20_bundled_10k
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from pymatgen.core import Composition, Element
from tqdm import tqdm

from crysgen import CrystalSet
from crysgen.evaluation.compositional import smact_valid
from provenance import write_result


@cache
def _valid_sorted(z: tuple[int, ...]) -> bool:
    return bool(smact_valid(list(z)))


def valid(z: Sequence[int]) -> bool:
    """The suite's compositional validity of one crystal's atomic numbers (each composition is
    checked once: the splits below ask again)."""
    return _valid_sorted(tuple(sorted(z)))


def by_elements(compositions: Iterable[Sequence[int]]) -> dict[str, object]:
    """Crystals (each its atomic numbers, one per site) split by distinct elements: per k the count,
    the share and the compositionally valid share; and over all."""
    n: Counter[int] = Counter()
    ok: Counter[int] = Counter()
    for z in compositions:
        k = len(set(z))
        n[k] += 1
        ok[k] += valid(z)
    total = sum(n.values())
    return {"n": total, "comp_valid": sum(ok.values()) / total if total else None,
            "by_elements": {str(k): {"n": n[k], "share": n[k] / total, "comp_valid": ok[k] / n[k]}
                            for k in sorted(n)}}


def one_site_off(z: Sequence[int]) -> bool:
    """Whether one atom more or fewer of an element the composition holds makes it valid."""
    for e in sorted(set(z)):
        fewer = list(z)
        fewer.remove(e)
        if (fewer and valid(fewer)) or valid([*z, e]):
            return True
    return False


def by_sites(compositions: Iterable[Sequence[int]], *, repairs: bool) -> dict[str, dict[str, float]]:
    """Per number of sites: the count, the valid share and (``repairs``) the share of the invalid
    compositions that one atom more or fewer of one of their elements makes valid."""
    n: Counter[int] = Counter()
    ok: Counter[int] = Counter()
    fix: Counter[int] = Counter()
    for z in compositions:
        v = valid(z)
        n[len(z)] += 1
        ok[len(z)] += v
        fix[len(z)] += bool(repairs and not v and one_site_off(z))
    out: dict[str, dict[str, float]] = {str(k): {"n": n[k], "comp_valid": ok[k] / n[k]} for k in sorted(n)}
    for k in sorted(n) if repairs else ():
        out[str(k)]["invalid_one_site_off"] = fix[k] / (n[k] - ok[k]) if n[k] > ok[k] else None
    return out


def site_counts(generated: Sequence[Sequence[int]], training: Sequence[Sequence[int]]) -> dict[str, float]:
    """How the samples' numbers of sites are distributed against the training crystals': the total
    variation distance of the two histograms and each side's share of odd counts (a model that
    chooses its own count, e.g. with empty sites, can lose the training crystals' even counts)."""
    gen = Counter(len(z) for z in generated)
    ref = Counter(len(z) for z in training)
    ng, nr = sum(gen.values()), sum(ref.values())
    tv = 0.5 * sum(abs(gen[k] / ng - ref[k] / nr) for k in set(gen) | set(ref))
    return {"tv": tv, "odd_share_generated": sum(v for k, v in gen.items() if k % 2) / ng,
            "odd_share_training": sum(v for k, v in ref.items() if k % 2) / nr,
            "mean_generated": sum(k * v for k, v in gen.items()) / ng,
            "mean_training": sum(k * v for k, v in ref.items()) / nr}


def sample_compositions(folder: Path) -> list[list[int]]:
    """Atomic numbers of every decoded sample of a `crysgen sample` folder, one per site (from
    samples.csv's formula and num_sites)."""
    with (folder / "samples.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("formula")]
    out = []
    for r in tqdm(rows, desc="samples", unit="crystal"):
        amounts = Composition(r["formula"]).get_el_amt_dict()  # the formula may be reduced:
        scale = int(r["num_sites"]) / sum(amounts.values()) if r.get("num_sites") else 1.0  # the cell's
        out.append([Element(e).Z for e, a in amounts.items() for _ in range(round(a * scale))])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples", type=Path, help="a `crysgen sample` folder")
    p.add_argument("--train", required=True, type=Path, help="the training CrystalSet .npz")
    p.add_argument("--name", required=True, help="output: composition_by_elements_<name>.json")
    args = p.parse_args()
    train = CrystalSet.load(args.train)
    train_z = [[int(z) for z in train.atomic_numbers[i][: train.num_sites[i]]]
               for i in tqdm(range(len(train)), desc="train", unit="crystal")]
    sampled = sample_compositions(args.samples)
    generated, reference = by_elements(sampled), by_elements(train_z)
    generated["by_sites"] = by_sites(sampled, repairs=True)
    reference["by_sites"] = by_sites(train_z, repairs=False)
    invalid = [z for z in sampled if not valid(z)]
    generated["invalid_one_site_off"] = (sum(one_site_off(z) for z in invalid) / len(invalid)
                                         if invalid else None)
    for label, d in (("samples", generated), ("train", reference)):
        print(label, f"{100 * d['comp_valid']:.1f} %",
              {k: (f"{100 * v['share']:.1f} %", f"{100 * v['comp_valid']:.1f} %")
               for k, v in d["by_elements"].items()})
    g, t = generated["by_elements"], reference["by_elements"]
    # the samples' validity per element count, weighted by the training crystals' shares of the counts
    at_training_counts = sum(t[k]["share"] * g[k]["comp_valid"] for k in t if k in g) / sum(
        t[k]["share"] for k in t if k in g)
    print(f"samples at the training element counts: {100 * at_training_counts:.1f} %")
    sizes = site_counts(sampled, train_z)
    print(f"site counts: TV {sizes['tv']:.3f}, odd {100 * sizes['odd_share_generated']:.1f} % "
          f"(training {100 * sizes['odd_share_training']:.1f} %)")
    write_result(f"composition_by_elements_{args.name}", {
        "samples": str(args.samples), "train": str(args.train), "validity": "smact_valid (suite's)",
        "generated": generated, "training": reference,
        "generated_valid_at_training_counts": at_training_counts, "site_counts": sizes})


if __name__ == "__main__":
    main()
