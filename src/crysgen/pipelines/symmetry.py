"""Symmetry templates for atom diffusion sampling: sample on the symmetry of known crystals.

An atom diffusion model left alone makes mostly P1 crystals (no symmetry beyond the identity),
while known crystals are mostly symmetric. With ``--symmetry-prior TRAIN.npz`` every sample takes
a template: the number of sites, the space-group operations and the site permutations
(:class:`~crysgen.representations.symmetry.SiteSymmetry`) of a crystal of that set, and the
sampler projects each denoised estimate onto that symmetry (:func:`project`). Sites of one orbit
then share their element, sit at the images of each other, and the cell keeps the metric the
operations demand.

Which crystal is each sample's template:

- de novo: a crystal drawn (seeded) from the set;
- with ``--composition-prior`` (the same file): the crystal each composition was drawn from;
- with ``--compositions TARGETS.npz`` (crystal structure prediction): a crystal of the set whose
  element counts match the target's after a one-to-one exchange of elements (e.g. ABO3 for
  SrTiO3), the one whose exchanged elements are most alike (:func:`element_cost`): the template
  approach of prototype-based structure prediction (Hautier et al. 2011; CSPML, Kusaba et al.
  2022), with the model placing the atoms;
- a sample without a fitting template is sampled without symmetry (its template is None).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from crysgen.errors import CrysgenError
from crysgen.objectives.atom_edm import Constants, Parts, lattice_metric, metric_features, wrap_centered
from crysgen.representations.symmetry import SiteSymmetry, site_symmetry

if TYPE_CHECKING:
    from crysgen.crystal_set import CrystalSet

__all__ = ["SymmetryBatch", "TemplateChooser", "Templates", "element_cost", "fit_rows", "fit_template",
           "fitting_rows", "match_templates", "project", "templates_of_rows"]


@dataclass
class Templates:
    """One symmetry template per sample.

    Attributes:
        symmetries: per sample the symmetry to keep, in the sample's site order (None: none).
        sources: per sample the id of the template crystal ("" for none).
    """

    symmetries: list[SiteSymmetry | None]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.symmetries)

    @property
    def num_sites(self) -> np.ndarray:
        """Int (n,): each template's number of sites (0 for none)."""
        return np.array([0 if s is None else s.num_sites for s in self.symmetries], np.int64)

    def share_fitted(self) -> float:
        """The fraction of samples with a template."""
        return float(np.mean([s is not None for s in self.symmetries])) if len(self) else 0.0


def templates_of_rows(prior: CrystalSet, rows: np.ndarray, *, symprec: float = 0.1,
                      niggli: bool = True) -> Templates:
    """The symmetry of each chosen crystal of ``prior``, in its own site order.

    Args:
        prior: the crystals.
        rows: int (n,) indices into ``prior`` (repeats allowed).
        symprec: spglib's tolerance in Å.
        niggli: take each crystal in its Niggli-reduced cell (the cells crysgen's atom models are
            trained on, ``data.niggli``), else in the cell given.
    """
    from crysgen.representations.atoms import niggli_reduce

    unique = np.unique(np.asarray(rows, np.int64))
    chosen = prior.subset(unique)
    if niggli:
        chosen = niggli_reduce(chosen)
    cache: dict[int, SiteSymmetry] = {}
    for i, r in enumerate(unique):
        k = int(chosen.num_sites[i])
        cache[int(r)] = site_symmetry(chosen.atomic_numbers[i, :k], chosen.frac_coords[i, :k],
                                      chosen.lattice[i], symprec=symprec)
    return Templates([cache[int(r)] for r in rows], [str(prior.ids[r]) for r in rows])


def _counts(row: np.ndarray) -> dict[int, int]:
    return {int(z): int((row == z).sum()) for z in np.unique(row[row > 0])}


