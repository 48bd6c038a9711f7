"""The symmetry of a crystal's sites in its own cell, as operations that permute its sites.

A :class:`SiteSymmetry` holds the space-group operations spglib finds for one crystal, written
in the crystal's own cell (fractional coordinates x -> R x + t; pure translations included when
the cell is not primitive), and for every operation the site each site is sent to. That is what a
sampler needs to keep a generated crystal on the symmetry of a template: sites of one orbit
(one Wyckoff set) share their element, every site sits at the image of its orbit's other sites,
and the cell metric G = L Lᵀ obeys Rᵀ G R = G (so a hexagonal cell stays hexagonal).
The template's own positions fix each orbit's Wyckoff position: a site may move only along the
directions its site-symmetry group leaves free, so no orbit can fall onto a more special
position (three O of a perovskite onto one point).

:func:`symmetrize` projects a crystal onto such a symmetry (the average over the group of the
images of its sites and of its metric, then each site onto its Wyckoff position), the numpy
twin of the sampler's projection.
Everything here is a pure function of numpy arrays (spglib finds the operations).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from crysgen.errors import CrysgenError


@dataclass(frozen=True)
class SiteSymmetry:
    """Space-group operations of one crystal of k sites, in its own cell.

    Attributes:
        space_group: the international number (1-230) spglib found.
        rotations: int (K, 3, 3) R of every operation, acting on fractional coordinates (column
            vectors); the identity comes first.
        translations: float (K, 3) t of every operation (fractions of the cell vectors).
        images: int (K, k): operation g sends site i to site ``images[g, i]`` (a permutation).
        positions: float (k, 3) the template's own fractional coordinates (a point of every
            site's Wyckoff position).
        cell: float (6,) the template's own cell, a, b, c (Å), α, β, γ (degrees), the cell
            ``positions`` are fractions of; None where unknown.
    """

    space_group: int
    rotations: np.ndarray
    translations: np.ndarray
    images: np.ndarray
    positions: np.ndarray
    cell: np.ndarray | None = None

    @property
    def num_sites(self) -> int:
        """k, the crystal's sites."""
        return int(self.images.shape[1])

    @property
    def num_ops(self) -> int:
        """K, the operations (point-group order times the cell's centring translations)."""
        return int(self.images.shape[0])

    def orbits(self) -> np.ndarray:
        """Int (k,): for every site the smallest site index of its orbit (its Wyckoff set)."""
        return self.images.min(axis=0)

    def free_directions(self) -> np.ndarray:
        """Float (k, 3, 3): per site the projector onto the directions its Wyckoff position leaves free.

        The common null space of R - I over the operations that keep the site in place (its
        site-symmetry group): the identity for a general position, zero for a fixed point.
        """
        out = np.zeros((self.num_sites, 3, 3))
        for j in range(self.num_sites):
            stack = (self.rotations[self.images[:, j] == j] - np.eye(3)).reshape(-1, 3)
            _, sv, vt = np.linalg.svd(stack)
            rank = int((sv > 1e-6).sum())
            basis = vt[rank:]
            out[j] = basis.T @ basis
        return out

    def reindexed(self, order: np.ndarray) -> SiteSymmetry:
        """The same symmetry with sites renumbered: new site p is old site ``order[p]``.

        Raises:
            CrysgenError: if ``order`` is not a permutation of the k sites.
        """
        order = np.asarray(order, np.int64)
        if sorted(order.tolist()) != list(range(self.num_sites)):
            raise CrysgenError(f"a renumbering of {self.num_sites} sites must be a permutation")
        new_of_old = np.empty_like(order)
        new_of_old[order] = np.arange(len(order))
        return SiteSymmetry(self.space_group, self.rotations, self.translations,
                            new_of_old[self.images[:, order]], self.positions[order], self.cell)


def trivial_symmetry(num_sites: int) -> SiteSymmetry:
    """The identity alone (space group 1): a projection onto it changes nothing."""
    return SiteSymmetry(1, np.eye(3, dtype=np.int64)[None], np.zeros((1, 3)),
                        np.arange(num_sites, dtype=np.int64)[None], np.zeros((num_sites, 3)))


def lattice_matrix(params: np.ndarray) -> np.ndarray:
    """a, b, c (Å), α, β, γ (degrees) -> (3, 3) cell vectors as rows (pymatgen's convention)."""
    from pymatgen.core import Lattice

    return np.asarray(Lattice.from_parameters(*np.asarray(params, float)).matrix)


