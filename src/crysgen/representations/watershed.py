"""Segmented voxel maps -> crystals: recursive watershed, species vote, periodic folding.

Court et al.'s decoding (seed_code.md §6.5), from a UNet's occupancy probabilities and species
labels on the grid of :mod:`crysgen.representations.voxel`:

1. occupancy ≥ ``threshold`` (0.8) gives a binary map; regions are split per species label
   (ours: touching atoms of different species separate without a watershed) and each species'
   mask is segmented by :func:`segment` — connected components (face connectivity), components
   of ≤ 3 voxels dropped, a component with convexity (voxels / voxels of its 3-D convex hull) ≥
   0.8 accepted as one atom, otherwise split by a marker watershed (markers = erosion by a ball
   of radius 1, unknown = dilation − erosion) and recursed into while ``voxels // 8`` exceeds the
   number of parts (at most 5 levels);
2. each region's centroid (mean voxel index) → Å: ``idx·dv − eps·L + dv/2`` → fractional;
3. ours: the box holds 1.5 cells, so an atom appears up to 8 times (its periodic images; the
   authors' grids drew none). Centroids are wrapped into [0, 1); regions that do not touch the
   box faces, largest first, place the sites (one within ``merge_tol`` Å of a placed site,
   under periodic boundaries, joins it); regions cut by the faces then join a site within
   ``cut_tol`` Å or, where an atom has no complete image, place one. A site takes the majority
   species of all its regions' voxels and sits at the voxel-weighted periodic mean of its
   complete regions' centroids (``average_images``; each image is segmented on its own, so the
   mean averages their errors).

The lattice is orthogonal with the lengths read from the coordinate channels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crysgen.crystal_set import CrystalSet, wrap_unit
from crysgen.representations.voxel import VoxelConfig, voxel_size


@dataclass(frozen=True)
class WatershedOptions:
    """Decoding settings (defaults: the authors' code, seed_code.md §6.5).

    Attributes:
        threshold: occupancy probability for a voxel to belong to an atom.
        min_voxels: components of at most this many voxels are dropped.
        min_convexity: a component at least this convex is one atom.
        wmin: a split is recursed into while voxels // wmin > number of parts.
        max_depth: recursion limit.
        merge_tol: Å; regions closer than this (periodic) are one site.
        cut_tol: Å; a region cut by the box faces joins a site this close (its centroid is
            pulled towards the face).
        per_species: segment each species' mask separately (ours; False: the paper's binary map).
        average_images: a site sits at the (periodic) mean of the centroids of its complete
            regions (its periodic images inside the box), weighted by their voxels; False: at the
            centroid of the largest (crysgen before this option).
    """

    threshold: float = 0.8
    min_voxels: int = 3
    min_convexity: float = 0.8
    wmin: int = 8
    max_depth: int = 5
    merge_tol: float = 0.7
    cut_tol: float = 1.5
    per_species: bool = True
    average_images: bool = True


def _convexity(mask: np.ndarray) -> float:
    from skimage.morphology import convex_hull_image

    with warnings.catch_warnings():  # qhull refuses flat components with a long warning
        warnings.simplefilter("ignore")
        try:
            hull = convex_hull_image(mask)
        except Exception:
            return 1.0
    return 1.0 if not hull.any() else float(mask.sum()) / float(hull.sum())


def segment(binary: np.ndarray, options: WatershedOptions = WatershedOptions(), depth: int = 0,
            ) -> list[np.ndarray]:
    """Split a binary 3-D map into atoms: a list of boolean masks, one per region (same shape).

    Args:
        binary: bool (X, Y, Z).
        options: see :class:`WatershedOptions`.
        depth: recursion depth (callers leave it at 0).
    """
    from scipy import ndimage
    from skimage.morphology import ball
    from skimage.segmentation import watershed

    labels, _ = ndimage.label(binary)
    regions: list[np.ndarray] = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        comp = labels[box] == k
        size = int(comp.sum())
        if size <= options.min_voxels:
            continue
        parts: list[np.ndarray] = []
        if _convexity(comp) < options.min_convexity and depth < options.max_depth:
            padded = np.pad(comp, 1)
            fg = ndimage.binary_erosion(padded, ball(1))
            bg = ndimage.binary_dilation(padded, ball(1))
            markers, n_fg = ndimage.label(fg)
            if n_fg > 1:  # one marker only: nothing to split
                markers = markers + 1
                markers[bg & ~fg] = 0
                ws = watershed(padded, markers, mask=bg)[1:-1, 1:-1, 1:-1]
                parts = [(ws == j) & comp for j in range(2, n_fg + 2)]
                parts = [p for p in parts if p.any()]
        if len(parts) > 1:
            if size // options.wmin > len(parts) and depth + 1 < options.max_depth:
                sub = [r for p in parts for r in segment(p, options, depth + 1)]
            else:
                sub = [p for p in parts if p.sum() > options.min_voxels]
        else:
            sub = [comp]
        for p in sub:
            full = np.zeros(binary.shape, bool)
            full[box] = p
            regions.append(full)
    return regions


@dataclass
class Sites:
    """Sites decoded from one grid.

    Attributes:
        atomic_numbers: int (n,).
        frac_coords: float (n, 3) in [0, 1).
        voxels: int (n,), voxels of the region each site kept.
        regions: number of regions before periodic merging.
    """

    atomic_numbers: np.ndarray
    frac_coords: np.ndarray
    voxels: np.ndarray
    regions: int = 0


def _periodic_distance(frac: np.ndarray, point: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Å, minimum-image distances (n,) from fractional ``frac`` (n, 3) to ``point`` (3,)."""
    d = frac - point
    d -= np.round(d)
    return np.sqrt(((d * lengths) ** 2).sum(-1))


