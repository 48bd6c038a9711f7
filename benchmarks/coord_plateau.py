"""How long the atom transformer's coordinate loss stays on its plateau -> results/coord_plateau_*.json.

The coordinate part of the atom EDM loss (``objectives.atom_edm``) has a floor that a network
reaches without learning anything about the coordinates: predicting no displacement (F = 0)
scores E[(wrap(σ n) / c_out(σ))²] over the training noise levels, which depends only on the EDM
settings (1.23 for ln σ ~ N(-1.2, 1.2²), σ_data 0.29; computed here by Monte Carlo). The GPU
runs' records show every from-scratch run sitting on it for thousands of steps before the loss
falls (``benchmarks/results/runs/*/metrics.csv``). This trains small networks from scratch on the
CPU, one per variant of the network (and seed), on the same data and steps, and reports for each
the validation coordinate loss (EMA weights) at every checkpoint and the first step at which it
is ``--margin`` (2 %) below that floor. It also reads the committed GPU runs' records and applies
the same rule to them.

Usage: python benchmarks/coord_plateau.py --train perov_train.npz --val perov_val.npz
           [--dataset perov_5] [--steps 6000] [--seeds 0,1] [--workers 2] [--suffix _seed1]
       python benchmarks/coord_plateau.py --gpu-runs-only   # the GPU records alone ->
           results/coord_plateau_gpu_runs.json (no CPU training)
The CrystalSets come from ``crysgen data prepare ../shared/data/perov_5/{train_poscar,val}.csv.gz
--cell as-is --max-sites 20``.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import yaml

from provenance import ROOT, require_clean, write_result

NET = {"d_model": 64, "n_layers": 4, "n_heads": 4, "mlp_ratio": 4.0, "n_freqs": 8, "edge_freqs": 6,
       "edge_rbf": 16, "edge_hidden": 32}
VARIANTS: dict[str, dict[str, Any]] = {  # changes to NET
    "attention_only": {},
    "displacement_head": {"displacement_head": True, "head_width": 32},
    "pair_messages": {"pair_messages": True, "message_width": 16},
    "both": {"displacement_head": True, "head_width": 32, "pair_messages": True, "message_width": 16},
}
EDM = {"p_mean": -1.2, "p_std": 1.2, "sigma_data_coords": 0.29, "sigma_data_lattice": 1.0,
       "weights": [1.0, 2.0, 1.0], "csp_fraction": 0.3}
GPU_RUNS = ("atom_diffusion_mp20", "atom_diffusion_perov5", "atom_diffusion_carbon24",
            "atom_diffusion_mp20_scratch", "atom_diffusion_carbon24_messages")


def zero_output_loss(p_mean: float, p_std: float, sigma_data: float, n: int = 2_000_000) -> float:
    """E[(wrap_centered(σ n) / c_out(σ))²]: the coordinate loss of a network that outputs zero.

    Args:
        p_mean, p_std: ln σ ~ N(p_mean, p_std²), the training noise levels.
        sigma_data: σ_data of the coordinates (c_out(σ) = σ σ_d / sqrt(σ² + σ_d²)).
        n: Monte Carlo samples (seeded).
    """
    g = torch.Generator().manual_seed(0)
    sigma = (torch.randn(n, generator=g, dtype=torch.float64) * p_std + p_mean).exp()
    d = sigma * torch.randn(n, generator=g, dtype=torch.float64)
    d = d - torch.round(d)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    return float(((d / c_out) ** 2).mean())


def val_curve(metrics: Path) -> list[tuple[int, float]]:
    """(step, validation coordinate loss) rows of a run's metrics.csv."""
    with metrics.open() as f:
        return [(int(r["step"]), float(r["val_loss_coords"])) for r in csv.DictReader(f)
                if r.get("val_loss_coords")]


def learning_step(curve: list[tuple[int, float]], floor: float, margin: float) -> int | None:
    """First step whose loss is below ``floor · (1 - margin)`` (None: never)."""
    return next((step for step, loss in curve if loss < floor * (1 - margin)), None)


