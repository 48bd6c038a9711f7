"""CPU diagnostic of issue 21: why the voxel VAE's decoded coordinate channels give tiny lattices.

Not the paper-target measurement (that is ``benchmarks/voxel.py`` on the GPU-trained models): a
tiny VAE (``--width``, ``--steps``) is trained on CPU on a slice of perov_5 *val* (the labelled
split; heat_ref deciles as the condition) once per variant, and μ-reconstruction is measured on
a slice of perov_5 *test* straight from the decoded coordinate channels (no segmenter or
watershed: the lattice is all this looks at). Writes ``benchmarks/results/voxel_lattice_cpu.json``:

* ``channel_statistics``: per channel, the mean, the variance over all voxels and the variance
  *across crystals* per voxel (what a crystal's grid tells about it) of training grids, and the
  weights :func:`~crysgen.objectives.voxel.channel_weights` derives from them.
* ``rotation_average``: a 4 Å cubic cell's coordinate channels averaged over the authors' rotation
  augmentation (what an MSE-trained decoder outputs when it cannot tell the orientation), read
  back by slope and by level (:func:`~crysgen.representations.voxel.read_lattice`).
* ``variants``: per training variant (``coordinates``, ``channel_weights``, ``channel_scale``
  of :class:`~crysgen.training.config.VoxelTrainConfig`), the losses at the
  end, and on the test slice: the lattice MAE of μ-reconstructions by both read-backs, the
  decoded channels' slope along their own axis and mean level relative to the truth, the
  density and coordinate MSE, the mean KL; and the median lattice length of random samples
  (z ~ N(0, I), random decile; and from the posterior-matched prior where the model has one) by
  both read-backs; the decoder's final BatchNorm weight and bias
  per channel (Adam moves each by about lr per step from 1 and 0).

Example (2 CPU cores, ~10 minutes)::

    python benchmarks/voxel_lattice_cpu.py --steps 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from codec import ROOT, stamp
from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.objectives.voxel import channel_weights, kl_divergence
from crysgen.pipelines.voxel import VoxelModel
from crysgen.representations.voxel import (
    coordinate_channels,
    fit_coordinate_channels,
    network_input,
    random_rotation,
    read_lattice,
    rotate,
)
from crysgen.training.config import VoxelTrainConfig
from crysgen.training.voxel import train_voxel

WORK = ROOT / "benchmarks" / ".work"
OUT = ROOT / "benchmarks" / "results" / "voxel_lattice_cpu.json"
VARIANTS = {
    "authors": {"coordinates": "rotated", "channel_weights": "uniform", "channel_scale": "none"},
    "rms_scale": {"coordinates": "rotated", "channel_weights": "uniform", "channel_scale": "rms"},
    "rms_scale+grid_coordinates": {"coordinates": "grid", "channel_weights": "uniform",
                                   "channel_scale": "rms"},
    "rms_scale+grid_coordinates+variance_weights": {"coordinates": "grid", "channel_weights": "variance",
                                                    "channel_scale": "rms"}}


def channel_statistics(crystals: CrystalSet) -> dict:
    """Mean, variance over voxels and across crystals per voxel of each input channel."""
    x = network_input(crystals).astype(np.float64)
    names = ["density", "coord_x", "coord_y", "coord_z"]
    out = {n: {"mean": round(float(x[:, c].mean()), 4), "variance_all_voxels": round(float(x[:, c].var()), 4),
               "variance_across_crystals": round(float(x[:, c].var(0).mean()), 4)}
           for c, n in enumerate(names)}
    out["variance_weights"] = [round(float(w), 3) for w in channel_weights(x)]
    out["n"] = len(crystals)
    return out


def rotation_average(length: float = 4.0, draws: int = 4000) -> dict:
    """Coordinate channels of a cubic cell averaged over random rotations, read back both ways."""
    rng = np.random.default_rng(0)
    clean = coordinate_channels(np.array([[length] * 3]))[0].astype(np.float64)
    avg = np.zeros_like(clean)
    for _ in range(draws):
        avg += rotate(clean, random_rotation(rng))
    avg /= draws
    return {"cell_A": length, "draws": draws,
            "slope_readback_A": [round(float(v), 3) for v in read_lattice(avg[None], method="slope")[0]],
            "level_readback_A": [round(float(v), 3) for v in read_lattice(avg[None], method="level")[0]]}


def measure(model: VoxelModel, test: CrystalSet, n_random: int) -> dict:
    """μ-reconstruction lattice errors (both read-backs) and random-sample lattice lengths."""
    classes = model.spec.condition_class(test.properties[model.spec.condition])
    x = network_input(test, model.spec.voxel)
    mu, logvar = model.encode(test, classes)
    grids = model.decode_grids(mu, classes)
    truth = test.lattice[:, :3]
    levels, slopes = fit_coordinate_channels(grids[:, 1:])
    true_levels, true_slopes = fit_coordinate_channels(x[:, 1:])
    own = np.einsum("ncc->nc", slopes) / np.einsum("ncc->nc", true_slopes)
    out: dict = {"n_test": len(test)}
    for m in ("level", "slope"):
        got = read_lattice(grids[:, 1:], model.spec.voxel, method=m)
        out[f"lattice_mae_{m}_A"] = round(float(np.nanmean(np.abs(got - truth))), 4)
    out["own_axis_slope_over_truth_median"] = round(float(np.median(own)), 3)
    out["level_over_truth_median"] = round(float(np.median(levels / true_levels)), 3)
    out["mse_density"] = round(float(((grids[:, 0] - x[:, 0]) ** 2).mean()), 4)
    out["mse_coordinates"] = round(float(((grids[:, 1:] - x[:, 1:]) ** 2).mean()), 4)
    out["kl_nats"] = round(float(kl_divergence(torch.from_numpy(mu), torch.from_numpy(logvar))), 1)
    priors = ["standard"] + (["posterior"] if model.prior is not None else [])
    for prior in priors:
        z, cls = model.latents(n_random, seed=0, prior=prior)
        rand = model.decode_grids(z, cls)
        tag = "" if prior == "standard" else "_posterior_prior"
        for m in ("level", "slope"):
            got = read_lattice(rand[:, 1:], model.spec.voxel, method=m)
            out[f"random{tag}_median_length_{m}_A"] = round(float(np.nanmedian(got)), 3)
    out["test_median_length_A"] = round(float(np.median(truth)), 3)
    bn = model.vae.decoder[-2]  # the decoder's last BatchNorm, before the ReLU: its output scale
    out["final_batchnorm_weight"] = [round(float(v), 3) for v in bn.weight]
    out["final_batchnorm_bias"] = [round(float(v), 3) for v in bn.bias]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=str(WORK / "perov_5_asis_val.npz"))
    ap.add_argument("--test", default=str(WORK / "perov_5_asis_test.npz"))
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--n-random", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.manual_seed(0)
    train = CrystalSet.load(args.train).subset(np.arange(args.n_train))
    test = CrystalSet.load(args.test).subset(np.arange(args.n_test))
    result: dict = {"label": "CPU diagnostic (tiny VAE, minutes of CPU), not the paper-target measurement",
                    "train": f"{Path(args.train).name}[:{args.n_train}]",
                    "test": f"{Path(args.test).name}[:{args.n_test}]",
                    "settings": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                 "width": args.width, "alpha": 0.0, "beta": 3e-4, "rotate": True,
                                 "note": "alpha 0: no DFC (the segmenter is a 1-step stand-in)"},
                    "channel_statistics": channel_statistics(train.subset(np.arange(min(256, len(train))))),
                    "rotation_average": rotation_average(), "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npz"
        train.save(data)
        seg = train_voxel(data, Path(tmp) / "seg", config=VoxelTrainConfig.from_dict(
            {"kind": "segmenter", "width": 0.125, "optim": {"max_steps": 1, "batch_size": 2, "workers": 1}}),
            accelerator="cpu", progress=False)
        for name in args.variants.split(","):
            cfg = VoxelTrainConfig.from_dict({
                "kind": "vae", "width": args.width, "condition": "heat_ref", "alpha": 0.0,
                "segmenter": str(seg), **VARIANTS[name],
                "optim": {"max_steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                          "workers": 1, "checkpoint_every": args.steps, "log_every": 10, "seed": 0}})
            t0 = time.perf_counter()
            model_dir = train_voxel(data, Path(tmp) / name, config=cfg, accelerator="cpu", progress=False)
            seconds = time.perf_counter() - t0
            summary = json.loads((Path(tmp) / name / "train_summary.json").read_text())
            model = VoxelModel.from_pretrained(model_dir)
            row = {**VARIANTS[name], "train_seconds": round(seconds, 1),
                   "channel_weights_fitted": [round(v, 3) for v in model.spec.channel_weights],
                   "channel_scale_fitted": [round(v, 3) for v in model.spec.channel_scale],
                   "final_losses": summary.get("final_losses"), **measure(model, test, args.n_random)}
            print(name, json.dumps(row))
            result["variants"][name] = row
    result |= stamp()
    write_text_atomic(Path(args.out), json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