def sites_from_maps(occupancy: np.ndarray, species: np.ndarray, lengths: np.ndarray,
                    config: VoxelConfig = VoxelConfig(),
                    options: WatershedOptions = WatershedOptions()) -> Sites:
    """Sites of one crystal from its segmentation (module docstring).

    Args:
        occupancy: float (G, G, G) occupancy probability (or a bool map).
        species: int (G, G, G) predicted Z per voxel (0 = background).
        lengths: (3,) cell lengths along array axes 0, 1, 2, Å.
        config: the grid constants the maps were made with.
        options: see :class:`WatershedOptions`.
    """
    lengths = np.asarray(lengths, float)
    binary = np.asarray(occupancy) >= options.threshold
    species = np.asarray(species).astype(np.int64)
    if options.per_species:
        masks = [binary & (species == z) for z in np.unique(species[binary]) if z > 0]
    else:
        masks = [binary]
    regions = [r for m in masks for r in segment(m, options)]
    zs, centroids, counts, kept = [], [], [], []
    for r in regions:
        votes = species[r]
        votes = votes[votes > 0]
        if len(votes) == 0:
            continue
        vals, cnt = np.unique(votes, return_counts=True)
        zs.append((vals, cnt))
        centroids.append(np.argwhere(r).mean(0))
        counts.append(int(r.sum()))
        kept.append(r)
    if not centroids:
        return Sites(np.zeros(0, int), np.zeros((0, 3)), np.zeros(0, int), len(regions))
    dv = voxel_size(lengths, config)
    cart = np.asarray(centroids) * dv - config.eps * lengths + dv / 2
    frac = wrap_unit(cart / lengths)
    # complete regions first (largest first): they place the sites; regions cut by the box faces
    # (periodic images half outside) only join a site or, where no complete image exists, add one
    cut = np.array([bool(r[[0, -1]].any() or r[:, [0, -1]].any() or r[:, :, [0, -1]].any())
                    for r in kept])
    order = np.lexsort((-np.asarray(counts), cut))
    site_f: list[np.ndarray] = []
    site_n: list[int] = []
    tallies: list[dict[int, int]] = []
    shifts: list[list[tuple[np.ndarray, int]]] = []  # complete images joined to each site: (Δfrac, voxels)
    for m in order:
        tol = options.merge_tol if not cut[m] else max(options.merge_tol, options.cut_tol)
        near = (_periodic_distance(np.asarray(site_f), frac[m], lengths) if site_f
                else np.zeros(0))
        if len(near) and near.min() < tol:
            k = int(near.argmin())
            t = tallies[k]
            if not cut[m]:
                d = frac[m] - site_f[k]
                shifts[k].append((d - np.round(d), counts[m]))
        else:
            site_f.append(frac[m])
            site_n.append(counts[m])
            tallies.append({})
            shifts.append([(np.zeros(3), counts[m])] if not cut[m] else [])
            t = tallies[-1]
        for v, n in zip(*zs[m], strict=True):
            t[int(v)] = t.get(int(v), 0) + int(n)
    out_z = [max(t, key=t.__getitem__) for t in tallies]
    if options.average_images:
        for k, images in enumerate(shifts):
            if len(images) > 1:
                w = np.array([c for _, c in images], float)
                site_f[k] = wrap_unit(site_f[k] + w @ np.array([d for d, _ in images]) / w.sum())
    return Sites(np.asarray(out_z), np.asarray(site_f), np.asarray(site_n), len(regions))