@lru_cache(maxsize=1)
def _element_table() -> np.ndarray:
    """Float (119, 3): Pauling electronegativity (0 if none), period, 32-column table column."""
    from pymatgen.core import Element

    from crysgen.representations.elements import MAX_Z, element_code_table

    codes = element_code_table()
    table = np.zeros((119, 3))
    for z in range(1, MAX_Z + 1):
        with warnings.catch_warnings():  # noble gases: pymatgen warns and gives NaN
            warnings.simplefilter("ignore", UserWarning)
            x = Element.from_Z(z).X
        table[z] = (float(x) if np.isfinite(x) else 0.0, float(codes[z, :7].argmax()),
                    float(codes[z, 7:].argmax()))
    return table


def element_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How unalike elements are when one replaces the other (0 for the same element).

    |ΔX| (Pauling electronegativity) plus 0.5 for another period and 0.5 for another column of
    the periodic table: small for chemically alike swaps (Sr -> Ba, Ti -> Zr), large across the
    table.

    Args:
        a: int (...) atomic numbers.
        b: int (...) atomic numbers of the same shape.
    """
    t = _element_table()
    ta, tb = t[np.asarray(a)], t[np.asarray(b)]
    return (np.abs(ta[..., 0] - tb[..., 0]) + 0.5 * (ta[..., 1] != tb[..., 1])
            + 0.5 * (ta[..., 2] != tb[..., 2]))


def _pairing(template: dict[int, int], target: dict[int, int]) -> dict[int, int] | None:
    """Template element -> target element with equal counts; same elements first, then by X."""
    if sorted(template.values()) != sorted(target.values()):
        return None
    x = _element_table()[:, 0]
    pairs: dict[int, int] = {}
    for count in set(template.values()):
        left = [z for z, c in template.items() if c == count]
        right = [z for z, c in target.items() if c == count]
        for z in [z for z in left if z in right]:
            pairs[z] = z
        left = sorted((z for z in left if z not in pairs), key=lambda z: (x[z], z))
        right = sorted((z for z in right if z not in pairs.values()), key=lambda z: (x[z], z))
        pairs.update(zip(left, right, strict=True))
    return pairs


def fit_template(sym: SiteSymmetry, template_z: np.ndarray, target_z: np.ndarray) -> SiteSymmetry | None:
    """A template's symmetry renumbered onto a target's sites, or None if the counts do not fit.

    The template's elements are exchanged one-to-one for the target's with equal counts (the same
    element with itself where both have it, the rest in order of electronegativity), and the
    target's sites of each element take the places of the template's sites of its partner in
    order.

    Args:
        sym: the template crystal's symmetry (its own site order).
        template_z: int (k,) the template's atomic numbers (padding 0 allowed after them).
        target_z: int (S,) the target's atomic numbers, 0 = no site.
    """
    template_z = np.asarray(template_z)[: sym.num_sites]
    target_z = np.asarray(target_z)
    real = np.flatnonzero(target_z > 0)
    if len(real) != sym.num_sites or real.max(initial=-1) != len(real) - 1:
        return None
    pairs = _pairing(_counts(template_z), _counts(target_z))
    if pairs is None:
        return None
    order = np.empty(sym.num_sites, np.int64)  # target site q takes template site order[q]
    for old, new in pairs.items():
        order[np.flatnonzero(target_z[real] == new)] = np.flatnonzero(template_z == old)
    return sym.reindexed(order)


class TemplateChooser(Protocol):
    """Chooses each target's template among its fitting crystals.

    :class:`~crysgen.pipelines.template_ranking.TemplateRanker` is one (a learned ranker).
    """

    def choose(self, targets_z: np.ndarray, prior: CrystalSet,
               fits: list[tuple[np.ndarray, np.ndarray] | None] | None = None) -> list[int | None]:
        """Per target the row of ``prior`` to take (None: none fits); ``fits`` as :func:`fitting_rows`."""
        ...


def fitting_rows(targets_z: np.ndarray, prior: CrystalSet) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per target the crystals of ``prior`` whose element counts fit it, the most alike exchange first.

    A crystal fits when its element counts equal the target's up to exchanging elements
    one-to-one; its cost is :func:`element_cost` summed over the exchanged pairs (elements paired
    by count and electronegativity, :func:`fit_template`'s pairing).

    Args:
        targets_z: int (n, S) the targets' atomic numbers, 0 = no site.
        prior: the crystals templates come from.

    Returns:
        Per target None (no crystal fits) or (rows, costs): int (m,) rows of ``prior`` in the order
        of their float (m,) costs (stable: the first in ``prior`` on a tie).
    """
    x = _element_table()[:, 0]

    def key(counts: dict[int, int]) -> tuple[tuple[int, ...], list[int]]:
        ordered = sorted(counts, key=lambda z: (counts[z], x[z], z))
        return tuple(counts[z] for z in ordered), ordered

    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
    for r in range(len(prior)):
        counts = _counts(prior.atomic_numbers[r])
        if counts:
            signature, ordered = key(counts)
            groups[signature].append((r, ordered))
    arrays = {sig: (np.array([r for r, _ in rows]), np.array([o for _, o in rows]))
              for sig, rows in groups.items()}
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    for row in np.asarray(targets_z):
        counts = _counts(row)
        signature, ordered = key(counts) if counts else ((), [])
        if signature not in arrays:
            out.append(None)
            continue
        rows, elements = arrays[signature]
        cost = element_cost(elements, np.array(ordered)[None]).sum(1)
        order = np.argsort(cost, kind="stable")
        out.append((rows[order], cost[order]))
    return out