def train_variant(job: tuple[str, int, str, str, int, int, str]) -> dict[str, Any]:
    """Train one variant from scratch on the CPU (one thread); its validation curve."""
    from crysgen.models.atom_transformer import AtomTransformer
    from crysgen.representations.elements import CODE_DIM
    from crysgen.training.atoms import train_atom_diffusion
    from crysgen.training.config import AtomTrainConfig

    name, seed, train, val, steps, every, work = job
    torch.set_num_threads(1)
    config = AtomTrainConfig.from_dict({
        "net": NET | VARIANTS[name], "edm": EDM,
        "optim": {"batch_size": 128, "lr": 4e-4, "warmup_steps": 200, "max_steps": steps, "ema_decay": 0.999,
                  "checkpoint_every": every, "log_every": 50, "seed": seed, "grad_clip": 1.0},
        "data": {"max_atoms": 20, "niggli": True, "translate": True}})
    run = Path(work) / f"{name}_seed{seed}"
    train_atom_diffusion(train, run, config=config, val=val, accelerator="cpu", progress=False)
    curve = val_curve(next(run.glob("logs/version_*/metrics.csv")))
    net = AtomTransformer(**(config.net.to_dict() | {"type_dim": CODE_DIM}))
    params = sum(p.numel() for p in net.parameters())
    return {"variant": name, "seed": seed, "change": VARIANTS[name], "parameters": params, "curve": curve}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", help="training CrystalSet .npz (required unless --gpu-runs-only)")
    p.add_argument("--val", help="validation CrystalSet .npz (required unless --gpu-runs-only)")
    p.add_argument("--gpu-runs-only", action="store_true",
                   help="read the committed GPU runs' records only (no CPU training)")
    p.add_argument("--dataset", default="perov_5", help="name in the result file")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--val-every", type=int, default=500, help="checkpoint (and validation) interval")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated, from: " + ", ".join(VARIANTS))
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds, each variant trained once per seed")
    p.add_argument("--margin", type=float, default=0.02, help="how far below the floor counts as learning")
    p.add_argument("--workers", type=int, default=2, help="runs trained at once (one thread each)")
    p.add_argument("--suffix", default="", help="appended to the result files' names")
    args = p.parse_args()
    require_clean()
    floor = zero_output_loss(EDM["p_mean"], EDM["p_std"], EDM["sigma_data_coords"])
    print(f"zero-output coordinate loss (the plateau): {floor:.4f}", flush=True)
    if args.gpu_runs_only:
        result = {"zero_output_loss": floor, "margin": args.margin, "edm": EDM, "rows": [],
                  "gpu_runs": gpu_runs(floor, args.margin), "note": GPU_NOTE}
        write_result("coord_plateau_gpu_runs", result)
        plot(result, ROOT / "benchmarks" / "results" / "coord_plateau_gpu_runs.png")
        return
    if not (args.train and args.val):
        raise SystemExit("--train and --val are required (or pass --gpu-runs-only)")
    names = args.variants.split(",")
    if unknown := sorted(set(names) - set(VARIANTS)):
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    with tempfile.TemporaryDirectory() as work:
        jobs = [(n, int(s), args.train, args.val, args.steps, args.val_every, work)
                for s in args.seeds.split(",") for n in names]
        with ProcessPoolExecutor(args.workers) as pool:
            rows = list(pool.map(train_variant, jobs))
    for row in rows:
        row["learning_step"] = learning_step(row["curve"], floor, args.margin)
        row["final_val_loss_coords"] = row["curve"][-1][1]
        print(row["variant"], row["seed"], row["learning_step"], round(row["final_val_loss_coords"], 4),
              flush=True)
    result = {"dataset": args.dataset, "train": Path(args.train).name, "val": Path(args.val).name,
              "steps": args.steps, "net": NET, "edm": EDM, "batch_size": 128, "threads_per_run": 1,
              "zero_output_loss": floor, "margin": args.margin, "rows": rows,
              "gpu_runs": gpu_runs(floor, args.margin),
              "note": "learning_step: first validation step (EMA weights) whose coordinate loss is "
                      "margin below the loss of a network that outputs zero displacement; None: "
                      "never within the run. " + GPU_NOTE}
    write_result(f"coord_plateau_{args.dataset}{args.suffix}", result)
    plot(result, ROOT / "benchmarks" / "results" / f"coord_plateau_{args.dataset}{args.suffix}.png")


GPU_NOTE = ("gpu_runs: the committed from-scratch GPU runs read with the same rule (learning_step: "
            "first validation step below (1 - margin) x zero_output_loss; None: never); "
            "pair_messages / displacement_head: the run's network (config.yaml).")


def gpu_runs(floor: float, margin: float) -> list[dict[str, Any]]:
    """The committed from-scratch GPU runs' validation curves, with the plateau rule applied."""
    out = []
    for run in GPU_RUNS:
        folder = ROOT / "benchmarks" / "results" / "runs" / run
        if not (folder / "metrics.csv").is_file():
            continue
        curve = val_curve(folder / "metrics.csv")
        net = (yaml.safe_load((folder / "config.yaml").read_text()) or {}).get("net", {})
        out.append({"run": run, "pair_messages": bool(net.get("pair_messages", False)),
                    "displacement_head": bool(net.get("displacement_head", False)),
                    "learning_step": learning_step(curve, floor, margin),
                    "last_step": curve[-1][0], "curve": curve})
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Validation coordinate loss against step, one line per run, the zero-output floor dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpu = bool(result["rows"])
    fig, axes = plt.subplots(1, 2 if cpu else 1, figsize=(11 if cpu else 6, 4), squeeze=False)
    axes = list(axes[0]) if cpu else [None, axes[0][0]]
    for row in result["rows"]:
        steps, losses = zip(*row["curve"], strict=True)
        axes[0].plot(steps, losses, marker=".", label=f"{row['variant']} (seed {row['seed']})")
    for run in result["gpu_runs"]:
        steps, losses = zip(*run["curve"], strict=True)
        net = "pair messages" if run.get("pair_messages") else "attention only"
        axes[1].plot(steps, losses, marker=".", ls="-" if run.get("pair_messages") else ":",
                     label=f"{run['run']} ({net})")
    titles = (f"CPU, {result.get('dataset')}, small network from scratch",
              "committed GPU runs (from scratch)")
    for ax, title in zip(axes, titles, strict=True):
        if ax is None:
            continue
        ax.axhline(result["zero_output_loss"], ls="--", c="k", lw=1, label="zero displacement")
        ax.set(title=title, xlabel="step", ylabel="validation coordinate loss (EMA)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
