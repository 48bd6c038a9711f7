"""How far CDVAE's Wasserstein distances move with the draw of 1,000 valid samples.

CDVAE's protocol (and every published W(ρ), W(#elements), W(property) row) scores one random draw
of 1,000 valid samples out of 10,000. This re-reads evaluations already made (their
``structures.csv``: one row per sample with its validity, density, element count and predicted
formation energy) and scores ``--draws`` further draws of the same size with
:func:`crysgen.evaluation.distributions.wasserstein_spread`, the function ``crysgen evaluate`` now
runs itself: their mean, standard deviation and range, and W on every valid sample. The file's
own draw is scored again from the rows (``protocol_redrawn``): equal to its figure when the rows
and reference values are the suite's. Each distance's means (generated, reference) and W on every
valid sample with the difference of means removed say how much of it is a plain shift; for the
density, the mean mass and volume per atom say whether a shift comes from the elements or the
cells. The reference split's formation energies are predicted with the same CGCNN model as the suite's.

    python benchmarks/wdist_spread.py eval_atom_diffusion_p5cont_10k_perov_5_cpu \\
        eval_atom_diffusion_p5cont_10k_fp32_perov_5_cpu --dataset perov_5 --name perov_5

Each NAME is a result file ``benchmarks/results/NAME.json`` whose report folder
(``--work``/NAME/report, where ``eval_model.py`` leaves it) still exists. Writes
``benchmarks/results/wdist_spread_<name>.json`` and a plot of the draws beside the protocol's figure
and the published rows (``wdist_spread_<name>.png``).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from pymatgen.core import Composition

from crysgen.crystal_set import CrystalSet
from crysgen.evaluation.distributions import wasserstein, wasserstein_spread
from provenance import ROOT, write_result

METRICS = {"wdist_density": ("density_g_cm3", "W(ρ)"), "wdist_num_elems": ("num_elements", "W(#elements)"),
           "wdist_prop": ("formation_energy_per_atom_eV_per_atom", "W(E_form)")}
"""Suite metric -> (structures.csv column, label)."""


def valid_values(path: Path) -> dict[str, np.ndarray]:
    """Each METRICS column over the samples the suite draws from: structurally and compositionally
    valid, with fingerprints (CDVAE's "valid"; a row whose fingerprint failed has a reason)."""
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r["struct_valid"] == "True" and r["comp_valid"] == "True"
                and not r.get("fingerprint_reason")]
    out = {key: np.array([float(r[col]) if r.get(col) else np.nan for r in rows])
           for key, (col, _) in METRICS.items()}
    out["mass_per_atom"] = np.array([mass_per_atom(Composition(r["formula"])) for r in rows])
    return out


def mass_per_atom(composition: Composition) -> float:
    """Mean atomic mass of a composition (u)."""
    return float(composition.weight) / composition.num_atoms


def density_parts(mass: np.ndarray, density: np.ndarray, ref_mass: np.ndarray,
                  ref_volume: np.ndarray) -> dict:
    """Whether a density shift comes from heavier atoms or smaller cells: mean mass per atom (u) and
    volume per atom (Å³) of the generated (from mass and density) and reference crystals."""
    volume = mass * 1.66053907 / density  # u / (g/cm³) -> Å³
    return {"mass_per_atom": {"generated": float(mass.mean()), "reference": float(ref_mass.mean())},
            "volume_per_atom": {"generated": float(np.nanmean(volume)),
                                "reference": float(ref_volume.mean())}}


def reference_values(test: Path, models_dir: str | None) -> dict[str, np.ndarray]:
    """The reference split's densities (g/cm³), element counts and CGCNN formation energies (eV/atom)."""
    from crysgen.data.structures import InputCrystal
    from crysgen.properties.predict import featurize
    from crysgen.properties.registry import load_property_model

    cs = CrystalSet.load(test)
    structs = [cs.to_structure(i) for i in range(len(cs))]
    graphs, _ = featurize([InputCrystal(str(i), s) for i, s in enumerate(structs)])
    model = load_property_model("formation_energy", models_dir)
    return {"mass_per_atom": np.array([mass_per_atom(s.composition) for s in structs]),
            "volume_per_atom": np.array([s.volume / len(s) for s in structs]),
            "wdist_density": np.array([s.density for s in structs]),
            "wdist_num_elems": np.array([len(s.composition.elements) for s in structs], float),
            "wdist_prop": np.asarray(model.predict([g for g in graphs if g is not None], device="cpu"))}


