"""Crystals as sets of atoms: element codes, periodic fractional coordinates and a lattice vector.

This is the representation of crysgen's own generator (:mod:`crysgen.models.atom_transformer`).
Each crystal of at most ``S`` sites becomes:

- ``types`` float32 (N, S, D): a continuous code per element (:mod:`crysgen.representations.elements`:
  the one-hot of its period (7) next to the one-hot of its column in the 32-column periodic table),
  centred by the training mean. Neighbouring atomic numbers are far apart (their codes differ in
  two or four entries) while elements of one column share half their code; decoding picks the
  nearest code among the elements allowed (those seen in training, or those a formula gives), so
  noise never turns an element into a neighbouring Z by a small shift.
- ``frac`` float32 (N, S, 3): fractional coordinates in [0, 1) (a point on the 3-torus).
- ``lattice`` float32 (N, 6), standardised with the training mean and std, in one of
  :data:`LATTICE_CODES` (the spec's ``lattice_code``):

  - ``lengths_angles``: ln a, ln b, ln c minus ln(num_sites^(1/3)) (Å; length scale per atom) and
    α, β, γ in radians;
  - ``cholesky``: the lower-triangular Cholesky factor L of the metric G = M Mᵀ (M: the cell
    vectors as rows; L is M turned so that a lies along x and b in the xy plane): ln L11, ln L22,
    ln L33 minus ln(num_sites^(1/3)), then the shears L21 / L11, L31 / L11, L32 / L22
    (dimensionless, within ±½ for a Niggli-reduced cell). Every vector of six numbers is a cell.

  Both are invariant to rotations; :func:`niggli_reduce` makes the cell choice unique up to ties.
- ``mask`` bool (N, S): real sites.

Everything here is a pure function of numpy arrays and the fitted :class:`AtomSetSpec`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from crysgen.crystal_set import CrystalSet, write_text_atomic
from crysgen.errors import CrysgenError
from crysgen.representations.elements import MAX_Z, element_code_table, nearest_rows


def parse_formula(formula: str) -> dict[int, int]:
    """Atomic number -> count of a reduced or full formula ("Fe2O3", "LiFePO4").

    Raises:
        CrysgenError: for text that is not a formula, an unknown element or a fractional count.
    """
    from pymatgen.core import Composition

    try:
        comp = Composition(formula)
    except Exception as exc:  # pymatgen raises ValueError/KeyError/... for bad text
        raise CrysgenError(f"--formula {formula!r} is not a chemical formula ({exc})") from exc
    counts: dict[int, int] = {}
    for el, amount in comp.items():
        z = getattr(el, "Z", None)
        if type(el).__name__ == "DummySpecies" or z is None or not 1 <= z <= MAX_Z:
            name = getattr(el, "symbol", str(el))
            raise CrysgenError(f"--formula {formula!r}: {name} is not an element crysgen knows (H to Lr)")
        if abs(amount - round(amount)) > 1e-6 or round(amount) < 1:
            raise CrysgenError(f"--formula {formula!r}: the count of {el} must be a positive integer")
        counts[int(z)] = counts.get(int(z), 0) + round(amount)
    if not counts:
        raise CrysgenError(f"--formula {formula!r} names no element")
    return counts


LATTICE_CODES = ("lengths_angles", "cholesky")
"""The lattice encodings a spec may use (see the module docstring)."""


def check_lattice_code(code: str) -> str:
    """``code`` itself if it is one of :data:`LATTICE_CODES`.

    Raises:
        CrysgenError: for any other name.
    """
    if code not in LATTICE_CODES:
        raise CrysgenError(f"unknown lattice code {code!r} (choose from {', '.join(LATTICE_CODES)})")
    return code


def _positive(std: float) -> float:
    """A data σ that can divide: 1 where the data do not vary (e.g. one element in all crystals)."""
    return std if std > 1e-6 else 1.0


@dataclass
class AtomSetSpec:
    """What encoding and decoding need, fitted on a training set and saved beside a model.

    Attributes:
        max_atoms: S, the most sites a crystal may have.
        elements: atomic numbers seen in training (decoding chooses among them).
        code_mean: (CODE_DIM,) mean element code over training sites (subtracted).
        type_sigma: std of the centred codes (the types' σ_data).
        lattice_mean: (6,) mean of the unstandardised lattice features.
        lattice_std: (6,) their std.
        num_atoms_counts: (max_atoms + 1,) training crystals per number of sites.
        size_counts: (max_atoms + 1, MAX_ELEMENTS + 1) training crystals per (number of sites,
            number of distinct elements); empty in specs written before it existed.
        lattice_code: how the lattice is encoded, one of :data:`LATTICE_CODES` (specs written
            before it existed: ``lengths_angles``).
    """

    max_atoms: int
    elements: list[int]
    code_mean: list[float]
    type_sigma: float
    lattice_mean: list[float]
    lattice_std: list[float]
    num_atoms_counts: list[int] = field(default_factory=list)
    size_counts: list[list[int]] = field(default_factory=list)
    lattice_code: str = "lengths_angles"

    def __post_init__(self) -> None:
        check_lattice_code(self.lattice_code)

    @classmethod
    def fit(cls, crystals: CrystalSet, max_atoms: int | None = None,
            lattice_code: str = "lengths_angles") -> AtomSetSpec:
        """Fit on a training CrystalSet (``max_atoms`` default: its largest crystal).

        Raises:
            CrysgenError: for an empty set, an element beyond Lr, a crystal above ``max_atoms``
                or an unknown ``lattice_code``.
        """
        check_lattice_code(lattice_code)
        if len(crystals) == 0:
            raise CrysgenError("cannot fit an atom-set spec on an empty CrystalSet")
        n = crystals.num_sites.astype(int)
        max_atoms = int(max_atoms or n.max())
        if n.max() > max_atoms:
            raise CrysgenError(f"{int((n > max_atoms).sum())} crystals have more than {max_atoms} sites")
        z = crystals.atomic_numbers[crystals.atomic_numbers > 0].astype(int)
        if z.max() > MAX_Z:
            raise CrysgenError(f"element Z={z.max()} has no code (at most {MAX_Z})")
        codes = element_code_table()[z]
        mean = codes.mean(0)
        feats = _lattice_features(crystals.lattice, n, lattice_code)
        std = feats.std(0)
        return cls(max_atoms=max_atoms, elements=sorted({int(v) for v in z}),
                   code_mean=[float(v) for v in mean], type_sigma=_positive(float((codes - mean).std())),
                   lattice_mean=[float(v) for v in feats.mean(0)],
                   lattice_std=[_positive(float(v)) for v in std],
                   num_atoms_counts=np.bincount(n, minlength=max_atoms + 1).tolist(),
                   size_counts=_size_counts(crystals, max_atoms), lattice_code=lattice_code)

    def refit(self, crystals: CrystalSet, max_atoms: int | None = None) -> AtomSetSpec:
        """This spec's encoding with the sizes and elements of another training set.

        The element-code centring, the types' σ_data and the lattice code and standardisation
        (what a network's weights were trained with) stay; ``max_atoms``, the elements decoding chooses
        among and the size histograms come from ``crystals`` (a warm start on new data, e.g. a
        model of crystals of up to 52 sites from one trained on up to 20).

        Raises:
            CrysgenError: as :meth:`fit`.
        """
        own = AtomSetSpec.fit(crystals, max_atoms, self.lattice_code)
        return replace(own, code_mean=self.code_mean, type_sigma=self.type_sigma,
                       lattice_mean=self.lattice_mean, lattice_std=self.lattice_std)

    def save(self, path: str | Path) -> Path:
        """Write as JSON (atomically)."""
        return write_text_atomic(Path(path), json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> AtomSetSpec:
        """Read :meth:`save`'s JSON."""
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise CrysgenError(f"{path} is not an atom-set spec: {exc}") from exc

    def codes(self) -> np.ndarray:
        """float32 (MAX_Z + 1, CODE_DIM): centred codes of every element."""
        return element_code_table() - np.asarray(self.code_mean, np.float32)


@dataclass
class AtomSets:
    """Encoded crystals (see the module docstring for shapes and units)."""

    types: np.ndarray
    frac: np.ndarray
    lattice: np.ndarray
    mask: np.ndarray
    atomic_numbers: np.ndarray
    num_elements: np.ndarray | None = None
    """Int (N,) distinct elements each sample was conditioned on (a sampler's draw), or None."""
    repair_rounds: np.ndarray | None = None
    """Int (N,) rounds of a sampler's ``repair`` in which each sample was sampled again (0: none),
    or None (no repair asked for)."""

    def __len__(self) -> int:
        return len(self.mask)


MAX_ELEMENTS = 16
"""Distinct elements per crystal that the size histogram and the conditioning tell apart (more
count as this many)."""


def num_elements(atomic_numbers: np.ndarray) -> np.ndarray:
    """Int (N,) distinct elements per row of an (N, S) atomic-number array (0 = padding).

    Counts above :data:`MAX_ELEMENTS` are capped at it.
    """
    z = np.sort(np.asarray(atomic_numbers, np.int64), axis=1)
    new = (z > 0) & np.concatenate([np.ones((len(z), 1), bool), z[:, 1:] != z[:, :-1]], axis=1)
    return np.minimum(new.sum(1), MAX_ELEMENTS)


def _size_counts(crystals: CrystalSet, max_atoms: int) -> list[list[int]]:
    counts = np.zeros((max_atoms + 1, MAX_ELEMENTS + 1), np.int64)
    np.add.at(counts, (np.minimum(crystals.num_sites.astype(int), max_atoms),
                       num_elements(crystals.atomic_numbers)), 1)
    return counts.tolist()


def metric_tensor(lattice: np.ndarray) -> np.ndarray:
    """Cells a, b, c (Å), α, β, γ (degrees) (N, 6) -> their metrics G (N, 3, 3) (Å², G_ij = v_i · v_j)."""
    lat = np.asarray(lattice, np.float64)
    a, b, c = lat[:, 0], lat[:, 1], lat[:, 2]
    ca, cb, cg = np.cos(np.radians(lat[:, 3:])).T
    return np.stack([np.stack([a * a, a * b * cg, a * c * cb], -1),
                     np.stack([a * b * cg, b * b, b * c * ca], -1),
                     np.stack([a * c * cb, b * c * ca, c * c], -1)], 1)


def _lattice_features(lattice: np.ndarray, num_sites: np.ndarray, code: str = "lengths_angles") -> np.ndarray:
    """(N, 6) unstandardised features of ``code`` (see the module docstring)."""
    lat = np.asarray(lattice, np.float64)
    log_n = np.log(np.maximum(num_sites, 1))[:, None] / 3.0
    if code == "cholesky":
        chol = np.linalg.cholesky(metric_tensor(lat))
        diag = np.diagonal(chol, axis1=1, axis2=2)
        shears = np.stack([chol[:, 1, 0] / diag[:, 0], chol[:, 2, 0] / diag[:, 0],
                           chol[:, 2, 1] / diag[:, 1]], -1)
        return np.concatenate([np.log(diag) - log_n, shears], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lengths = np.log(lat[:, :3]) - log_n
    return np.concatenate([lengths, np.radians(lat[:, 3:])], axis=1)


def lattice_features(lattice: np.ndarray, num_sites: np.ndarray, spec: AtomSetSpec) -> np.ndarray:
    """Cells a, b, c (Å), α, β, γ (degrees) (N, 6) -> the model's standardised lattice features (N, 6).

    The inverse of :func:`lattice_parameters`; ``num_sites`` (N,) the cells' numbers of sites.
    """
    feats = _lattice_features(lattice, np.asarray(num_sites), spec.lattice_code)
    return (feats - np.asarray(spec.lattice_mean)) / np.asarray(spec.lattice_std)


def encode(crystals: CrystalSet, spec: AtomSetSpec) -> AtomSets:
    """CrystalSet -> :class:`AtomSets` with S = ``spec.max_atoms``.

    Raises:
        CrysgenError: for a crystal with more sites than S or a non-positive lattice length.
    """
    n, s = len(crystals), spec.max_atoms
    ns = crystals.num_sites.astype(int)
    if len(crystals) and ns.max() > s:
        raise CrysgenError(f"{int((ns > s).sum())} crystals have more than {s} sites")
    if np.any(crystals.lattice[:, :3] <= 0) or not np.all(np.isfinite(crystals.lattice)):
        raise CrysgenError("lattice lengths must be positive and finite")
    width = min(s, crystals.atomic_numbers.shape[1])
    z = np.zeros((n, s), np.int64)
    z[:, :width] = crystals.atomic_numbers[:, :width]
    frac = np.zeros((n, s, 3), np.float32)
    frac[:, :width] = np.mod(crystals.frac_coords[:, :width], 1.0)
    mask = z > 0
    types = spec.codes()[np.minimum(z, MAX_Z)] * mask[..., None]
    feats = lattice_features(crystals.lattice, ns, spec)
    return AtomSets(types.astype(np.float32), frac * mask[..., None], feats.astype(np.float32), mask, z)


def lattice_parameters(features: np.ndarray, num_sites: np.ndarray, spec: AtomSetSpec) -> np.ndarray:
    """Standardised lattice features (N, 6) -> a, b, c (Å), α, β, γ (degrees)."""
    raw = np.asarray(features, np.float64) * np.asarray(spec.lattice_std) + np.asarray(spec.lattice_mean)
    with np.errstate(over="ignore", invalid="ignore"):
        scale = np.exp(raw[:, :3] + np.log(np.maximum(num_sites, 1))[:, None] / 3.0)
        if spec.lattice_code != "cholesky":
            return np.concatenate([scale, np.degrees(raw[:, 3:])], axis=1)
        zero = np.zeros(len(raw))
        vectors = np.stack([np.stack([scale[:, 0], zero, zero], -1),
                            np.stack([raw[:, 3] * scale[:, 0], scale[:, 1], zero], -1),
                            np.stack([raw[:, 4] * scale[:, 0], raw[:, 5] * scale[:, 1], scale[:, 2]], -1)], 1)
        lengths = np.linalg.norm(vectors, axis=2)
        cos = np.stack([(vectors[:, 1] * vectors[:, 2]).sum(1) / (lengths[:, 1] * lengths[:, 2]),
                        (vectors[:, 0] * vectors[:, 2]).sum(1) / (lengths[:, 0] * lengths[:, 2]),
                        (vectors[:, 0] * vectors[:, 1]).sum(1) / (lengths[:, 0] * lengths[:, 1])], -1)
    return np.concatenate([lengths, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))], axis=1)


def nearest_elements(types: np.ndarray, allowed: list[int], spec: AtomSetSpec) -> np.ndarray:
    """Int (..., ) atomic numbers: for each code in ``types`` (..., D), the nearest allowed one."""
    allowed_z = np.asarray(sorted(allowed), np.int64)
    return nearest_rows(types, spec.codes()[allowed_z], allowed_z)


def nearest_elements_at_most(types: np.ndarray, mask: np.ndarray, allowed: list[int], spec: AtomSetSpec,
                             limit: np.ndarray) -> np.ndarray:
    """Int (N, S) atomic numbers: nearest allowed elements, at most ``limit[i]`` distinct per sample.

    Each real site first takes its nearest allowed element (:func:`nearest_elements`). Where that
    gives a sample more distinct elements than its limit, the ``limit[i]`` elements holding the
    most sites are kept (ties: the smaller summed squared distance of their sites' codes) and
    every real site takes the nearest of those. Samples at or under their limit, and limits of 0
    or below (none), are unchanged; padding is 0.

    Args:
        types: float (N, S, D) sampled element codes.
        mask: bool (N, S) real sites.
        allowed: atomic numbers the codes may stand for.
        spec: the model's spec (its element codes).
        limit: int (N,) the most distinct elements per sample (e.g. the count a model was
            conditioned on).
    """
    mask = np.asarray(mask, bool)
    z = nearest_elements(types, allowed, spec) * mask
    allowed_z = np.asarray(sorted(allowed), np.int64)
    table = spec.codes()[allowed_z].astype(np.float64)
    row = {int(a): j for j, a in enumerate(allowed_z)}
    for i in np.flatnonzero(np.asarray(limit) > 0):
        k = int(limit[i])
        present, counts = np.unique(z[i][mask[i]], return_counts=True)
        if len(present) <= k:
            continue
        codes = np.asarray(types[i][mask[i]], np.float64)
        spread = np.array([((codes[z[i][mask[i]] == e] - table[row[int(e)]]) ** 2).sum() for e in present])
        keep = present[np.lexsort((spread, -counts))[:k]]
        z[i][mask[i]] = nearest_rows(codes, table[[row[int(e)] for e in keep]], keep)
    return z


@dataclass
class AtomDecodeResult:
    """Decoded crystals with the input index of each and a reason for every failure."""

    crystals: CrystalSet
    index: np.ndarray
    failures: list[tuple[int, str]]


def decode(sets: AtomSets, spec: AtomSetSpec, *, ids: list[str] | None = None,
           atomic_numbers: np.ndarray | None = None,
           max_elements: np.ndarray | None = None, empty_sites: bool = False) -> AtomDecodeResult:
    """:class:`AtomSets` (as sampled: ``types`` may be noisy codes) -> crystals.

    Args:
        sets: encoded or generated arrays; ``sets.atomic_numbers`` is ignored.
        spec: the model's spec (allowed elements, lattice statistics).
        ids: one id per input (default ``sample_i``).
        atomic_numbers: int (N, S) elements to use as given (composition-conditioned sampling:
            no nearest-code snapping); None snaps ``types`` to the spec's elements.
        max_elements: int (N,) the most distinct elements each sample may snap to (see
            :func:`nearest_elements_at_most`; e.g. the counts an element-count model was
            conditioned on); None: every site snaps on its own.
        empty_sites: the sets hold empty sites (a model trained with ``edm.empty_sites``): a
            token whose code is nearest to no element's (:meth:`AtomSetSpec.codes` row 0) is
            dropped, and the lattice lengths are read per token (``sets.mask``, real and empty),
            as such a model makes them. Only without ``atomic_numbers`` and ``max_elements``.

    A sample fails (with a reason, never an exception) for non-finite numbers, no site, or a
    lattice that is no real cell (lengths outside 0.5-1000 Å, or angles that give no volume).

    Raises:
        CrysgenError: for ``empty_sites`` with ``atomic_numbers`` or ``max_elements``.
    """
    n = len(sets)
    ids = list(ids) if ids is not None else [f"sample_{i}" for i in range(n)]
    mask = np.asarray(sets.mask, bool)
    if empty_sites and (atomic_numbers is not None or max_elements is not None):
        raise CrysgenError("empty sites are decoded only for de novo samples without an element limit")
    if atomic_numbers is not None:
        z = np.asarray(atomic_numbers, np.int64) * mask
    elif max_elements is not None:
        z = nearest_elements_at_most(sets.types, mask, spec.elements, spec, max_elements)
    else:
        z = nearest_elements(sets.types, [0, *spec.elements] if empty_sites else spec.elements, spec) * mask
    real = mask & (z > 0) if empty_sites else mask
    params = lattice_parameters(sets.lattice, mask.sum(1), spec)
    num = real.sum(1)
    failures: list[tuple[int, str]] = []
    keep: list[int] = []
    for i in range(n):
        reason = _failure(sets, params[i], num[i], i)
        if reason:
            failures.append((i, reason))
        else:
            keep.append(i)
    keep_a = np.asarray(keep, np.int64)
    s = mask.shape[1]
    order = np.argsort(~real, axis=1, kind="stable")  # real sites first, in their order
    zz = np.take_along_axis(z, order, 1)[keep_a] if len(keep_a) else np.zeros((0, s), np.int64)
    ff = (np.take_along_axis(np.mod(sets.frac, 1.0), order[..., None], 1)[keep_a] if len(keep_a)
          else np.zeros((0, s, 3)))
    ff = np.where(zz[..., None] > 0, ff, 0.0)
    crystals = CrystalSet(atomic_numbers=zz, frac_coords=ff, lattice=params[keep_a],
                          space_group=np.zeros(len(keep_a), np.int16), num_sites=num[keep_a],
                          ids=np.asarray([ids[i] for i in keep], dtype=str),
                          metadata={"source": "atom_set_decode"})
    return AtomDecodeResult(crystals, keep_a, failures)


def _failure(sets: AtomSets, params: np.ndarray, num: int, i: int) -> str:
    if num == 0:
        return "no_atoms: the sample has no site"
    arrays = (sets.types[i][sets.mask[i]], sets.frac[i][sets.mask[i]], sets.lattice[i])
    if not all(np.all(np.isfinite(a)) for a in arrays):
        return "not_finite: NaN or infinite values in the sample"
    a, b, c, al, be, ga = params
    if not (min(a, b, c) >= 0.5 and max(a, b, c) <= 1000.0):
        return f"impossible_lattice: lengths {a:.3g}, {b:.3g}, {c:.3g} Å"
    ca, cb, cg = np.cos(np.radians([al, be, ga]))
    vol2 = 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg
    if not (0 < al < 180 and 0 < be < 180 and 0 < ga < 180) or vol2 <= 1e-4:
        return f"impossible_lattice: angles {al:.1f}, {be:.1f}, {ga:.1f}° give no volume"
    return ""


def niggli_reduce(crystals: CrystalSet) -> CrystalSet:
    """The same crystals in their Niggli-reduced cells (pymatgen), as DiffCSP and CDVAE use.

    Sites keep their order; a crystal pymatgen cannot reduce keeps its cell. The reduced basis is
    an integer combination M of the old one, so fractional coordinates map exactly (f M^-1).
    """
    from pymatgen.core import Lattice

    lattice = crystals.lattice.copy()
    frac = crystals.frac_coords.copy()
    for i in range(len(crystals)):
        k = int(crystals.num_sites[i])
        lat = Lattice.from_parameters(*crystals.lattice[i])
        try:
            red = lat.get_niggli_reduced_lattice()  # expressed in the original frame
        except Exception:  # pymatgen's reduction can fail to converge on degenerate cells
            continue
        m = np.rint(red.matrix @ np.linalg.inv(lat.matrix))
        lattice[i] = red.parameters
        frac[i, :k] = np.mod(crystals.frac_coords[i, :k] @ np.linalg.inv(m), 1.0)
    out = CrystalSet(crystals.atomic_numbers, frac, lattice, crystals.space_group, crystals.num_sites,
                     crystals.ids, dict(crystals.properties), dict(crystals.metadata))
    out.metadata["cell"] = "niggli"
    return out