def match_templates(targets_z: np.ndarray, prior: CrystalSet, *, symprec: float = 0.1,
                    rank: int = 0, vote: int = 1, ranker: TemplateChooser | None = None) -> Templates:
    """For every target composition the best-fitting crystal of ``prior`` as its template.

    A crystal fits when its element counts equal the target's up to exchanging elements; among
    those, the one whose exchanged elements cost least (:func:`element_cost`, elements paired by
    count and electronegativity) is taken, the first in ``prior`` on a tie
    (:func:`fitting_rows`). With ``rank`` r > 0
    the template is the best-fitting crystal of the (r + 1)-th space group in that order (each
    space group counted at its best-fitting crystal), so that several ranks give several
    symmetries for one composition (candidates for generate-and-rank). With a ``ranker`` the
    template is the fitting crystal it scores highest among its candidates instead
    (:class:`~crysgen.pipelines.template_ranking.TemplateRanker`).

    Args:
        targets_z: int (n, S) the targets' atomic numbers, 0 = no site (sites of one element
            together, as ``crysgen data prepare`` lists them).
        prior: the crystals to take templates from (typically the model's training set).
        symprec: spglib's tolerance in Å.
        rank: 0 = the best-fitting crystal; r = the best of the (r + 1)-th best space group
            (none where fewer space groups fit). The groups are those ``prior`` records
            (``CrystalSet.space_group``; 0, unknown, counts as one group).
        vote: k > 1: the space groups of the k best-fitting crystals vote, and the template is
            the best-fitting crystal of the group most of them share (ties: the group of the
            better-fitting crystal); then ``rank`` r counts the groups in the order of their
            votes. 1: no vote.
        ranker: a learned choice among the fitting crystals (excludes ``rank`` and ``vote``).

    Raises:
        CrysgenError: for a vote below 1, or a ranker with a rank or vote.

    Returns:
        Templates in the targets' site order (None where no crystal fits).
    """
    if vote < 1:
        raise CrysgenError(f"a template vote needs at least one crystal, got {vote}")
    fits = fitting_rows(targets_z, prior)
    if ranker is not None:
        if rank or vote > 1:
            raise CrysgenError("a template ranker chooses one template per target: no rank or vote beside it")
        return fit_rows(prior, ranker.choose(targets_z, prior, fits), targets_z, symprec=symprec)
    chosen: list[int | None] = []
    for fit in fits:
        if fit is None:
            chosen.append(None)
            continue
        rows, _ = fit
        order = np.arange(len(rows))  # positions in rows, best-fitting first
        if rank or vote > 1:  # the best crystal of each space group, in the order of its cost
            group_of = prior.space_group[rows]
            order = np.sort(np.unique(group_of, return_index=True)[1])
            if vote > 1:  # ... reordered by the votes of the k best crystals (stable: cost breaks ties)
                votes = np.array([(group_of[:vote] == group_of[f]).sum() for f in order])
                order = order[np.argsort(-votes, kind="stable")]
        chosen.append(int(rows[order[rank]]) if rank < len(order) else None)
    return fit_rows(prior, chosen, targets_z, symprec=symprec)


