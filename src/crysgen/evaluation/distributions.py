"""Distribution distances between generated and reference crystals: the seed's K-S and CDVAE's Wasserstein."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crysgen.crystal_set import CrystalSet

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

KS_NAMES = ("a", "b", "c", "alpha", "beta", "gamma", "space_group", "atomic_number")
"""What the CrysTens paper compares with K-S (its Figs 4-6)."""


def distributions(cs: CrystalSet) -> dict[str, np.ndarray]:
    """Per crystal: lattice lengths (Å), angles (degrees), space group; per site: atomic number."""
    out = {name: cs.lattice[:, k] for k, name in enumerate(KS_NAMES[:6])}
    out["space_group"] = cs.space_group.astype(float)
    out["atomic_number"] = cs.atomic_numbers[cs.site_mask].astype(float)
    return out


def ks_statistics(gen: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """``scipy.stats.ks_2samp`` D and p for every name the two share (NaN where one side is empty)."""
    from scipy.stats import ks_2samp

    out = {}
    for name in gen.keys() & ref.keys():
        g, r = np.asarray(gen[name], float), np.asarray(ref[name], float)
        g, r = g[np.isfinite(g)], r[np.isfinite(r)]
        if len(g) == 0 or len(r) == 0:
            out[name] = {"statistic": float("nan"), "pvalue": float("nan")}
            continue
        res = ks_2samp(g, r)
        out[name] = {"statistic": float(res.statistic), "pvalue": float(res.pvalue)}
    return out


def wasserstein(gen: ArrayLike, ref: ArrayLike) -> float:
    """Wasserstein-1 distance between two samples (NaN when either is empty)."""
    from scipy.stats import wasserstein_distance

    g, r = np.asarray(gen, float), np.asarray(ref, float)
    g, r = g[np.isfinite(g)], r[np.isfinite(r)]
    return float(wasserstein_distance(g, r)) if len(g) and len(r) else float("nan")


def wasserstein_spread(gen: ArrayLike, ref: ArrayLike, n: int, draws: int,
                       rng: np.random.Generator) -> dict[str, float | int]:
    """How much a Wasserstein distance measured on ``n`` of the generated values moves with the draw.

    CDVAE's protocol scores W on one random draw of ``n`` (1,000) valid samples out of many
    (10,000); this gives the spread that single figure comes from, so that two models (or a model
    and a published row) are compared with the draw's noise in view.

    Args:
        gen: (G,) the values of every eligible generated crystal (non-finite ones are dropped).
        ref: (R,) the reference values.
        n: values per draw (without replacement); with ``n >= G`` every draw is the whole sample.
        draws: how many draws.
        rng: the generator the draws come from (a separate one keeps the protocol draw unchanged).

    Returns:
        ``mean``, ``sd`` (population), ``min``, ``max`` of the ``draws`` distances, ``draws``,
        ``n`` (values per draw) and ``all`` (the distance on every finite generated value).
    """
    g = np.asarray(gen, float)
    g = g[np.isfinite(g)]
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    k = min(int(n), len(g))
    values = (np.array([wasserstein(g[rng.choice(len(g), k, replace=False)], ref) for _ in range(draws)])
              if k else np.full(draws, np.nan))
    return {"mean": float(values.mean()), "sd": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "draws": int(draws), "n": int(k), "all": wasserstein(g, ref)}


def overlay_plot(gen: dict[str, np.ndarray], ref: dict[str, np.ndarray], ks: dict, path) -> None:
    """Histograms of generated vs reference for each K-S quantity (the paper's Figs 4-6), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in KS_NAMES if n in gen and n in ref and len(gen[n]) and len(ref[n])]
    fig, axes = plt.subplots(3, 3, figsize=(12, 10))
    for ax, name in zip(axes.ravel(), names, strict=False):
        lo = min(np.percentile(gen[name], 0.5), np.percentile(ref[name], 0.5))
        hi = max(np.percentile(gen[name], 99.5), np.percentile(ref[name], 99.5))
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
        ax.hist(ref[name], bins=bins, density=True, alpha=0.5, label="reference")
        ax.hist(gen[name], bins=bins, density=True, alpha=0.5, label="generated")
        ax.set_title(f"{name}: K-S D = {ks[name]['statistic']:.3f}")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes.ravel()[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
