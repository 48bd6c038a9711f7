"""The paper's CrysTens post-processing (seed_code.md §2, steps 1-12), with its bugs fixed.

Fixed: A = 52 is possible (the loop no longer stops at 51), the Table 1 variances are computed
on an un-scaled copy before any consensus and include z, K-means is seeded and uses
k = min(6, 3A) for coordinates (the code's default of 3A is a no-op). Kept as written: the
alpha-based atom count, 8-copy and 8A-copy averaging, the adjacency symmetrisation (with its
diagonal quirk), the directional-graph consensus with own weight 1/(12 + A), K-means with
k = min(3, A) on rounded atomic numbers, de-duplication of exact repeats, P1 output.
"""

from __future__ import annotations

import warnings

import numpy as np

from crysgen.crystal_set import wrap_unit
from crysgen.representations.crystens.decode import (
    DecodeFailure,
    DecodeOptions,
    DecodeResult,
    finish_batch,
    header_copies,
    lattice_problem,
    start_batch,
    table1_variances,
    table2_agreement,
    unscale,
)
from crysgen.representations.crystens.layout import ALPHA, SITE_OFFSET
from crysgen.representations.crystens.scaling import CrysTensScaling


def detect_num_atoms(raw: np.ndarray, threshold: float, offset: int = SITE_OFFSET) -> int:
    """Step 1: sites end at the first row whose alpha differs from site 0's by >= threshold.

    Args:
        raw: one un-scaled tensor (size, size, 4).
        threshold: relative change (0.2 in the paper).
        offset: row of site 0 (12 in the paper's layout).

    Returns:
        A in 0..S (0 when site 0's alpha is 0 or not finite).
    """
    alpha = raw[offset:, ALPHA, 0]
    ref = alpha[0]
    if not np.isfinite(ref) or ref == 0:
        return 0
    breaks = np.nonzero(np.abs(alpha[1:] - ref) / abs(ref) >= threshold)[0]
    return int(breaks[0]) + 1 if len(breaks) else len(alpha)


def symmetrize_block(block: np.ndarray) -> np.ndarray:
    """Step 4: make the (A, A, 4) adjacency block symmetric (layer 0) / antisymmetric (1-3).

    Layer 0: both entries become their mean. Layers 1-3, with u the upper and l the lower
    entry: u > 0 gives m = (u + |l|) / 2, u = m, l = -m; otherwise m = (|u| + l) / 2,
    u = -m, l = m. The diagonal turns positive values negative and negative ones to 0 (the
    code's quirk, kept).
    """
    out = block.copy()
    out[..., 0] = (block[..., 0] + block[..., 0].T) / 2
    u = np.triu(np.ones(block.shape[:2], bool), 1)
    for k in (1, 2, 3):
        up, lo = block[..., k], block[..., k].T
        m = np.where(up > 0, (up + np.abs(lo)) / 2, (np.abs(up) + lo) / 2)
        val = np.where(up > 0, m, -m)
        layer = np.where(u, val, 0.0)
        layer = layer - layer.T
        diag = np.diag(block[..., k])
        np.fill_diagonal(layer, np.where(diag > 0, -diag, 0.0))
        out[..., k] = layer
    return out


def _kmeans_snap(values: np.ndarray, k: int, seed: int) -> np.ndarray:
    """1-D K-means with k = min(k, distinct values); every value replaced by its centre."""
    from sklearn.cluster import KMeans

    k = min(k, len(np.unique(values)))
    if k < 1:
        return values
    km = KMeans(n_clusters=k, n_init=10, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = km.fit_predict(values.reshape(-1, 1))
    return km.cluster_centers_[labels, 0]


def decode_batch(
    tensors: np.ndarray, scaling: CrysTensScaling, options: DecodeOptions, ids: np.ndarray,
    given: np.ndarray | None = None,
) -> DecodeResult:
    """Faithful decode of a (N, 4, size, size) batch; see the module docstring.

    Any layout decodes; element codes, when there are any, are not read (the paper had none).
    ``given`` (int (N, S), checked): each tensor's composition; A and the elements are then
    read from it (steps 1 and 9 skipped), and every site is kept (no step 11).
    """
    layout = scaling.layout
    o = layout.site_offset
    safe, reasons, diag = start_batch(tensors, options, layout)
    n = len(safe)
    # step 0: a row is present (and un-scaled) if any of its entries is non-zero
    present = (safe[:, o:, :, :] != 0).any(axis=(2, 3))
    raw = unscale(safe, scaling, present)
    if given is None:
        num_atoms = np.array([detect_num_atoms(raw[i], options.alpha_threshold, o) for i in range(n)])
    else:  # the given rows are the present ones: un-scale exactly those
        present = given > 0
        raw = unscale(safe, scaling, present)
        num_atoms = present.sum(1)
    copies = header_copies(raw, layout)
    diag.update(table1_variances(copies, num_atoms))
    rows, failures = [], []
    zmax = scaling.max_z
    for i in range(n):
        a = int(num_atoms[i])
        if reasons[i] is None and a == 0:
            reasons[i] = "no atoms detected (alpha of site 0 is 0)"
        reason = reasons[i]
        if reason is not None:
            failures.append(DecodeFailure(i, reason))
            continue
        header = copies[i, :a].mean(-1)  # step 2: (A, 11) per-site means of 8 copies
        glob = header[:, 4:11].mean(0)  # step 3: mean of the 8A copies
        lattice, sg_float = glob[:6], glob[6]
        problem = lattice_problem(lattice)
        if problem:
            failures.append(DecodeFailure(i, problem))
            continue
        block = symmetrize_block(raw[i, o : o + a, o : o + a])
        own = header[:, 1:4]  # step 5
        # step 6: site i predicts site j at own_i - block[i, j]; every site gets A estimates
        est = (own[:, None, :] - block[:, :, 1:]).mean(axis=0)
        w = 1.0 / (SITE_OFFSET + a)  # step 7: the paper's constant 12 + A, whatever the layout
        final = w * own + (1 - w) * est
        diag["coord_agreement"][i], diag["pairwise_error"][i] = table2_agreement(
            own, final, block[..., 0], a
        )
        coords = _kmeans_snap(final.ravel(), min(options.coord_clusters, 3 * a),
                              options.seed).reshape(a, 3)  # step 10
        if given is None:
            z = np.clip(np.rint(header[:, 0]), 1, zmax)  # step 9
            z = np.clip(np.rint(_kmeans_snap(z, min(options.atom_clusters, a), options.seed)), 1, zmax)
            _, keep = np.unique(np.column_stack([z, coords]), axis=0, return_index=True)  # step 11
            keep = np.sort(keep)
        else:
            z, keep = given[i, :a], np.arange(a)
        sg = int(np.clip(np.rint(sg_float), 1, 230))
        rows.append((i, z[keep].astype(np.int16), wrap_unit(coords[keep]), lattice, sg))
        diag["num_atoms"][i] = a
        diag["space_group_float"][i] = sg_float
    return finish_batch(rows, failures, diag, ids, layout.sites)
