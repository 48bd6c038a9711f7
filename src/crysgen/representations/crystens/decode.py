"""CrysTens tensors -> crystals: result types, checks and the steps both decoders share.

Two decoders build on this module: :mod:`.faithful` (the paper's post-processing, bugs fixed)
and :mod:`.auto` (no fixed K, periodic, robust atom count). Use :func:`decode`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.data.guards import check_symprec
from crysgen.errors import CrysgenError
from crysgen.representations.crystens.layout import (
    CODE_ROW,
    CODE_ROWS,
    GLOBAL,
    HEADER,
    N_HEADER,
    CrysTensLayout,
)
from crysgen.representations.crystens.scaling import CrysTensScaling
from crysgen.representations.elements import CODE_DIM

DecodeMode = Literal["auto", "faithful"]
DECODE_MODES: tuple[DecodeMode, ...] = ("auto", "faithful")
ElementRule = Literal["map", "round"]
ELEMENT_RULES: tuple[ElementRule, ...] = ("map", "round")

DIAGNOSTICS = {
    "num_atoms": "detected number of sites A",
    "space_group_float": "mean of the 8A space-group copies (not rounded)",
    "var_lattice_params": "Table 1: variance of the 8A copies of a, b, c, mean over a, b, c (Å²)",
    "var_lattice_angles": "Table 1: variance of the 8A copies of alpha, beta, gamma (deg²)",
    "var_space_group": "Table 1: variance of the 8A space-group copies",
    "var_frac_coords": "Table 1: variance of the 8 copies of x, y, z, mean over sites (frac²)",
    "coord_agreement": "Table 2: mean |own - consensus| / A over sites and axes (frac)",
    "pairwise_error": "Table 2: sum |layer 0 - distances of the consensus coords| / A (frac)",
}


MAX_COPY_SPREAD = 0.5 / np.sqrt(12)
"""Half the copy spread of random numbers: independent U(0, 1) copies spread by 1/√12 ≈ 0.29 (std,
scaled units), an encoded crystal by 0, one with Gaussian noise σ by about σ (so σ = 0.1 passes),
and 64 samples of the bundled CrysTens model by at most 0.09."""


@dataclass(frozen=True)
class DecodeOptions:
    """How to turn tensors into crystals.

    Attributes:
        mode: "faithful" (the paper's post-processing) or "auto" (ours).
        range_tolerance: a tensor with a value outside [-tol, 1 + tol] is garbage.
        alpha_threshold: faithful atom count: relative change of alpha that ends the sites.
        atom_clusters: faithful K-means k for atomic numbers (k = min(k, A)).
        coord_clusters: faithful K-means k for pooled coordinates (k = min(k, 3A)).
        symprec: auto only: if set, snap the decoded crystal to the symmetry spglib finds
            with this tolerance (Å); kept only when the site count does not change.
        seed: random state of the faithful K-means.
        elements: auto only: "map" (default: with element codes in the layout, the allowed
            element nearest to each site's code and Z; without, the MAP element set with the
            training priors) or "round" (each site's 8-copy Z mean rounded; the naive baseline,
            for ablations).
        max_copy_spread: a tensor whose site attributes' 8 copies spread more than this (their
            std in scaled units, over the non-empty site rows; see :func:`copy_spread`) is far
            from any crystal and fails; None: no such check.
    """

    mode: DecodeMode = "auto"
    range_tolerance: float = 0.25
    alpha_threshold: float = 0.2
    atom_clusters: int = 3
    coord_clusters: int = 6
    symprec: float | None = None
    seed: int = 0
    elements: ElementRule = "map"
    max_copy_spread: float | None = MAX_COPY_SPREAD

    def __post_init__(self) -> None:
        if self.max_copy_spread is not None and not self.max_copy_spread > 0:
            raise CrysgenError(f"max_copy_spread must be positive, got {self.max_copy_spread}")
        if self.elements not in ELEMENT_RULES:
            raise CrysgenError(
                f"unknown element rule {self.elements!r}; choose one of {', '.join(ELEMENT_RULES)}"
            )
        if self.mode not in DECODE_MODES:
            raise CrysgenError(
                f"unknown decode mode {self.mode!r}; choose one of {', '.join(DECODE_MODES)}"
            )
        if self.symprec is not None:
            check_symprec(self.symprec, "symprec")  # NaN and <= 0 refused


@dataclass
class DecodeFailure:
    """A tensor that could not be decoded, and why."""

    index: int
    reason: str


@dataclass
class DecodeResult:
    """What :func:`decode` returns.

    Attributes:
        crystals: the decoded crystals, in input order, failures left out.
        index: int (len(crystals),): input index of each decoded crystal.
        diagnostics: name (see :data:`DIAGNOSTICS`) -> float64 (N,), NaN where it failed.
        failures: one entry per tensor that could not be decoded.
        repair_rounds: int (N,) rounds of an atom diffusion sampler's ``repair`` in which each
            input was sampled again (0: none), or None (no repair asked for).
    """

    crystals: CrystalSet
    index: np.ndarray
    diagnostics: dict[str, np.ndarray]
    failures: list[DecodeFailure] = field(default_factory=list)
    repair_rounds: np.ndarray | None = None

    @property
    def n_input(self) -> int:
        """Number of tensors given."""
        return len(self.crystals) + len(self.failures)

    def failure_counts(self) -> dict[str, int]:
        """Number of failures per kind of reason (the text before the first colon)."""
        counts: dict[str, int] = {}
        for f in self.failures:
            counts[failure_kind(f.reason)] = counts.get(failure_kind(f.reason), 0) + 1
        return dict(sorted(counts.items()))

    def mean_diagnostics(self) -> dict[str, float]:
        """Mean of every diagnostic over the decoded samples (NaN-aware)."""
        out = {}
        for k, v in self.diagnostics.items():
            ok = np.isfinite(v)
            out[k] = float(v[ok].mean()) if ok.any() else float("nan")
        return out


def failure_kind(reason: str) -> str:
    """The kind of a failure reason: the text before its details (before the first colon)."""
    return reason.split(":")[0]


def decode(
    tensors: np.ndarray,
    scaling: CrysTensScaling,
    options: DecodeOptions | None = None,
    *,
    ids: list[str] | np.ndarray | None = None,
    atomic_numbers: np.ndarray | None = None,
) -> DecodeResult:
    """Decode scaled CrysTens tensors into crystals.

    Args:
        tensors: (N, 4, size, size) or (4, size, size), channel first, scaled to [0, 1]; size
            is the scaling's layout's (64 for the paper's).
        scaling: the scaling the tensors were made with (its layout gives their shape).
        options: decoder settings (default: auto mode).
        ids: one id per tensor for the output crystals; default "0", "1", ...
        atomic_numbers: int (N, k <= S), the given composition of every tensor (0 = no site;
            sites fill rows 0..A-1): both decoders then take A and each site row's element as
            given instead of estimating them, and keep every site (no merging of repeats), so a
            decoded crystal has exactly this composition (composition-controlled sampling).

    Returns:
        The decoded crystals, per-sample diagnostics and per-sample failures. A bad sample
        never raises; only a batch of the wrong shape does. An empty batch (0, 4, size, size)
        gives an empty result.

    Raises:
        CrysgenError: if ``tensors`` does not have shape (N, 4, size, size), or for
            ``atomic_numbers`` of another length or that the layout cannot hold.
    """
    from threadpoolctl import threadpool_limits

    from crysgen.representations.crystens import auto, faithful

    options = options or DecodeOptions()
    t = np.asarray(tensors)
    if t.ndim == 3:
        t = t[None]
    shape = scaling.layout.shape()
    if t.ndim != 4 or t.shape[1:] != shape:
        raise CrysgenError(
            f"CrysTens tensors of this scaling's layout ({scaling.layout.sites} sites"
            f"{', element codes' if scaling.layout.element_code else ''}) must have shape "
            f"(N, {', '.join(map(str, shape))}), got {np.shape(tensors)}"
        )
    ids = np.asarray([str(i) for i in range(len(t))] if ids is None else ids, dtype=str)
    if len(ids) != len(t):
        raise CrysgenError(f"{len(ids)} ids for {len(t)} tensors")
    if len(t) == 0:  # an empty batch decodes to an empty result
        return finish_batch([], [], {k: np.zeros(0) for k in DIAGNOSTICS}, ids, scaling.layout.sites)
    given = None
    if atomic_numbers is not None:
        from crysgen.representations.crystens.composition import check_compositions

        given = check_compositions(atomic_numbers, scaling)
        if len(given) != len(t):
            raise CrysgenError(f"{len(given)} compositions for {len(t)} tensors")
    impl = auto.decode_batch if options.mode == "auto" else faithful.decode_batch
    # one OpenMP thread: the per-crystal k-means of faithful decoding is tiny, and OpenMP's
    # spinning threads beside torch's made it over ten times slower on two busy cores
    with threadpool_limits(limits=1, user_api="openmp"):
        return impl(t, scaling, options, ids, given)


# ---------------------------------------------------------------------- shared steps
def check_tensors(hwc: np.ndarray, tolerance: float) -> list[str | None]:
    """Per-sample garbage checks on scaled (N, size, size, 4) tensors; None = fine."""
    flat = hwc.reshape(len(hwc), -1)
    finite = np.isfinite(flat).all(1)
    safe = np.where(finite[:, None], flat, 0.0)
    lows, highs = safe.min(1), safe.max(1)
    reasons: list[str | None] = []
    for ok, lo, hi in zip(finite, lows.tolist(), highs.tolist(), strict=True):
        if not ok:
            reasons.append("tensor contains NaN or infinite values")
        elif lo == 0.0 and hi == 0.0:
            reasons.append("empty tensor (all zeros): no atoms")
        elif lo < -tolerance or hi > 1 + tolerance:
            reasons.append(f"values outside [0, 1]: min {lo:.3g}, max {hi:.3g}")
        else:
            reasons.append(None)
    return reasons


def unscale(hwc: np.ndarray, scaling: CrysTensScaling, present: np.ndarray) -> np.ndarray:
    """Raw values of a scaled (N, size, size, 4) batch, for the present sites only.

    Header strips of present sites and adjacency entries between two different present sites
    are un-scaled; everything else (diagonal, absent rows, element codes) keeps its scaled value,
    as in the authors' code.

    Args:
        hwc: scaled tensors (N, size, size, 4).
        scaling: the ranges and layout.
        present: bool (N, S).

    Returns:
        float64 (N, size, size, 4).
    """
    o = scaling.layout.site_offset
    raw = hwc.astype(np.float64)
    lo, span = scaling.lo(HEADER), scaling.span(HEADER)
    rows = raw[:, o:, :N_HEADER, :]
    raw[:, o:, :N_HEADER, :] = np.where(
        present[:, :, None, None], rows * span[None, None, :, None] + lo[None, None, :, None], rows
    )
    cols = raw[:, :N_HEADER, o:, :]
    raw[:, :N_HEADER, o:, :] = np.where(
        present[:, None, :, None], cols * span[None, :, None, None] + lo[None, :, None, None], cols
    )
    pair = present[:, :, None] & present[:, None, :] & ~np.eye(present.shape[1], dtype=bool)[None]
    block = raw[:, o:, o:, :]
    block[..., 0] = np.where(pair, scaling.unscale(block[..., 0], "length"), block[..., 0])
    block[..., 1:] = np.where(pair[..., None], scaling.unscale(block[..., 1:], "dir"), block[..., 1:])
    return raw


def header_copies(t: np.ndarray, layout: CrysTensLayout) -> np.ndarray:
    """The 8 copies of each site's header attributes: (N, size, size, 4) -> (N, S, 11, 8)."""
    o = layout.site_offset
    rows = t[:, o:, :N_HEADER, :]
    cols = t[:, :N_HEADER, o:, :].transpose(0, 2, 1, 3)
    return np.concatenate([rows, cols], axis=-1)


def code_copies(t: np.ndarray, layout: CrysTensLayout) -> np.ndarray:
    """The 2 copies of each site's element code: (N, size, size, 4) -> (N, S, 39, 2).

    Entry ``c`` is read from code row ``c // 4``, layer ``c % 4`` of the row strip and of the
    column strip (see :mod:`crysgen.representations.crystens.layout`).

    Raises:
        CrysgenError: if the layout has no element code.
    """
    if not layout.element_code:
        raise CrysgenError("this CrysTens layout has no element code rows")
    o, n, s = layout.site_offset, len(t), layout.sites
    code = slice(CODE_ROW, CODE_ROW + CODE_ROWS)
    rows = t[:, o:, code, :].reshape(n, s, -1)[..., :CODE_DIM]  # (N, S, rows*4): c = 4 r + l
    cols = t[:, code, o:, :].transpose(0, 2, 1, 3).reshape(n, s, -1)[..., :CODE_DIM]
    return np.stack([rows, cols], axis=-1)


def table1_variances(copies: np.ndarray, num_atoms: np.ndarray) -> dict[str, np.ndarray]:
    """The paper's Table 1 variances, computed on raw copies before any consensus.

    Args:
        copies: raw header copies (N, S, 11, 8).
        num_atoms: int (N,), the detected A (0 gives NaN).

    Returns:
        var_lattice_params (Å²), var_lattice_angles (deg²), var_space_group and
        var_frac_coords (frac², x, y and z included), each float64 (N,).
    """
    a = np.maximum(num_atoms, 1)[:, None]
    present = (np.arange(copies.shape[1])[None, :] < num_atoms[:, None]).astype(float)
    m = present[:, :, None, None]
    # population variance over the 8A copies of each global attribute
    s1 = (copies * m).sum(axis=(1, 3))
    s2 = (copies**2 * m).sum(axis=(1, 3))
    mean = s1 / (8 * a)
    glob_var = np.maximum(s2 / (8 * a) - mean**2, 0.0)  # (N, 11)
    site_var = copies[:, :, 1:4, :].var(axis=-1)  # (N, 52, 3)
    frac_var = (site_var * present[:, :, None]).sum(axis=(1, 2)) / (3 * a[:, 0])
    out = {
        "var_lattice_params": glob_var[:, 4:7].mean(1),
        "var_lattice_angles": glob_var[:, 7:10].mean(1),
        "var_space_group": glob_var[:, 10],
        "var_frac_coords": frac_var,
    }
    bad = num_atoms < 1
    for v in out.values():
        v[bad] = np.nan
    return out


def table2_agreement(
    own: np.ndarray, final: np.ndarray, layer0: np.ndarray, num_atoms: int
) -> tuple[float, float]:
    """The paper's Table 2 quantities for one crystal.

    Args:
        own: (A, 3) coordinates read from the header (8-copy means).
        final: (A, 3) consensus coordinates before clustering and wrapping.
        layer0: (A, A) symmetrised raw layer-0 block (fractional distances).
        num_atoms: A.

    Returns:
        (coord_agreement, pairwise_error): mean |own - final| / A, and
        sum |layer0 - distances(final)| / A (no periodic images, as coded).
    """
    a = max(num_atoms, 1)
    coord = float(np.abs(own - final).mean() / a)
    d = np.sqrt(((final[:, None, :] - final[None, :, :]) ** 2).sum(-1))
    return coord, float(np.abs(layer0 - d).sum() / a)


def lattice_problem(lattice: np.ndarray) -> str | None:
    """Why six lattice parameters (Å, degrees) cannot make a cell, or None."""
    if not np.all(np.isfinite(lattice)):
        return "impossible lattice: non-finite parameters"
    a, b, c, al, be, ga = lattice
    if min(a, b, c) <= 0.1:
        return f"impossible lattice: length {min(a, b, c):.3g} Å"
    if not all(0 < x < 180 for x in (al, be, ga)):
        return f"impossible lattice: angles {al:.1f}, {be:.1f}, {ga:.1f}"
    ca, cb, cg = np.cos(np.radians([al, be, ga]))
    if 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg <= 1e-6:
        return f"impossible lattice: angles {al:.1f}, {be:.1f}, {ga:.1f} give no volume"
    return None


def global_consensus(copies: np.ndarray, num_atoms: np.ndarray) -> np.ndarray:
    """Mean of the 8A copies of a, b, c, alpha, beta, gamma, sg: (N, S, 11, 8) -> (N, 7)."""
    m = (np.arange(copies.shape[1])[None, :] < num_atoms[:, None]).astype(float)
    s = (copies[:, :, GLOBAL, :] * m[:, :, None, None]).sum(axis=(1, 3))
    return s / (8 * np.maximum(num_atoms, 1)[:, None])


def assemble(
    rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int]], ids: np.ndarray, sites: int
) -> tuple[CrystalSet, np.ndarray]:
    """The output CrystalSet (S = ``sites``) from (index, Z (A,), frac (A, 3), lattice, sg) rows."""
    n = len(rows)
    z = np.zeros((n, sites), np.int16)
    f = np.zeros((n, sites, 3))
    lat = np.zeros((n, 6))
    sg = np.zeros(n, np.int16)
    ns = np.zeros(n, np.int16)
    for k, (_, zs, fs, la, g) in enumerate(rows):
        z[k, : len(zs)], f[k, : len(zs)], lat[k], sg[k], ns[k] = zs, fs, la, g, len(zs)
    index = np.array([r[0] for r in rows], dtype=np.int64)
    crystals = CrystalSet(z, f, lat, sg, ns, ids[index] if n else np.array([], str),
                          metadata={"source": "crystens.decode"})
    return crystals, index


