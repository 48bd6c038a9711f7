"""crysgen's CrysTens decoder: no hand-set K, periodic, robust atom count, noise-aware.

The paper fixed the K-means k by hand (its stated limitation) and read the atom count from a
single alpha column. This decoder instead:

1. **Atom count** by model selection: each site row's 56 copies of the per-crystal attributes
   (a, b, c, alpha, beta, gamma, sg; 7 x 4 layers x row/column strip) either equal a shared
   consensus (present) or are 0 (absent). With rows 0..A-1 present, the least-squares cost is
   ``sum ||h||² - ||sum_{s<A} h_s||² / A``, so A maximises ``||cumsum(h)_A||² / A``.
2. **Noise level** sigma (in scaled units) from the spread of the 8 header copies.
3. **Coordinates** as the least-squares solution of "own coordinates (8 copies) + all pairwise
   differences (layers 1-3)", weighted by their scaled ranges. For a complete graph it has the
   closed form ``p_j = ((w_o + w_d) o_j + w_d sum_{i != j} e_ij) / (w_o + w_d A)`` with
   ``e_ij = o_i - d_ij``; each estimate is first unwrapped to the image nearest ``o_j``, so
   sites near a cell face are averaged periodically. The paper's blend is this formula with
   fixed weights.
4. **Elements**: with a layout that has element codes, each site's element is the allowed
   element (seen in training) nearest to its 2 code copies and 8 Z copies together
   (:func:`code_elements`): codes of different elements are >= sqrt(2) apart, so noise that moves
   Z by a whole atomic number leaves the element intact. Without codes, a maximum-a-posteriori
   choice of the crystal's element set (see :func:`snap_elements`): sites are pooled when the
   noise cannot tell them apart, with the training set's element frequencies and numbers of
   distinct elements as priors. Clean tensors give exact integers either way.
5. **Coordinate values**: pooled 1-D values grouped on the circle with a noise-derived gap
   (at least 1e-5, at most 0.01) and snapped to the group's circular mean.
6. Optional snapping to the symmetry spglib finds (``DecodeOptions.symprec``).
"""

from __future__ import annotations

import warnings

import numpy as np

from crysgen.crystal_set import wrap_unit
from crysgen.representations.crystens.decode import (
    DecodeFailure,
    DecodeOptions,
    DecodeResult,
    code_copies,
    copy_spread,
    finish_batch,
    global_consensus,
    header_copies,
    lattice_problem,
    start_batch,
    table1_variances,
    table2_agreement,
    unscale,
)
from crysgen.representations.crystens.layout import GLOBAL
from crysgen.representations.crystens.scaling import CrysTensScaling
from crysgen.representations.elements import element_code_table, nearest_rows

_MIN_SIGNAL = 1e-6


def detect_num_atoms(scaled_copies: np.ndarray) -> np.ndarray:
    """Number of present sites by least squares over the per-crystal attribute copies.

    Args:
        scaled_copies: scaled header copies (N, S, 11, 8).

    Returns:
        int (N,) in 0..S; 0 when no row carries a signal.
    """
    sites = scaled_copies.shape[1]
    h = scaled_copies[:, :, GLOBAL, :].reshape(len(scaled_copies), sites, -1)
    cum = np.cumsum(h, axis=1)
    score = (cum**2).sum(-1) / np.arange(1, sites + 1)[None, :]
    best = score.argmax(axis=1)
    signal = score[np.arange(len(h)), best] / h.shape[-1]
    return np.where(signal > _MIN_SIGNAL, best + 1, 0)


def noise_level(scaled_copies: np.ndarray, num_atoms: np.ndarray) -> np.ndarray:
    """Per-sample noise std in scaled units from the spread of the 8 copies of the first A rows."""
    return copy_spread(scaled_copies, np.arange(scaled_copies.shape[1])[None, :] < num_atoms[:, None])