def site_symmetry(numbers: np.ndarray, frac: np.ndarray, lattice: np.ndarray, *,
                  symprec: float = 0.1) -> SiteSymmetry:
    """The operations spglib finds for one crystal, with the site permutation of each.

    An operation that does not send every site to a site of its element within 2 ``symprec``
    (Å; spglib's tolerance can chain) is left out, so the result is always a set of site
    permutations; the identity is always kept.

    Args:
        numbers: int (k,) atomic numbers.
        frac: float (k, 3) fractional coordinates.
        lattice: (6,) a, b, c (Å), α, β, γ (degrees).
        symprec: spglib's distance tolerance in Å.

    Returns:
        The crystal's :class:`SiteSymmetry` (space group 1 with the identity alone when spglib
        finds nothing).
    """
    import spglib

    numbers = np.asarray(numbers, np.int64)
    frac = np.mod(np.asarray(frac, float), 1.0)
    k = len(numbers)
    mat = lattice_matrix(lattice)
    cell = (mat.tolist(), frac.tolist(), numbers.tolist())
    data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if data is None:
        return replace(trivial_symmetry(k), positions=frac, cell=np.asarray(lattice, float))
    rots = np.asarray(data.rotations, np.int64)
    trans = np.asarray(data.translations, float)
    eye = np.eye(3, dtype=np.int64)
    is_id = np.flatnonzero([(r == eye).all() and np.allclose(np.mod(t + 0.5, 1) - 0.5, 0, atol=1e-6)
                            for r, t in zip(rots, trans, strict=True)])
    order = [int(is_id[0])] if len(is_id) else []
    order += [g for g in range(len(rots)) if g not in order]
    keep_r, keep_t, keep_i = [eye], [np.zeros(3)], [np.arange(k)]
    for g in order:
        r, t = rots[g], trans[g]
        if (r == eye).all() and np.allclose(np.mod(t + 0.5, 1) - 0.5, 0, atol=1e-6):
            continue
        moved = frac @ r.T + t
        delta = moved[:, None, :] - frac[None, :, :]
        delta -= np.round(delta)
        dist = np.linalg.norm(delta @ mat, axis=-1)
        dist[numbers[:, None] != numbers[None, :]] = np.inf
        img = dist.argmin(1)
        if dist[np.arange(k), img].max() > 2 * symprec or len(set(img.tolist())) != k:
            continue
        keep_r.append(r)
        keep_t.append(t)
        keep_i.append(img)
    return SiteSymmetry(int(data.number), np.stack(keep_r), np.stack(keep_t), np.stack(keep_i), frac,
                        np.asarray(lattice, float))


def symmetrize(frac: np.ndarray, lattice: np.ndarray, sym: SiteSymmetry) -> tuple[np.ndarray, np.ndarray]:
    """Project one crystal onto a symmetry: the group average of its sites and of its metric.

    Site j goes to x̄_j = x_j + mean_g wrap(R_g x_i + t_g - x_j) over the operations g and the
    sites i they send to j (wrap: the shortest periodic displacement), then onto its Wyckoff
    position: x̄_j - (I - P_j) wrap(x̄_j - p_j), with p_j the template's position and P_j its free
    directions (:meth:`SiteSymmetry.free_directions`); the metric G goes to mean_g R_gᵀ G R_g.
    The averages are invariant under the group, so the result has the symmetry exactly (when the
    crystal is within half a cell of it), with every orbit on the template's Wyckoff position.

    Args:
        frac: float (k, 3) fractional coordinates, site order of ``sym``.
        lattice: (6,) a, b, c (Å), α, β, γ (degrees).
        sym: the symmetry to project onto.

    Returns:
        Fractional coordinates (k, 3) in [0, 1) and lattice parameters (6,).

    Raises:
        CrysgenError: if ``frac`` has another number of sites than ``sym``.
    """
    frac = np.asarray(frac, float)
    if len(frac) != sym.num_sites:
        raise CrysgenError(f"{len(frac)} sites given for a symmetry of {sym.num_sites}")
    k = sym.num_sites
    source = np.empty_like(sym.images)  # source[g, j]: the site that operation g sends to j
    source[np.arange(sym.num_ops)[:, None], sym.images] = np.arange(k)[None]
    cand = np.einsum("gab,gjb->gja", sym.rotations, frac[source]) + sym.translations[:, None, :]
    delta = cand - frac[None]
    delta -= np.round(delta)
    mean = frac + delta.mean(0)
    off = mean - sym.positions
    off -= np.round(off)
    mean -= np.einsum("jab,jb->ja", np.eye(3) - sym.free_directions(), off)
    out = np.mod(mean, 1.0)
    out[out >= 1.0] = 0.0  # np.mod(-1e-17, 1) is 1.0
    mat = lattice_matrix(lattice)
    g = mat @ mat.T
    g = np.einsum("kab,bc,kcd->ad", sym.rotations.transpose(0, 2, 1), g, sym.rotations) / sym.num_ops
    return out, metric_parameters(g)


def metric_parameters(g: np.ndarray) -> np.ndarray:
    """A metric tensor G = L Lᵀ (3, 3) -> a, b, c (Å), α, β, γ (degrees)."""
    lengths = np.sqrt(np.diag(g))
    cos = [g[1, 2] / (lengths[1] * lengths[2]), g[0, 2] / (lengths[0] * lengths[2]),
           g[0, 1] / (lengths[0] * lengths[1])]
    return np.concatenate([lengths, np.degrees(np.arccos(np.clip(cos, -1, 1)))])
