"""A composition model's compositions alone, beside the training draw and the test split.

Writes benchmarks/results/composition_prior_<name>.json.

`crysgen sample --composition-prior MODEL_DIR` keeps each sampled composition exactly, so a sample's
compositional validity is its composition's. This scores the compositions alone (no structure model;
a CPU, about a minute per 10,000): ``-n`` compositions sampled (seeded) from the composition model
as `crysgen sample` draws them for an atom model (``--atom-model``, default the bundled one: its
elements, at most its sites), against ``-n`` compositions drawn from the training crystals (what
`--composition-prior TRAIN.npz` gives) and the test crystals' own. Per set: SMACT validity (CDVAE's
definition, SMACT 2.2.1 tables; also of the novel and the known compositions apart), the share whose
reduced formula no training crystal has (novel) and the distinct reduced formulas among them
(unique), W(#elements), W(sites) and W(mean atomic mass per site) against the test split (the last
is what sets a sample's density at a given volume per atom), and the model's negative log-likelihood
of the test compositions (nats per composition) beside that of the training ones.

Several models (``MODEL_DIR ...``) are scored in one file, each under the name of its folder.
``--repeats K`` draws K further sets per model (seeds seed+1 … seed+K) and adds their SMACT
validity, with its mean and standard deviation over all K+1 draws: how much one draw of ``-n``
moves the headline rate.

Usage: python benchmarks/composition_prior.py MODEL_DIR [MODEL_DIR ...] --train TRAIN.npz --test TEST.npz
    [-n 10000] [--seed 0] [--repeats K] [--name mp20] [--atom-model ATOM_MODEL_DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from crysgen.crystal_set import CrystalSet, reduced_formula
from crysgen.data.substitution import atomic_masses
from crysgen.evaluation.compositional import smact_valid
from crysgen.evaluation.distributions import wasserstein
from crysgen.models.atoms import SPEC_FILE
from crysgen.models.composition_lm import CompositionModel
from crysgen.pipelines.compositions import draw_rows, from_model
from crysgen.pipelines.generators import DEFAULT_MODEL, resolve_model_dir
from crysgen.representations.atoms import AtomSetSpec, num_elements
from provenance import file_sha256, write_result


def smact_flags(z: np.ndarray) -> np.ndarray:
    """SMACT validity (CDVAE's definition) of each int (n, S) composition row."""
    return np.array([smact_valid([int(v) for v in r if v]) for r in z])


def describe(z: np.ndarray, known: set[str], test: np.ndarray | None, masses: np.ndarray) -> dict[str, float]:
    """Validity, novelty, uniqueness and distances to the test compositions of int (n, S) rows."""
    formulas = [reduced_formula(r[r > 0]) for r in z]
    novel = np.array([f not in known for f in formulas])
    sites = (z > 0).sum(axis=1)
    mass = masses[z].sum(axis=1) / sites
    ok = smact_flags(z)
    out = {"n": len(z),
           "smact_valid": float(ok.mean()),
           "smact_valid_of_novel": float(ok[novel].mean()) if novel.any() else float("nan"),
           "smact_valid_of_known": float(ok[~novel].mean()) if (~novel).any() else float("nan"),
           "novel": float(novel.mean()),
           "unique": len(set(formulas)) / len(z),
           "unique_of_novel": (len({f for f, k in zip(formulas, novel, strict=True) if k})
                               / max(1, int(novel.sum()))),
           "mean_elements": float(num_elements(z).mean()),
           "mean_sites": float(sites.mean())}
    if test is not None:
        test_sites = (test > 0).sum(axis=1)
        out |= {"w_num_elements": wasserstein(num_elements(z), num_elements(test)),
                "w_sites": wasserstein(sites, test_sites),
                "w_mass_per_site": wasserstein(mass, masses[test].sum(axis=1) / test_sites)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="composition model directories")
    p.add_argument("--train", required=True, help="the training CrystalSet (novelty; the baseline draw)")
    p.add_argument("--test", required=True, help="the test CrystalSet (the reference)")
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=0,
                   help="also draw this many further sets (seeds seed+1, ...) per model: SMACT validity "
                        "of each, and their mean and standard deviation with the first")
    p.add_argument("--name", default="mp20")
    p.add_argument("--atom-model", default=str(DEFAULT_MODEL),
                   help="the atom model whose elements and sites the compositions are drawn for "
                        "(default: the bundled mp_20 one)")
    args = p.parse_args()
    atom_model = resolve_model_dir(args.atom_model)
    spec = AtomSetSpec.load(atom_model / SPEC_FILE)
    train, test = CrystalSet.load(args.train), CrystalSet.load(args.test)
    test = test.subset(np.flatnonzero((test.num_sites > 0) & (test.num_sites <= spec.max_atoms)))
    fits = np.flatnonzero((train.num_sites > 0) & (train.num_sites <= spec.max_atoms))
    known = {reduced_formula(r[r > 0]) for r in train.atomic_numbers[fits]}
    masses = atomic_masses()
    drawn = train.atomic_numbers[draw_rows(train, args.n, max_sites=spec.max_atoms, seed=[args.seed, 5])]
    sets = {"training_draw": describe(drawn, known, test.atomic_numbers, masses),
            "test": describe(test.atomic_numbers, known, None, masses)}
    def draw(model: CompositionModel, seed: int) -> np.ndarray:
        """``-n`` compositions of ``model`` as `crysgen sample` draws them for the atom model."""
        return from_model(model, args.n, max_sites=spec.max_atoms, known_elements=set(spec.elements),
                          seed=[seed, 5])[0].atomic_numbers

    models = {}
    for path in args.models:
        model = CompositionModel.from_pretrained(path)
        t0 = time.perf_counter()
        sampled = draw(model, args.seed)
        seconds = time.perf_counter() - t0
        s = model.net.cfg.max_sites
        row = describe(sampled, known, test.atomic_numbers, masses) | {
            "seconds_sampling": round(seconds, 2),
            "test_nll": float(model.nll(test.atomic_numbers[:, :s]).mean()),
            "train_nll": float(model.nll(train.atomic_numbers[fits][:, :s]).mean()),
            "net": model.net.config, "parameters": sum(p.numel() for p in model.net.parameters()),
            "weights_sha256": file_sha256(Path(path) / "weights.safetensors"), "path": str(path)}
        if args.repeats:
            rates = [row["smact_valid"]] + [float(smact_flags(draw(model, args.seed + k)).mean())
                                            for k in range(1, args.repeats + 1)]
            row |= {"smact_valid_by_seed": rates, "smact_valid_mean": float(np.mean(rates)),
                    "smact_valid_sd": float(np.std(rates, ddof=1))}
        models[Path(path).name] = row
        print(Path(path).name, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)}, flush=True)
    for name, row in sets.items():
        print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)
    result = {"what": "compositions alone: sampled from each composition model, drawn from the training "
                      "crystals, and the test crystals' own (SMACT 2.2.1 validity; W against the test split; "
                      "NLL in nats per composition)",
              "train": args.train, "test": args.test, "seed": args.seed, "structure_model": str(atom_model),
              "models": models, "sets": sets}
    write_result(f"composition_prior_{args.name}", result, "cpu")


if __name__ == "__main__":
    main()