def consensus_coords(
    own: np.ndarray, diff: np.ndarray, num_atoms: np.ndarray, w_own: np.ndarray, w_diff: np.ndarray
) -> np.ndarray:
    """Least-squares positions from own coordinates and pairwise differences (periodic).

    Args:
        own: (N, S, 3) raw own coordinates (8-copy means).
        diff: (N, S, S, 3) raw differences, row minus column.
        num_atoms: int (N,).
        w_own: (3,) weight of an own coordinate (inverse variance per scaled noise²).
        w_diff: (3,) weight of a pairwise difference.

    Returns:
        (N, S, 3) positions near ``own`` (not wrapped); rows >= A are 0.
    """
    sites = own.shape[1]
    present = np.arange(sites)[None, :] < num_atoms[:, None]
    pair = present[:, :, None] & present[:, None, :] & ~np.eye(sites, dtype=bool)[None]
    d = (diff - diff.transpose(0, 2, 1, 3)) / 2  # estimate of x_i - x_j
    est = own[:, :, None, :] - d  # site i's estimate of site j: (N, i, j, 3)
    delta = est - own[:, None, :, :]
    delta -= np.rint(delta)  # nearest periodic image of own_j
    total = (delta * pair[..., None]).sum(axis=1)  # (N, j, 3)
    a = num_atoms[:, None, None].astype(float)
    pos = own + w_diff * total / (w_own + w_diff * a)
    return pos * present[..., None]


def group_1d(values: np.ndarray, gap: float, period: float | None = None) -> np.ndarray:
    """Single-linkage groups of 1-D values: neighbours closer than ``gap`` share a label.

    Args:
        values: (M,) values.
        gap: largest distance between neighbours of one group.
        period: if set, values live on a circle of this length.

    Returns:
        int (M,) group labels.
    """
    order = np.argsort(values, kind="stable")
    v = values[order]
    new = np.concatenate([[True], np.diff(v) >= gap])
    labels_sorted = np.cumsum(new) - 1
    wraps = period is not None and len(v) > 1 and v[0] + period - v[-1] < gap
    if wraps and labels_sorted[-1] > 0:  # the last group continues the first across the period
        labels_sorted[labels_sorted == labels_sorted[-1]] = 0
    labels = np.empty_like(labels_sorted)
    labels[order] = labels_sorted
    return labels


def _best_element(values: np.ndarray, sigma: float, log_prior: np.ndarray) -> tuple[int, float]:
    """MAP element of sites sharing one element, and their Gaussian log-likelihood at it."""
    cand = np.arange(len(log_prior))
    loglik = -((values[:, None] - cand[None, :]) ** 2).sum(0) / (2 * sigma**2)
    best = int(np.argmax(log_prior + loglik))
    return best, float(loglik[best])


def snap_elements(
    z: np.ndarray, sigma_z: float, log_prior: np.ndarray, log_prior_k: np.ndarray | None = None
) -> np.ndarray:
    """Integer atomic numbers from per-site estimates: a MAP choice of the crystal's element set.

    Model: the crystal has K distinct elements (prior ``log_prior_k`` from the training set);
    each site takes one of them (uniformly); its estimate is Gaussian around it with std
    ``sigma_z``; each element's identity has the training-set prior ``log_prior``. Search:
    start from groups of sites whose estimates the noise cannot tell apart (1-D single linkage,
    gap min(0.5, 3 sigma)), give each group its MAP element, then greedily merge neighbouring
    groups while ``sum loglik + log p(K) - A log K`` increases. Without noise (sigma < 1e-3)
    this is plain rounding.

    Args:
        z: (A,) per-site means of the 8 copies.
        sigma_z: std of one site's estimate (atomic-number units).
        log_prior: log p(Z) for Z = 0..zmax.
        log_prior_k: log p(K) for K = 0..; uniform when None.

    Returns:
        int16 (A,) in 1..zmax.
    """
    zmax = len(log_prior) - 1
    if sigma_z < 1e-3:
        return np.clip(np.rint(z), 1, zmax).astype(np.int16)
    labels = group_1d(z, min(0.5, 3.0 * sigma_z))
    groups = sorted((np.nonzero(labels == g)[0] for g in np.unique(labels)),
                    key=lambda g: float(z[g].mean()))
    n_sites = len(z)

    def score(gs: list[np.ndarray]) -> tuple[float, list[int]]:
        picks = [_best_element(z[g], sigma_z, log_prior) for g in gs]
        k = len({e for e, _ in picks})
        prior_k = log_prior_k[min(k, len(log_prior_k) - 1)] if log_prior_k is not None else 0.0
        return sum(ll for _, ll in picks) + prior_k - n_sites * np.log(k), [e for e, _ in picks]

    current, elements = score(groups)
    while len(groups) > 1:
        trials = [[*groups[:i], np.concatenate([groups[i], groups[i + 1]]), *groups[i + 2 :]]
                  for i in range(len(groups) - 1)]
        scored = [score(t) for t in trials]
        best = int(np.argmax([sc for sc, _ in scored]))
        if scored[best][0] <= current:
            break
        groups, (current, elements) = trials[best], scored[best]
    out = np.empty(n_sites, dtype=np.int16)
    for g, e in zip(groups, elements, strict=True):
        out[g] = e
    return np.clip(out, 1, zmax)