def copy_spread(scaled_copies: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per-sample std of the 8 copies of the site attributes, pooled over the present rows.

    Args:
        scaled_copies: scaled header copies (N, S, 11, 8).
        present: bool (N, S), the rows to pool.

    Returns:
        float64 (N,) in scaled units (0 for exact copies; 0 where no row is present).
    """
    var = scaled_copies.var(axis=-1, ddof=1).mean(-1)  # (N, S)
    count = np.maximum(present.sum(1), 1)
    return np.sqrt((var * present).sum(1) / count)


def start_batch(
    tensors: np.ndarray, options: DecodeOptions, layout: CrysTensLayout
) -> tuple[np.ndarray, list[str | None], dict[str, np.ndarray]]:
    """Common first step of both decoders: the garbage checks.

    :func:`check_tensors`, then the copies' spread against ``options.max_copy_spread``.

    Returns:
        The batch as (N, size, size, 4) float64 with garbage samples zeroed, the per-sample
        garbage reasons (None = fine), and NaN-filled diagnostics arrays.
    """
    hwc = tensors.transpose(0, 2, 3, 1)
    reasons = check_tensors(hwc, options.range_tolerance)
    ok = np.array([r is None for r in reasons])
    safe = np.where(ok[:, None, None, None], hwc, 0.0).astype(np.float64)
    if options.max_copy_spread is not None and ok.any():
        copies = header_copies(safe, layout)
        spread = copy_spread(copies, (copies != 0).any(axis=(2, 3)))
        for i in np.flatnonzero(ok & (spread > options.max_copy_spread)):
            reasons[i] = (f"far from any crystal: the 8 copies of its site attributes spread by "
                          f"{spread[i]:.3f} (scaled std; random numbers: 0.29, limit "
                          f"{options.max_copy_spread:.3f})")
            safe[i] = 0.0
    return safe, reasons, {k: np.full(len(hwc), np.nan) for k in DIAGNOSTICS}


def finish_batch(
    rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int]],
    failures: list[DecodeFailure],
    diagnostics: dict[str, np.ndarray],
    ids: np.ndarray,
    sites: int,
) -> DecodeResult:
    """Common last step of both decoders: failures get NaN diagnostics; crystals are built.

    ``sites`` is S, the width of the output CrystalSet.
    """
    failed = [f.index for f in failures]
    for v in diagnostics.values():
        v[failed] = np.nan
    crystals, index = assemble(rows, ids, sites)
    return DecodeResult(crystals=crystals, index=index, diagnostics=diagnostics, failures=failures)