def fit_rows(prior: CrystalSet, rows: list[int | None], targets_z: np.ndarray, *,
             symprec: float = 0.1) -> Templates:
    """Every target with the symmetry of its chosen crystal of ``prior``, fitted to its elements.

    Args:
        prior: the crystals templates come from.
        rows: per target the row of ``prior`` to take (None: no template).
        targets_z: int (n, S) the targets' atomic numbers, 0 = no site.
        symprec: spglib's tolerance in Å.

    Returns:
        Templates in the targets' site order (None, source "", where there was no row or the
        chosen crystal's element counts do not fit; :func:`fit_template`).
    """
    own = templates_of_rows(prior, np.array([r for r in rows if r is not None], np.int64), symprec=symprec)
    it = iter(zip(own.symmetries, own.sources, strict=True))
    symmetries: list[SiteSymmetry | None] = []
    sources: list[str] = []
    for row, choice in zip(np.asarray(targets_z), rows, strict=True):
        fitted, source = None, ""
        if choice is not None:
            sym, source = next(it)
            assert sym is not None  # templates_of_rows makes one per row
            fitted = fit_template(sym, prior.atomic_numbers[choice], row)
        symmetries.append(fitted)
        sources.append(source if fitted is not None else "")
    return Templates(symmetries, sources)


# ---------------------------------------------------------------------- the sampler's projection
@dataclass
class SymmetryBatch:
    """The templates of one sampling batch as padded tensors (identity where there is none).

    Attributes:
        rotations: float (B, K, 3, 3) per operation R (fractional coordinates, column vectors).
        translations: float (B, K, 3) per operation t.
        sources: long (B, K, W): operation g sends site ``sources[b, g, j]`` to site j.
        weights: float (B, K): 1 for a real operation, 0 for padding.
        positions: float (B, W, 3) the templates' own site positions.
        fixed: float (B, W, 3, 3) per site I - P, P its Wyckoff position's free directions
            (zero where there is no template).
    """

    rotations: torch.Tensor
    translations: torch.Tensor
    sources: torch.Tensor
    weights: torch.Tensor
    positions: torch.Tensor
    fixed: torch.Tensor

    @classmethod
    def of(cls, symmetries: list[SiteSymmetry | None], width: int) -> SymmetryBatch:
        """Pad the templates of a batch to its ``width`` sites and its largest group."""
        b = len(symmetries)
        k = max([1] + [s.num_ops for s in symmetries if s is not None])
        rot = np.tile(np.eye(3), (b, k, 1, 1))
        trans = np.zeros((b, k, 3))
        src = np.tile(np.arange(width), (b, k, 1))
        weights = np.zeros((b, k))
        weights[:, 0] = 1.0
        positions = np.zeros((b, width, 3))
        fixed = np.zeros((b, width, 3, 3))
        for i, s in enumerate(symmetries):
            if s is None:
                continue
            g = s.num_ops
            positions[i, :s.num_sites] = s.positions
            fixed[i, :s.num_sites] = np.eye(3) - s.free_directions()
            rot[i, :g] = s.rotations
            trans[i, :g] = s.translations
            inverse = np.empty_like(s.images)
            inverse[np.arange(g)[:, None], s.images] = np.arange(s.num_sites)[None]
            src[i, :g, :s.num_sites] = inverse
            weights[i, :g] = 1.0
        f32 = torch.float32
        return cls(torch.as_tensor(rot, dtype=f32), torch.as_tensor(trans, dtype=f32),
                   torch.as_tensor(src, dtype=torch.long), torch.as_tensor(weights, dtype=f32),
                   torch.as_tensor(positions, dtype=f32), torch.as_tensor(fixed, dtype=f32))

    def to(self, device: str | torch.device) -> SymmetryBatch:
        """On ``device``."""
        return SymmetryBatch(*(getattr(self, f.name).to(device) for f in fields(self)))

    def rows(self, index: torch.Tensor) -> SymmetryBatch:
        """The templates of the batch's samples ``index`` (long (b,), on this batch's device)."""
        return SymmetryBatch(*(getattr(self, f.name)[index] for f in fields(self)))