def code_elements(codes: np.ndarray, z_scaled: np.ndarray, scaling: CrysTensScaling) -> np.ndarray:
    """Each site's element: the allowed element nearest to its code and Z copies together.

    Every copy has the same Gaussian noise in scaled units, so the log-likelihood of element e
    is ``-(2 |c - code(e)|² + 8 (z - z(e))²) / 2σ²`` with c and z the means of the 2 code copies
    and the 8 (scaled) Z copies: a nearest-row search in a space where both are weighted by
    the square root of their number of copies.

    Args:
        codes: (..., 39, 2) the code copies of each site (scaled units, code entries in {0, 1}).
        z_scaled: (...,) mean of the 8 scaled Z copies of each site.
        scaling: the scaling (Z range, allowed elements: those seen when fitting).

    Returns:
        int16 (...,) atomic numbers among ``scaling.allowed_elements()``.
    """
    allowed = scaling.allowed_elements()
    table = np.concatenate([np.sqrt(2.0) * element_code_table()[allowed],
                            np.sqrt(8.0) * scaling.scale(allowed.astype(float), "Z")[:, None]], axis=1)
    points = np.concatenate([np.sqrt(2.0) * codes.mean(-1),
                             np.sqrt(8.0) * np.asarray(z_scaled)[..., None]], axis=-1)
    return nearest_rows(points, table, allowed).astype(np.int16)


def snap_coords(frac: np.ndarray, sigma_p: float) -> np.ndarray:
    """Snap pooled fractional coordinates (A, 3) to shared values (circular groups)."""
    values = wrap_unit(frac).ravel()
    gap = float(np.clip(3.0 * sigma_p, 1e-5, 0.01))
    labels = group_1d(values, gap, period=1.0)
    ang = 2 * np.pi * values
    c = np.bincount(labels, weights=np.cos(ang))
    s = np.bincount(labels, weights=np.sin(ang))
    centres = np.mod(np.arctan2(s, c) / (2 * np.pi), 1.0)
    # keep a group's values unchanged if snapping would move one by more than the gap
    moved = np.abs((values - centres[labels] + 0.5) % 1.0 - 0.5)
    out = np.where(moved <= gap, centres[labels], values)
    return wrap_unit(out.reshape(frac.shape))


