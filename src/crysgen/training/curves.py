"""Training curves of a run directory: every logged loss against the iteration, as one PNG.

Reads all ``logs/version_*/metrics.csv`` of a run (a resumed run logs to the next version), so
the curves span every invocation (where one logged past the checkpoint that the next resumed
from, the next one's rows replace those). Losses go in the first panel (log scale when all positive),
the GAN discriminator's mean outputs (``*_prob``) in the next; other logged figures (the WGAN
critic's Wasserstein estimate) each get a panel of their own.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SKIP = {"step", "epoch", "iteration"}


def read_metrics(run: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every logged column of a run: name -> (iterations, values), sorted by iteration.

    The x axis is the logged ``iteration`` where a module logs one (the adversarial models,
    whose optimiser-step count is not the iteration), else Lightning's ``step``.
    """
    rows: list[tuple[float, dict[str, str]]] = []
    for path in sorted(Path(run).glob("logs/version_*/metrics.csv"),
                       key=lambda p: int(p.parent.name.split("_")[-1])):
        with path.open(newline="") as fh:
            logged = [(float(x), row) for row in csv.DictReader(fh)
                      if (x := row.get("iteration") or row.get("step"))]
        if logged:
            # a resume starts from the last checkpoint: what an earlier invocation logged past
            # it was lost with that invocation and is logged again here
            start = min(x for x, _ in logged)
            rows = [(x, row) for x, row in rows if x < start] + logged
    series: dict[str, list[tuple[float, float]]] = {}
    for x, row in rows:
        for name, value in row.items():
            if name not in SKIP and value not in ("", None):
                series.setdefault(name, []).append((x, float(value)))
    out = {}
    for name, points in series.items():
        arr = np.array(sorted(points))
        out[name] = (arr[:, 0], arr[:, 1])
    return out


def plot_training_curves(run: str | Path, path: str | Path | None = None) -> Path | None:
    """Write the run's curves (default ``RUN/curves.png``); None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(run)
    if not series:
        return None
    losses = sorted(n for n in series if "loss" in n or n == "gradient_penalty")
    probs = sorted(n for n in series if n.endswith("_prob"))  # discriminator outputs
    others = sorted(n for n in series if n not in losses and n not in probs)
    panels = [p for p in (losses, probs) if p] + [[n] for n in others]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, names in zip(axes[0], panels, strict=True):
        for name in names:
            x, y = series[name]
            ax.plot(x, y, label=name, lw=1, marker="." if len(x) < 30 else None)
        if names is losses and all((series[n][1] > 0).all() for n in names):
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(names[0] if len(names) == 1 else "losses" if names is losses else "mean D output")
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(Path(run).name)
    fig.tight_layout()
    path = Path(path) if path is not None else Path(run) / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