def plot(result: dict, path: Path) -> None:
    """One panel per distance: each evaluation's draws (range: line, mean ± sd: bar), its protocol
    figure (dot), W on every valid sample (cross) and the published rows (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.5 * len(METRICS), 4))
    names = list(result["evaluations"])
    for ax, (key, (_, label)) in zip(axes, METRICS.items(), strict=True):
        ev = [result["evaluations"][n][key] for n in names]
        x = np.arange(1, len(names) + 1)
        ax.vlines(x, [e["min"] for e in ev], [e["max"] for e in ev], color="0.6", label="range of the draws")
        ax.errorbar(x, [e["mean"] for e in ev], yerr=[e["sd"] for e in ev], fmt="_", color="k", capsize=6,
                    label="mean ± sd of the draws")
        ax.plot(x, [e["protocol"] for e in ev], "o", color="C3", label="the file's figure (one draw)")
        ax.plot(x, [e["all"] for e in ev], "x", color="C2", label="every valid sample")
        top = 1.3 * max(e["max"] for e in ev)
        for k, (row, values) in enumerate(result["published"].items()):
            if key in values and values[key] <= 3 * top:  # one far off would flatten the rest
                ax.axhline(values[key], color=f"C{k + 4}", ls="--", lw=1, label=f"{row} (published)")
                top = max(top, 1.1 * values[key])
        ax.set_ylim(0, max(top, 1e-3))  # a distance that is 0 in every draw (carbon's #elements)
        ax.set_xticks(x, [n.removeprefix("eval_") for n in names], rotation=30,
                      ha="right", fontsize=7)
        ax.set_title(f"{label}: {result['draws']} draws of {result['n_per_draw']}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+", help="result files (benchmarks/results/NAME.json) of one dataset")
    p.add_argument("--dataset", required=True, help="their reference split: WORK/<dataset>_test.npz")
    p.add_argument("--name", required=True, help="writes wdist_spread_<name>.json and .png")
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--n", type=int, default=1000, help="valid samples per draw (CDVAE: 1,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".work"))
    p.add_argument("--models-dir", default=None, help="CGCNN checkpoints (default: $CRYSGEN_MODELS_DIR)")
    args = p.parse_args()
    work = Path(args.work)
    results = {name: json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
               for name in args.names}
    for name, result in results.items():  # every file is checked before the reference work
        if result["dataset"] != args.dataset:
            raise SystemExit(f"{name} scores {result['dataset']}, not {args.dataset}")
        if (result.get("options") or {}).get("reference_limit"):
            # its reference was a seeded subset (which also moved the suite's draw): not the split here
            raise SystemExit(f"{name} was scored against --reference-limit "
                             f"{result['options']['reference_limit']} reference crystals; this compares "
                             f"with the whole {args.dataset} test split "
                             "(use files made with --reference-limit 0)")
    ref = reference_values(work / f"{args.dataset}_test.npz", args.models_dir)
    published: dict[str, dict[str, float]] = {}
    evaluations = {}
    for name, result in results.items():
        pub = result.get("published") or {}
        for row, values in pub.get("rows", {}).items():
            published[row] = {k: v for k, v in zip(pub["columns"], values, strict=True)
                             if k in METRICS and v is not None}
        gen = valid_values(work / name / "report" / "structures.csv")
        # the suite's own draw (its seed's first choice over the valid samples) scores the file's
        # figure again: a check that these rows and reference values are the suite's
        n_valid = len(gen["wdist_density"])
        seed = (result.get("options") or {}).get("seed", 0)
        draw = (np.sort(np.random.default_rng(seed).choice(n_valid, args.n, replace=False))
                if n_valid > args.n else np.arange(n_valid))
        # the suite's seed for its spread; unlike the suite, which starts each distance's draws
        # afresh, the three distances here take their draws in turn from one generator
        rng = np.random.default_rng([args.seed, 1])
        out = {"n_valid": n_valid, "n_samples": result["metrics"]["n_samples"]["value"]}
        for key in METRICS:
            spread = wasserstein_spread(gen[key], ref[key], args.n, args.draws, rng)
            g, r = gen[key][np.isfinite(gen[key])], ref[key]
            out[key] = {"protocol": result["metrics"][key]["value"],
                        "protocol_redrawn": wasserstein(gen[key][draw], ref[key]), **spread,
                        # how much of W on every valid sample is a shift of the mean
                        "mean_generated": float(g.mean()), "mean_reference": float(r.mean()),
                        "all_without_mean_shift": wasserstein(g - g.mean() + r.mean(), r)}
        out["density_parts"] = density_parts(gen["mass_per_atom"], gen["wdist_density"], ref["mass_per_atom"],
                                             ref["volume_per_atom"])
        evaluations[name] = out
    result = {"dataset": args.dataset, "draws": args.draws, "n_per_draw": args.n, "seed": args.seed,
              "reference": f"{args.dataset}_test.npz ({len(ref['wdist_density'])} crystals)",
              "published": published, "evaluations": evaluations}
    path = write_result(f"wdist_spread_{args.name}", result)
    plot(result, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