@dataclass
class VoxelDecodeResult:
    """What :func:`decode` returns.

    Attributes:
        crystals: decoded crystals, failures left out.
        index: int (len(crystals),), input index of each.
        num_regions: int (N,), regions found before periodic merging.
        failures: (input index, reason).
    """

    crystals: CrystalSet
    index: np.ndarray
    num_regions: np.ndarray
    failures: list[tuple[int, str]] = field(default_factory=list)


def _decode_one(args: tuple) -> tuple[Any, str | None]:
    """(sites, None) or (sites or None, reason) for one segmentation."""
    occupancy, species, lengths, config, options, s_max = args
    if not np.all(np.isfinite(lengths)) or np.any(np.asarray(lengths) <= 0.5):
        return None, f"lattice read-back failed: lengths {np.round(lengths, 3).tolist()} Å"
    try:
        sites = sites_from_maps(occupancy, species, lengths, config, options)
    except Exception as exc:  # one bad grid gets a reason, the batch goes on
        return None, f"watershed failed: {type(exc).__name__}: {exc}"
    if len(sites.atomic_numbers) == 0:
        return sites, "no atom found (no occupied region with a species)"
    if len(sites.atomic_numbers) > s_max:
        return sites, f"{len(sites.atomic_numbers)} sites, more than {s_max}"
    return sites, None


def decode(occupancy: np.ndarray, species: np.ndarray, lengths: np.ndarray, *,
           config: VoxelConfig = VoxelConfig(), options: WatershedOptions = WatershedOptions(),
           max_sites: int | None = None, ids: list[str] | None = None, workers: int = 1) -> VoxelDecodeResult:
    """Crystals from a batch of segmentations.

    Args:
        occupancy: float (N, G, G, G) occupancy probabilities.
        species: int (N, G, G, G) predicted Z.
        lengths: (N, 3) cell lengths, Å (from :func:`~crysgen.representations.voxel.read_lattice`).
        config: the grid constants the maps were made with.
        options: see :class:`WatershedOptions`.
        max_sites: padded size of the result (default: config.max_sites).
        ids: one id per grid (default "0", "1", ...).
        workers: processes for the watershed (it is CPU work, ~45 ms per 32³ grid on one core).
    """
    n = len(occupancy)
    ids = ids or [str(i) for i in range(n)]
    s_max = max_sites or config.max_sites
    jobs = ((occupancy[i], species[i], lengths[i], config, options, s_max) for i in range(n))
    if workers > 1 and n > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, n)) as pool:
            done = list(pool.map(_decode_one, jobs, chunksize=max(1, n // (4 * workers))))
    else:
        done = [_decode_one(j) for j in jobs]
    rows, failures, regions = [], [], np.zeros(n, int)
    for i, (sites, reason) in enumerate(done):
        if sites is not None:
            regions[i] = sites.regions
        if reason is None:
            rows.append((i, sites))
        else:
            failures.append((i, reason))
    z = np.zeros((len(rows), s_max), np.int16)
    f = np.zeros((len(rows), s_max, 3))
    lat = np.zeros((len(rows), 6))
    for j, (i, sites) in enumerate(rows):
        k = len(sites.atomic_numbers)
        z[j, :k], f[j, :k] = sites.atomic_numbers, sites.frac_coords
        lat[j] = (*lengths[i], 90.0, 90.0, 90.0)
    index = np.asarray([i for i, _ in rows], int)
    crystals = CrystalSet(z, f, lat, np.zeros(len(rows)), (z > 0).sum(1), np.asarray(ids)[index]
                          if len(index) else np.zeros(0, str), metadata={"decoder": "voxel watershed"})
    return VoxelDecodeResult(crystals, index, regions, failures)