def project(x: Parts, sym: SymmetryBatch, mask: torch.Tensor, consts: Constants, *,
            types: bool = True) -> Parts:
    """Project atom sets onto their templates' symmetry (the group average of every part).

    Coordinates: site j moves by the mean over operations g of the shortest periodic displacement
    from x_j to R_g x_i + t_g, i the site g sends to j, then onto its Wyckoff position (the
    template's position plus the site's free directions; the result is not wrapped, so a denoised
    estimate stays next to its noisy point); element codes: the mean over the site's orbit
    images; lattice: the metric G = L Lᵀ becomes mean_g R_gᵀ G R_g (in the model's standardised
    lattice features). Padding operations weigh nothing, so a sample without a template is
    returned as it was (up to float rounding of its lattice).

    Args:
        x: element codes (B, W, D), coordinates (B, W, 3), lattice features (B, 6).
        sym: the batch's templates (width W).
        mask: bool (B, W) real sites.
        consts: the model's lattice statistics.
        types: also average the element codes (False when they are given).
    """
    dev = x.frac.device
    sym = sym.to(dev)
    w = sym.weights / sym.weights.sum(1, keepdim=True)  # (B, K)
    b, k, width = sym.sources.shape
    idx = sym.sources.reshape(b, k * width)
    frac = x.frac.float()
    moved = torch.gather(frac, 1, idx[..., None].expand(-1, -1, 3)).reshape(b, k, width, 3)
    cand = torch.einsum("bgij,bgsj->bgsi", sym.rotations, moved) + sym.translations[:, :, None, :]
    delta = wrap_centered(cand - frac[:, None])
    new_frac = frac + (w[:, :, None, None] * delta).sum(1)
    off = wrap_centered(new_frac - sym.positions)
    new_frac = new_frac - torch.einsum("bsij,bsj->bsi", sym.fixed, off)
    m = mask[..., None].to(frac.dtype)
    new_frac = new_frac * m + frac * (1 - m)
    new_types = x.types
    if types:
        d = x.types.shape[-1]
        moved_t = torch.gather(x.types.float(), 1, idx[..., None].expand(-1, -1, d)).reshape(b, k, width, d)
        new_types = (w[:, :, None, None] * moved_t).sum(1) * m + x.types * (1 - m)
    return Parts(new_types, new_frac, _project_lattice(x.lattice.float(), sym, w, mask, consts))


def _project_lattice(features: torch.Tensor, sym: SymmetryBatch, w: torch.Tensor, mask: torch.Tensor,
                     consts: Constants) -> torch.Tensor:
    """Standardised lattice features (B, 6) with their metric averaged over the operations."""
    log_n = mask.sum(1).clamp_min(1).double().log()[:, None] / 3
    g = lattice_metric(features, consts, log_n)
    r = sym.rotations.double()
    g = torch.einsum("bk,bkji,bjl,bklm->bim", w.double(), r, g, r)
    return metric_features(g, consts, log_n).to(features.dtype)
