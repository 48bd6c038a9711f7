"""Voxel pipeline of Court et al. on perov_5: reconstruction, generation, targeted funnel, speed.

Writes (or updates, one section per stage) ``benchmarks/results/voxel_perov_5.json``:

* ``reconstruction``: held-out (test) crystals through (a) their ground-truth maps and the
  watershed (the decoder's ceiling, no network), (b) density → UNet → watershed, (c) density →
  VAE (μ, the crystal's own condition class) → UNet → watershed; lattice MAE, site EMD, |ΔN|,
  voxel recall and StructureMatcher match rate (:mod:`crysgen.evaluation.reconstruction`).
* ``generation``: ``--n-samples`` random samples (condition class random per sample) written as a
  ``crysgen sample`` folder (evaluate it with ``benchmarks/eval_model.py --samples``), decode rate,
  structural validity at 0.5 Å, crystals/s including segmentation and watershed.
* ``funnel``: ``--funnel-bases`` training crystals (random, seeded) × ``--funnel-n`` samples around
  each (σ² 0.5, the base's condition), Court Table 2's filters (:mod:`crysgen.evaluation.funnel`).
* ``latent``: t-SNE of μ of test crystals coloured by heat_ref (``voxel_perov_5_latent.png``) and a
  latent interpolation between two test crystals.
* ``training``: samples/s and steps of the segmenter and VAE runs (their ``train_summary.json``).

Example (GPU machine, see gpu_voxel.sh)::

    python3 benchmarks/voxel.py --model RUNS/vae/model --device cuda --workers 16
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from codec import ROOT, stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.evaluation.reconstruction import compare, summarize, voxel_recall
from crysgen.evaluation.validity import structurally_valid
from crysgen.pipelines.voxel import VoxelModel, segment_grids
from crysgen.representations.voxel import encode, read_lattice
from crysgen.representations.watershed import decode
from provenance import published

WORK = ROOT / "benchmarks" / ".work"
RESULTS = ROOT / "benchmarks" / "results"
COURT = "Cond-DFC-VAE (Court et al.)"
PAPER = published("court2020_voxel")["rows"] | {  # Court et al. 2020; their CDVAE-table row from dng
    "cdvae_table_row": dict(zip(("struct_valid", "comp_valid", "cov_r", "cov_p", "w_density", "w_property",
                                 "w_num_elements"), published("dng")["rows"]["perov_5"][COURT], strict=True))}


def _write(path: Path, name: str, section: dict) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = section | stamp()
    data["paper"] = PAPER
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote section {name!r} of {path}")


def _timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def reconstruction(model: VoxelModel, test: CrystalSet, args) -> dict:
    g = encode(test, model.spec.voxel)
    ws = model.spec.watershed(args.merge_tol)
    out: dict = {"n": len(test), "split": str(args.test), "merge_tol": ws.merge_tol}
    lengths = read_lattice(g.inputs[:, 1:], model.spec.voxel)
    res, sec = _timed(decode, g.occupancy.astype(np.float32), g.species, lengths,
                      config=model.spec.voxel, options=ws, workers=args.workers)
    out["ground_truth_maps"] = summarize(compare(res.crystals, res.index, test), len(test)).to_dict() | {
        "seconds": round(sec, 2)}
    (occ, spc), sec = _timed(segment_grids, model.segmenter, g.inputs, device=args.device, batch_size=64)
    res, sec2 = _timed(decode, occ, spc, lengths, config=model.spec.voxel, options=ws, workers=args.workers)
    out["unet"] = summarize(compare(res.crystals, res.index, test), len(test),
                            voxel_recall(occ, spc, g.species)).to_dict() | {
        "seconds_segment": round(sec, 2), "seconds_watershed": round(sec2, 2)}
    classes = model.spec.condition_class(test.properties[model.spec.condition])
    mu, _ = model.encode(test, classes, device=args.device)
    grids = model.decode_grids(mu, classes, device=args.device)
    occ, spc = segment_grids(model.segmenter, grids, device=args.device, batch_size=64)
    lengths = read_lattice(grids[:, 1:], model.spec.voxel, method=model.spec.readback)
    res = decode(occ, spc, lengths, config=model.spec.voxel, options=ws, workers=args.workers)
    out["vae"] = summarize(compare(res.crystals, res.index, test), len(test),
                           voxel_recall(occ, spc, g.species)).to_dict() | {
        "density_mse": round(float(((grids[:, 0] - g.inputs[:, 0]) ** 2).mean()), 5),
        "failures": _reasons(res.failures), "lattice_readback": model.spec.readback}
    return out


def _reasons(failures: list) -> dict:
    from collections import Counter

    return dict(Counter(r.split(":")[0].split(" sites")[0] for _, r in failures).most_common(5))


def generation(args, test: CrystalSet) -> dict:
    from crysgen.pipelines.sampling import SampleOptions, sample_to_dir

    out_dir = Path(args.samples_out)
    if out_dir.exists():
        raise SystemExit(f"{out_dir} exists: give a new --samples-out (the timing needs a fresh run)")
    summary, sec = _timed(sample_to_dir, args.model, out_dir,
                          SampleOptions(n=args.n_samples, seed=0, prior=args.prior),
                          device=args.device, progress=False, workers=args.workers)
    from crysgen.data.structures import load_inputs

    structures = [c.structure for c in load_inputs(out_dir) if c.structure is not None]
    valid = sum(structurally_valid(s) for s in structures)

    def cells(ss: list) -> dict:  # the 0.5 Å rule passes shrunken cells: say how large they are
        if not ss:
            return {}
        return {"median_lattice_length_A": round(float(np.median([np.median(s.lattice.abc) for s in ss])), 3),
                "median_volume_per_atom_A3": round(float(np.median([s.volume / len(s) for s in ss])), 3),
                "median_sites": float(np.median([len(s) for s in ss]))}

    return {"n": args.n_samples, "decoded": len(structures), "valid_0.5A": valid,
            "cells": cells(structures), "test_cells": cells(test.to_structures()),
            "validity_percent_of_samples": round(100 * valid / args.n_samples, 2),
            "seconds": round(sec, 2), "crystals_per_s": round(args.n_samples / sec, 1),
            "samples_dir": os.path.relpath(Path(out_dir).resolve(), ROOT),
            "failure_reasons": summary.failure_reasons, "condition": "random decile class per sample",
            "prior": args.prior}


def funnel(model: VoxelModel, train: CrystalSet, args) -> dict:
    from crysgen.evaluation.funnel import average_counts, targeted_funnel
    from crysgen.properties.model import PropertyModel

    prop = PropertyModel.from_pretrained(args.property_model)
    training = train.to_structures()
    rng = np.random.default_rng(0)
    bases = rng.choice(len(train), args.funnel_bases, replace=False)
    results = []
    for k, i in enumerate(bases):
        r = targeted_funnel(model, train.subset([int(i)]), training, prop, n=args.funnel_n, seed=k,
                            device=args.device, workers=args.workers)
        print(f"base {r.base_formula}: {r.counts}")
        results.append(r)
    return {"bases": [r.to_dict() for r in results], "average": average_counts(results),
            "property_model": str(args.property_model), "sigma2": 0.5, "tolerance": 0.2,
            "seconds": round(sum(r.seconds for r in results), 1),
            "crystals_per_s": round(args.funnel_bases * args.funnel_n / sum(r.seconds for r in results), 1)}


def latent(model: VoxelModel, test: CrystalSet, args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from crysgen.evaluation.diversity import reduced_formulas

    sub = test.subset(np.arange(min(len(test), args.n_latent)))
    values = sub.properties[model.spec.condition]
    classes = model.spec.condition_class(values)
    mu, _ = model.encode(sub, classes, device=args.device)
    xy = TSNE(2, random_state=0, init="pca", perplexity=30).fit_transform(mu)
    fig, ax = plt.subplots(figsize=(6, 5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=4, cmap="viridis")
    fig.colorbar(sc, label=f"{model.spec.condition} (eV)")
    ax.set_title(f"t-SNE of the VAE latent μ, {len(sub)} perov_5 test crystals")
    ax.set_xticks([])
    ax.set_yticks([])
    png = RESULTS / "voxel_perov_5_latent.png"
    fig.savefig(png, dpi=130, bbox_inches="tight")
    # latent interpolation between two test crystals of the same anonymized formula (the paper's
    # CeCrO3 -> YbCrO3 is not in perov_5)
    structures = sub.to_structures()
    anon = [s.composition.anonymized_formula for s in structures]
    forms = reduced_formulas(sub)
    a = 0
    b = next(j for j in range(1, len(sub)) if anon[j] == anon[a] and forms[j] != forms[a])
    line = (mu[a], mu[b])
    res = model.generate(args.points, device=args.device, line=line, offset=0, total=args.points,
                         condition=int(classes[a]), workers=1)
    got = reduced_formulas(res.crystals)
    path = ["(failed)"] * args.points
    for j, i in enumerate(res.index):
        path[int(i)] = got[j]
    return {"n": len(sub), "plot": str(png.relative_to(ROOT)),
            "interpolation": {"from": forms[a], "to": forms[b], "path": path}}


def training_speed(runs: list[Path]) -> dict:
    """Steps, losses and samples/s of each run directory (in training order: a warm-started
    continuation follows the run it started from)."""
    out: dict = {"segmenter": [], "vae": []}
    for root in runs:
        for kind in out:
            f = root / kind / "train_summary.json"
            if f.exists():
                d = json.loads(f.read_text())
                out[kind].append({"dir": os.path.relpath(root / kind, ROOT), "steps": d["global_step"],
                                  "final_losses": d.get("final_losses"), "runs": d["runs"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="voxel_vae model directory")
    p.add_argument("--train", default=str(WORK / "perov_5_train_labelled.npz"))
    p.add_argument("--test", default=str(WORK / "perov_5_test.npz"))
    p.add_argument("--property-model",
                   default=str(WORK / "property_runs/perov_5_heat_ref_formation_energy/model"))
    p.add_argument("--runs", default=f"{WORK / 'voxel_runs_first'},{WORK / 'voxel_runs'}",
                   help="comma-separated folders holding segmenter/ and vae/ runs (train_summary.json)")
    p.add_argument("--stages", default="training,reconstruction,generation,funnel,latent")
    p.add_argument("--n-recon", type=int, default=1000)
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--samples-out", default=str(WORK / "evalsamples" / "voxel_vae"))
    p.add_argument("--funnel-bases", type=int, default=12)
    p.add_argument("--funnel-n", type=int, default=1000)
    p.add_argument("--n-latent", type=int, default=2000)
    p.add_argument("--points", type=int, default=10)
    p.add_argument("--prior", default="standard", choices=("standard", "posterior"),
                   help="generation: random latents from N(0, I) or the posterior-matched prior")
    p.add_argument("--merge-tol", type=float, default=None,
                   help="reconstruction: the watershed's merge_tol in Å (default: the model's voxel.json "
                        "merge_tol, else the watershed default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=str(RESULTS / "voxel_perov_5.json"))
    args = p.parse_args()
    stages = args.stages.split(",")
    out = Path(args.out)
    model = VoxelModel.from_pretrained(args.model)
    test = CrystalSet.load(args.test)
    test = test.subset(np.flatnonzero(np.isfinite(test.properties[model.spec.condition])))
    if "training" in stages:
        _write(out, "training", training_speed([Path(r) for r in args.runs.split(",")]))
    if "reconstruction" in stages:
        held_out = test.subset(np.arange(min(len(test), args.n_recon)))
        _write(out, "reconstruction", reconstruction(model, held_out, args))
    if "generation" in stages:
        _write(out, "generation", generation(args, test))
    if "latent" in stages:
        _write(out, "latent", latent(model, test, args))
    if "funnel" in stages:
        _write(out, "funnel", funnel(model, CrystalSet.load(args.train), args))


if __name__ == "__main__":
    main()
