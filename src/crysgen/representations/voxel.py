"""Electron-density voxel grids of Court et al. (2020): encode, rotate, read the lattice back.

A crystal with an orthogonal cell (a, b, c, all angles 90°) becomes, on a ``G``³ grid (G = 32)
whose box spans ``[-eps·L, (1 + eps)·L)`` along each axis (eps = 0.25, so 1.5× the cell):

* **density** (G, G, G): ``(2π)^(-3/2) Σ_s Z_s σ_s^-3 exp(-|r - r_s|² / 2σ_s²)`` over the sites
  *and their periodic images* that fall near the box (the authors' code drew no images, so atoms
  near a face had half a neighbour; seed_code.md §6.8), with σ_s = ``sigma_frac`` × the element's
  ionic radius (mean of pymatgen's ``ionic_radii`` over oxidation states, 1.2 Å where it has
  none). Units: electrons/Å³.
* **coordinates** (3, G, G, G): channel k holds ``i·1.5·L_k/G`` along array axis k (the lower
  corner of voxel i measured from the box start, Å) — the coordinate-convolution input from which
  a, b, c are read back (:func:`read_lattice`).
* **species** (G, G, G) uint8: Z of the nearest site whose centre lies within
  ``label_frac``·σ_s of the voxel centre, 0 elsewhere (segmentation target); occupancy = species > 0.

The network input is ``concat[density, coordinates]`` → (4, G, G, G). Axis 0 of the grids is x
(the a axis), 1 is y, 2 is z. Everything here is pure numpy; densities are computed as products
of 1-D Gaussians (the cell is orthogonal), so a 5-site crystal takes well under a millisecond.
Cells that are not orthogonal are not voxelised: :func:`unusable_reason` says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError


@dataclass(frozen=True)
class VoxelConfig:
    """Grid constants (seed_code.md §6.2; the defaults are the paper's).

    Attributes:
        grid: voxels per axis, G.
        eps: margin of the box on each side, as a fraction of the cell length.
        sigma_frac: Gaussian σ as a multiple of the ionic radius.
        label_frac: a voxel is labelled with a site when within label_frac·σ of it.
        fallback_radius: Å, radius of an element without ionic radii in pymatgen.
        max_sites: crystals with more sites are not voxelised (the authors' 40).
        angle_tol: degrees; a cell is orthogonal when every angle is within this of 90°.
    """

    grid: int = 32
    eps: float = 0.25
    sigma_frac: float = 1.0
    label_frac: float = 1.0
    fallback_radius: float = 1.2
    max_sites: int = 40
    angle_tol: float = 0.01

    @property
    def span(self) -> float:
        """Box width in cell lengths (1 + 2·eps = 1.5)."""
        return 1.0 + 2.0 * self.eps

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VoxelConfig:
        """Inverse of :meth:`to_dict` (unknown keys refused)."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise CrysgenError(f"unknown voxel settings: {', '.join(sorted(unknown))}")
        return cls(**d)


@lru_cache(maxsize=4)
def ionic_radii(fallback: float = 1.2) -> np.ndarray:
    """float64 (119,): Å, the mean of pymatgen's ionic radii per element (index = Z)."""
    from pymatgen.core import Element

    out = np.full(119, fallback)
    for z in range(1, 119):
        try:
            radii = Element.from_Z(z).ionic_radii
        except ValueError:
            continue
        if radii:
            out[z] = float(np.mean([float(r) for r in radii.values()]))
    return out


def unusable_reason(crystals: CrystalSet, config: VoxelConfig = VoxelConfig()) -> list[str | None]:
    """Why each crystal cannot be voxelised (None where it can): non-orthogonal cell, too many sites."""
    angles = crystals.lattice[:, 3:]
    out: list[str | None] = []
    for i in range(len(crystals)):
        if np.abs(angles[i] - 90.0).max() > config.angle_tol:
            a = ", ".join(f"{x:.2f}" for x in angles[i])
            out.append(f"cell angles ({a})° are not all 90°: voxel grids need an orthogonal cell")
        elif crystals.num_sites[i] > config.max_sites:
            out.append(f"{crystals.num_sites[i]} sites, more than {config.max_sites}")
        else:
            out.append(None)
    return out


def voxel_size(lengths: np.ndarray, config: VoxelConfig = VoxelConfig()) -> np.ndarray:
    """Å per voxel, (..., 3): 1.5·L/G."""
    return config.span * np.asarray(lengths, float) / config.grid


def voxel_centres(lengths: np.ndarray, config: VoxelConfig = VoxelConfig()) -> np.ndarray:
    """Cartesian centres of the voxels along each axis, Å, (N, 3, G): -eps·L + (i + ½)·dv."""
    lengths = np.asarray(lengths, float)
    dv = voxel_size(lengths, config)
    i = np.arange(config.grid) + 0.5
    return -config.eps * lengths[..., None] + i * dv[..., None]


def _sites_with_images(crystals: CrystalSet, config: VoxelConfig,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sites and periodic images whose Gaussians reach the box (within 4σ of it).

    Returns:
        Cartesian positions (N, M, 3) in Å, Z (N, M; 0 = padding) and σ (N, M) in Å.
    """
    radii = ionic_radii(config.fallback_radius)
    shifts = np.array(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij")).reshape(3, -1).T  # (27, 3)
    lengths = crystals.lattice[:, :3]
    mask = crystals.site_mask
    z = np.where(mask, crystals.atomic_numbers, 0)
    sigma = config.sigma_frac * radii[z]  # (N, S)
    frac = crystals.frac_coords[:, None, :, :] + shifts[None, :, None, :]  # (N, 27, S, 3)
    reach = 4.0 * sigma[:, None, :, None] / lengths[:, None, None, :]
    inside = ((frac > -config.eps - reach) & (frac < 1 + config.eps + reach)).all(-1)
    inside &= mask[:, None, :]
    n = len(crystals)
    m = max(int(inside.reshape(n, -1).sum(1).max(initial=0)), 1)
    pos = np.zeros((n, m, 3))
    zz = np.zeros((n, m), np.int64)
    ss = np.ones((n, m))
    for i in range(n):
        sel = inside[i]
        k = int(sel.sum())
        pos[i, :k] = frac[i][sel] * lengths[i]
        zz[i, :k] = np.broadcast_to(z[i], sel.shape)[sel]
        ss[i, :k] = np.broadcast_to(sigma[i], sel.shape)[sel]
    return pos, zz, ss


def density(crystals: CrystalSet, config: VoxelConfig = VoxelConfig()) -> np.ndarray:
    """float32 (N, G, G, G): the electron-density map, electrons/Å³ (module docstring)."""
    pos, z, sigma = _sites_with_images(crystals, config)
    centres = voxel_centres(crystals.lattice[:, :3], config)  # (N, 3, G)
    d = centres[:, None, :, :] - pos[..., None]  # (N, M, 3, G)
    g = np.exp(-(d ** 2) / (2.0 * sigma[..., None, None] ** 2))
    w = (2 * np.pi) ** -1.5 * z * sigma ** -3.0  # 0 for padding
    return np.einsum("nm,nmi,nmj,nmk->nijk", w, g[:, :, 0], g[:, :, 1], g[:, :, 2],
                     optimize=True).astype(np.float32)


def species_map(crystals: CrystalSet, config: VoxelConfig = VoxelConfig()) -> np.ndarray:
    """uint8 (N, G, G, G): Z of the nearest site within label_frac·σ of each voxel centre, else 0.

    Each site only visits the block of voxels inside its labelling sphere's bounding box.
    """
    pos, z, sigma = _sites_with_images(crystals, config)
    lengths = crystals.lattice[:, :3]
    centres = voxel_centres(lengths, config)  # (N, 3, G)
    dv = voxel_size(lengths, config)
    g = config.grid
    out = np.zeros((len(crystals), g, g, g), np.uint8)
    for i in range(len(crystals)):
        best = np.full((g, g, g), np.inf)
        for m in np.flatnonzero(z[i]):
            r = config.label_frac * sigma[i, m]
            lo = np.clip(np.floor((pos[i, m] - r - centres[i, :, 0]) / dv[i]).astype(int), 0, g)
            hi = np.clip(np.ceil((pos[i, m] + r - centres[i, :, 0]) / dv[i]).astype(int) + 1, 0, g)
            if (hi <= lo).any():
                continue
            d = [(centres[i, k, lo[k]:hi[k]] - pos[i, m, k]) ** 2 for k in range(3)]
            r2 = d[0][:, None, None] + d[1][None, :, None] + d[2][None, None, :]
            block = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
            take = (r2 <= r * r) & (r2 < best[block])
            best[block] = np.where(take, r2, best[block])
            out[i][block] = np.where(take, z[i, m], out[i][block])
    return out


def coordinate_channels(lengths: np.ndarray, config: VoxelConfig = VoxelConfig()) -> np.ndarray:
    """float32 (N, 3, G, G, G): channel k = i·1.5·L_k/G along array axis k (Å from the box start)."""
    lengths = np.asarray(lengths, float).reshape(-1, 3)
    g = config.grid
    ramp = np.arange(g) * config.span / g  # × L
    out = np.empty((len(lengths), 3, g, g, g), np.float32)
    shape = [(g, 1, 1), (1, g, 1), (1, 1, g)]
    for k in range(3):
        out[:, k] = (lengths[:, k, None] * ramp).reshape(-1, *shape[k])
    return out


@dataclass
class VoxelGrids:
    """What :func:`encode` returns.

    Attributes:
        inputs: float32 (N, 4, G, G, G): density and the three coordinate channels.
        species: uint8 (N, G, G, G): segmentation target (Z, 0 = background).
    """

    inputs: np.ndarray
    species: np.ndarray

    @property
    def occupancy(self) -> np.ndarray:
        """Bool (N, G, G, G): voxels that belong to a site."""
        return self.species > 0


def network_input(crystals: CrystalSet, config: VoxelConfig = VoxelConfig()) -> np.ndarray:
    """float32 (N, 4, G, G, G): density and the three coordinate channels (no checks)."""
    return np.concatenate([density(crystals, config)[:, None],
                           coordinate_channels(crystals.lattice[:, :3], config)], axis=1)


def encode(crystals: CrystalSet, config: VoxelConfig = VoxelConfig()) -> VoxelGrids:
    """Voxelise orthogonal crystals (module docstring).

    Raises:
        CrysgenError: if a crystal cannot be voxelised (filter with :func:`unusable_reason`).
    """
    bad = [(i, r) for i, r in enumerate(unusable_reason(crystals, config)) if r]
    if bad:
        i, r = bad[0]
        raise CrysgenError(f"{len(bad)} crystal(s) cannot be voxelised, e.g. {crystals.ids[i]}: {r}")
    return VoxelGrids(network_input(crystals, config), species_map(crystals, config))


LATTICE_READBACKS = ("level", "slope")
"""How :func:`read_lattice` turns a fitted coordinate channel into a length (its docstring)."""


def fit_coordinate_channels(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares plane fit of every coordinate channel over the whole grid.

    Each channel ``v`` is fitted as ``v(i, j, k) ≈ c0 + s_0·x_i + s_1·x_j + s_2·x_k`` with the
    centred voxel indices ``x = i - (G - 1)/2``. The design is orthogonal, so the fit is exact in
    closed form: ``c0`` is the channel's mean over all G³ voxels and ``s_a`` the slope of its
    profile along axis ``a`` (averaged over the other two axes).

    Args:
        coords: (N, 3, G, G, G) coordinate channels, Å.

    Returns:
        Levels (N, 3) in Å (channel means) and slopes (N, 3 channels, 3 axes) in Å per voxel.
    """
    coords = np.asarray(coords, np.float64)
    g = coords.shape[-1]
    x = np.arange(g) - (g - 1) / 2
    levels = coords.mean(axis=(2, 3, 4))
    slopes = np.empty((len(coords), 3, 3))
    for c in range(3):
        for ax in range(3):
            profile = coords[:, c].mean(axis=tuple(a for a in (1, 2, 3) if a != ax + 1))  # (N, G)
            slopes[:, c, ax] = (profile * x).sum(-1) / (x ** 2).sum()
    return levels, slopes


def read_lattice(coords: np.ndarray, config: VoxelConfig = VoxelConfig(), *,
                 method: str = "level") -> np.ndarray:
    """Cell lengths (N, 3) in Å along array axes 0, 1, 2, from coordinate channels (N, 3, G, G, G).

    Every channel is fitted over the whole grid (:func:`fit_coordinate_channels`). Channels are
    given to array axes by the assignment that maximises the summed |slope| (a permutation, so
    two channels never claim one axis), which follows the 90° rotations of
    :func:`rotate`. The length then comes from

    * ``"level"`` (default): the channel's mean, which is ``1.5·L·(G - 1)/(2G)`` for a ramp
      ``i·1.5·L/G`` running along any axis in either direction, and for any blend of such ramps.
      A decoder that is unsure of a rotated grid's orientation outputs such a blend (the
      MSE-optimal guess), whose slope shrinks towards 0 while its mean stays put (the average
      over the authors' rotation augmentation of a cell's channels reads back as a fraction of
      the cell by slope; ``rotation_average`` in benchmarks/results/voxel_lattice_cpu.json).
    * ``"slope"``: the slope along the assigned axis, ``1.5·L/G`` per voxel (the estimator before
      issue 21; insensitive to a constant offset of a channel, but shrinks with such blends).

    Both are exact on clean grids (no 1/32 bias, seed_code.md §6.5). NaN where a grid is not finite.

    Args:
        coords: (N, 3, G, G, G) coordinate channels, Å (decoded or encoded).
        config: the grid constants (span, G).
        method: one of :data:`LATTICE_READBACKS`.

    Raises:
        CrysgenError: an unknown method.
    """
    from scipy.optimize import linear_sum_assignment

    if method not in LATTICE_READBACKS:
        raise CrysgenError(f"lattice read-back must be one of {', '.join(LATTICE_READBACKS)}, got {method!r}")
    levels, slopes = fit_coordinate_channels(coords)
    g = np.shape(coords)[-1]
    out = np.full((len(levels), 3), np.nan)
    for i in range(len(levels)):
        if not (np.all(np.isfinite(slopes[i])) and np.all(np.isfinite(levels[i]))):
            continue
        channels, axes = linear_sum_assignment(-np.abs(slopes[i]))
        if method == "level":
            out[i, axes] = levels[i, channels] * 2 * g / (config.span * (g - 1))
        else:
            out[i, axes] = np.abs(slopes[i, channels, axes]) * g / config.span
    return out


def rotated_lengths(lengths: np.ndarray, rotation: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Cell lengths along array axes 0, 1, 2 after :func:`rotate` turned the grid, (..., 3) Å.

    A 90° turn in the plane (a, b) swaps what lies along axes a and b.
    """
    out = np.array(lengths, float, copy=True)
    for a, b in rotation:
        out[..., [a, b]] = out[..., [b, a]]
    return out


ROTATION_PLANES = ((0, 1), (0, 2), (1, 2))


def random_rotation(rng: np.random.Generator, turns: int = 3) -> tuple[tuple[int, int], ...]:
    """A random rotation as ``turns`` successive 90° turns in random axis planes (the paper's 3)."""
    return tuple(ROTATION_PLANES[int(k)] for k in rng.integers(0, 3, turns))


def rotate(grid: np.ndarray, rotation: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Apply a rotation of :func:`random_rotation` to the last three axes of ``grid``.

    Every grid of a crystal (density, each coordinate channel, species) gets the same turns, so
    they stay consistent; channel values are not changed (as the authors' code), which
    :func:`read_lattice` allows for.
    """
    nd = grid.ndim
    for a, b in rotation:
        grid = np.rot90(grid, 1, axes=(nd - 3 + a, nd - 3 + b))
    return np.ascontiguousarray(grid)