def dedupe(z: np.ndarray, frac: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Indices of sites to keep after removing periodic exact repeats of (Z, position)."""
    keep: list[int] = []
    for j in range(len(z)):
        dup = False
        for i in keep:
            if z[i] == z[j]:
                d = frac[i] - frac[j]
                if np.all(np.abs(d - np.rint(d)) < tol):
                    dup = True
                    break
        if not dup:
            keep.append(j)
    return np.array(keep, dtype=int)


def symmetrize(
    z: np.ndarray, frac: np.ndarray, lattice: np.ndarray, symprec: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """Snap a crystal to spglib's refined cell; None if that changes the number of sites."""
    from pymatgen.core import Lattice, Structure

    from crysgen.data.guards import spacegroup_analyzer

    st = Structure(Lattice.from_parameters(*lattice), z.tolist(), frac)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = spacegroup_analyzer(st, symprec=symprec)  # checks the cell before spglib
            ref = sga.get_refined_structure().get_sorted_structure()
            sg = int(sga.get_space_group_number())
    except Exception:  # spglib gives up on some noisy cells: keep the unsymmetrised crystal
        return None
    if len(ref) != len(st):
        return None
    zs = np.array([site.specie.Z for site in ref], dtype=np.int16)
    return zs, wrap_unit(ref.frac_coords), np.array([*ref.lattice.abc, *ref.lattice.angles]), sg


def decode_batch(
    tensors: np.ndarray, scaling: CrysTensScaling, options: DecodeOptions, ids: np.ndarray,
    given: np.ndarray | None = None,
) -> DecodeResult:
    """Auto decode of a (N, 4, size, size) batch; see the module docstring.

    ``given`` (int (N, S), checked): each tensor's composition; A and the elements are then
    read from it, and every site is kept.
    """
    layout = scaling.layout
    safe, reasons, diag = start_batch(tensors, options, layout)
    n = len(safe)
    ok = np.array([r is None for r in reasons])
    scaled_copies = header_copies(safe, layout)
    counted = detect_num_atoms(scaled_copies) if given is None else (given > 0).sum(1)
    num_atoms = np.where(ok, counted, 0)
    sigma = noise_level(scaled_copies, num_atoms)
    present = np.arange(layout.sites)[None, :] < num_atoms[:, None]
    raw = unscale(safe, scaling, present)
    copies = header_copies(raw, layout)
    coded = None
    if layout.element_code and options.elements == "map" and given is None:
        coded = code_elements(code_copies(safe, layout), scaled_copies[..., 0, :].mean(-1), scaling)
    diag.update(table1_variances(copies, num_atoms))
    header = copies.mean(-1)  # (N, S, 11)
    glob = global_consensus(copies, num_atoms)  # (N, 7)
    r_x = scaling.span(["x", "y", "z"])
    r_d = scaling.span(["dir"])[0]
    w_own, w_diff = 8.0 / r_x**2, 2.0 / r_d**2
    block = raw[:, layout.site_offset:, layout.site_offset:, :]
    pos = consensus_coords(header[..., 1:4], block[..., 1:], num_atoms, w_own, w_diff)
    r_z = scaling.span(["Z"])[0]
    log_prior = scaling.element_log_prior()
    log_prior_k = scaling.num_elements_log_prior() if scaling.num_elements_counts else None
    rows, failures = [], []
    for i in range(n):
        a = int(num_atoms[i])
        if reasons[i] is None and a == 0:
            reasons[i] = "no atoms detected (no site row carries a signal)"
        problem = reasons[i] or lattice_problem(glob[i, :6])
        if problem:
            failures.append(DecodeFailure(i, problem))
            continue
        own, final = header[i, :a, 1:4], pos[i, :a]
        layer0 = block[i, :a, :a, 0]
        diag["coord_agreement"][i], diag["pairwise_error"][i] = table2_agreement(
            own, final, (layer0 + layer0.T) / 2, a
        )
        if given is not None:
            z = given[i, :a].astype(np.int16)
        elif coded is not None:
            z = coded[i, :a]
        elif options.elements == "round":
            z = np.clip(np.rint(header[i, :a, 0]), 1, len(log_prior) - 1).astype(np.int16)
        else:
            z = snap_elements(header[i, :a, 0], sigma[i] * r_z / np.sqrt(8), log_prior, log_prior_k)
        sigma_p = float(sigma[i] / np.sqrt((w_own + w_diff * a).min()))
        frac = snap_coords(final, sigma_p)
        if given is None:  # a given composition keeps its sites (coincident ones fail later)
            keep = dedupe(z, frac)
            z, frac = z[keep], frac[keep]
        lattice = glob[i, :6]
        sg = int(np.clip(np.rint(glob[i, 6]), 1, 230))
        if options.symprec is not None:
            snapped = symmetrize(z, frac, lattice, options.symprec)
            if snapped is not None:
                z, frac, lattice, sg = snapped
        rows.append((i, z, frac, lattice, sg))
        diag["num_atoms"][i] = a
        diag["space_group_float"][i] = glob[i, 6]
    return finish_batch(rows, failures, diag, ids, layout.sites)
