"""Min-max scaling of CrysTens features to [0, 1] (seed_code.md §1.5, scheme ``avg_std``).

The paper's ``avg_std`` normalisation is exactly min-max scaling with the training set's min and
max; only entries of present sites are scaled, the diagonal and empty rows stay 0. A scaling is
fitted on a training CrystalSet, saved as JSON next to every model, and the paper's ranges are
available as the ``paper`` preset.

The scaling is the codec's fitted state, so it also carries the tensor's
:class:`~crysgen.representations.crystens.layout.CrysTensLayout` (number of site rows, element
codes): ``encode`` and ``decode`` read the shape from it, and a model directory's
``scaling.json`` tells every later stage which layout the model was trained on. A file written
before layouts existed has the paper's (52 sites, no element code). Element codes are already in
[0, 1] and are not rescaled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.representations.crystens.layout import HEADER, CrysTensLayout
from crysgen.representations.elements import MAX_Z

FEATURES = (*HEADER, "length", "dir")
"""Header attributes, then the adjacency block: layer 0 ("length") and layers 1-3 ("dir")."""
_FORMAT = "crysgen.crystens.scaling"

# seed_code.md §1.5: ranges implied by the authors' stored (mean, std, c2, c3) constants.
PAPER_RANGES: dict[str, tuple[float, float]] = {
    "Z": (1.0, 99.0),
    "x": (0.0, 0.99999),
    "y": (0.0, 0.99999),
    "z": (0.0, 0.99999),
    "a": (1.7624, 42.664),
    "b": (1.7624, 45.183),
    "c": (2.168, 116.195),
    "alpha": (59.767, 120.0),
    "beta": (59.702, 138.423),
    "gamma": (58.919, 120.0),
    "sg": (1.0, 230.0),
    "length": (0.021379, 1.65467),
    "dir": (-0.99999, 0.99999),
}


@dataclass(frozen=True)
class CrysTensScaling:
    """Per-feature ranges: ``scaled = (value - min) / (max - min)``.

    Attributes:
        ranges: feature name (see :data:`FEATURES`) -> (min, max) in raw units (Å, degrees,
            fractional, atomic number, space-group number).
        source: where the ranges come from ("paper" or the fitted data's description).
        element_counts: atomic number -> number of sites seen when fitting (empty for the
            preset). The auto decoder uses it as a prior when noise makes Z ambiguous.
        num_elements_counts: number of distinct elements -> number of crystals seen when
            fitting; the auto decoder's prior on how many elements a crystal has.
        layout: the tensor's shape (site rows, element codes); the paper's by default.
        num_sites_counts: number of sites -> number of crystals seen when fitting (empty for
            the preset and files written before it); composition control draws the number of
            formula units of a formula from it.
    """

    ranges: dict[str, tuple[float, float]]
    source: str = "custom"
    element_counts: dict[int, int] = field(default_factory=dict)
    num_elements_counts: dict[int, int] = field(default_factory=dict)
    layout: CrysTensLayout = field(default_factory=CrysTensLayout)
    num_sites_counts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [f for f in FEATURES if f not in self.ranges]
        if missing:
            raise CrysgenError(f"scaling lacks feature(s): {', '.join(missing)}")
        for name, (lo, hi) in self.ranges.items():
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise CrysgenError(f"scaling range of {name!r} is invalid: [{lo}, {hi}]")

    # ------------------------------------------------------------------ arrays
    def lo(self, names: tuple[str, ...] | list[str]) -> np.ndarray:
        """Minimums of ``names`` as a float64 vector."""
        return np.array([self.ranges[n][0] for n in names])

    def span(self, names: tuple[str, ...] | list[str]) -> np.ndarray:
        """``max - min`` of ``names`` as a float64 vector."""
        return np.array([self.ranges[n][1] - self.ranges[n][0] for n in names])

    def scale(self, values: np.ndarray, name: str) -> np.ndarray:
        """Scale raw values of one feature to [0, 1]."""
        lo, hi = self.ranges[name]
        return (values - lo) / (hi - lo)

    def unscale(self, values: np.ndarray, name: str) -> np.ndarray:
        """Inverse of :meth:`scale`."""
        lo, hi = self.ranges[name]
        return values * (hi - lo) + lo

    @property
    def max_z(self) -> int:
        """The largest atomic number this scaling covers (at least 1)."""
        return max(1, int(np.floor(self.ranges["Z"][1])))

    def allowed_elements(self) -> np.ndarray:
        """int64 atomic numbers a decoder may choose: those seen when fitting (or 1..max_z)."""
        seen = [z for z in self.element_counts if 1 <= z <= min(self.max_z, MAX_Z)]
        return np.array(sorted(seen) if seen else range(1, min(self.max_z, MAX_Z) + 1), np.int64)

    def element_log_prior(self) -> np.ndarray:
        """Log p(Z) for Z = 0..max_z (index = Z), Laplace-smoothed site counts; p(0) = 0."""
        counts = np.ones(self.max_z + 1)
        for z, c in self.element_counts.items():
            if 1 <= z <= self.max_z:
                counts[z] += c
        counts[0] = 0.0
        with np.errstate(divide="ignore"):
            return np.log(counts / counts.sum())

    def num_elements_log_prior(self, k_max: int = 52) -> np.ndarray:
        """Log p(K) for K = 0..k_max distinct elements (Laplace-smoothed crystal counts); p(0) = 0."""
        counts = np.ones(k_max + 1)
        for k, c in self.num_elements_counts.items():
            if 1 <= k <= k_max:
                counts[k] += c
        counts[0] = 0.0
        with np.errstate(divide="ignore"):
            return np.log(counts / counts.sum())

    # ------------------------------------------------------------------ construction
    @classmethod
    def paper(cls, layout: CrysTensLayout | None = None) -> CrysTensScaling:
        """The authors' ranges (seed_code.md §1.5), with the paper's layout unless given."""
        return cls(ranges=dict(PAPER_RANGES), source="paper", layout=layout or CrysTensLayout())

    @classmethod
    def fit(cls, crystals: CrystalSet, *, layout: CrysTensLayout | None = None,
            chunk: int = 2048) -> CrysTensScaling:
        """Fit min and max of every feature on the present sites of a training set.

        Constant features (every crystal has alpha = 90 degrees, or only carbon) get the range
        [0, 2v] (v maps to 0.5), so that present entries stay distinguishable from empty ones.
        The "dir" range is made symmetric so that a zero difference maps to 0.5.

        Args:
            crystals: the training crystals.
            layout: the tensor layout to record (default: the paper's 52 sites, no element code).
            chunk: crystals per vectorised block (bounds memory for the pairwise features).

        Raises:
            CrysgenError: for an empty set, a crystal with more sites than ``layout.sites``, or
                (with element codes) an element beyond Lr.
        """
        layout = layout or CrysTensLayout()
        if len(crystals) == 0 or int(crystals.num_sites.max()) == 0:
            raise CrysgenError("cannot fit a scaling on an empty CrystalSet")
        check_fits(crystals, layout)
        mask = crystals.site_mask
        header_lo = np.full(len(HEADER), np.inf)
        header_hi = np.full(len(HEADER), -np.inf)
        per_site = np.concatenate(
            [crystals.atomic_numbers[..., None].astype(float), crystals.frac_coords], axis=-1
        )[mask]
        header_lo[:4], header_hi[:4] = per_site.min(0), per_site.max(0)
        glob = np.concatenate([crystals.lattice, crystals.space_group[:, None].astype(float)], 1)
        header_lo[4:], header_hi[4:] = glob.min(0), glob.max(0)
        len_lo, len_hi, dir_max = np.inf, -np.inf, 0.0
        for start in range(0, len(crystals), chunk):
            f = crystals.frac_coords[start : start + chunk]
            m = mask[start : start + chunk]
            pair = m[:, :, None] & m[:, None, :]
            pair &= ~np.eye(f.shape[1], dtype=bool)[None]
            if not pair.any():
                continue
            diff = f[:, :, None, :] - f[:, None, :, :]
            dist = np.sqrt((diff**2).sum(-1))[pair]
            len_lo, len_hi = min(len_lo, dist.min()), max(len_hi, dist.max())
            dir_max = max(dir_max, float(np.abs(diff[pair]).max()))
        ranges = {name: _widen(lo, hi) for name, lo, hi in zip(HEADER, header_lo, header_hi, strict=True)}
        ranges["length"] = _widen(len_lo, len_hi) if np.isfinite(len_lo) else PAPER_RANGES["length"]
        ranges["dir"] = (-dir_max, dir_max) if dir_max > 0 else PAPER_RANGES["dir"]
        desc = crystals.metadata.get("source", "CrystalSet")
        zs, counts = np.unique(crystals.atomic_numbers[mask], return_counts=True)
        z_sorted = np.sort(np.where(mask, crystals.atomic_numbers, 0), axis=1)
        distinct = ((np.diff(z_sorted, axis=1) != 0) & (z_sorted[:, :-1] > 0)).sum(1)
        distinct += z_sorted[:, -1] > 0  # an empty crystal has 0 elements
        ks, kc = np.unique(distinct, return_counts=True)
        ns, nc = np.unique(crystals.num_sites, return_counts=True)
        return cls(ranges=ranges, source=f"fitted on {len(crystals)} crystals of {desc}",
                   element_counts={int(z): int(c) for z, c in zip(zs, counts, strict=True)},
                   num_elements_counts={int(k): int(c) for k, c in zip(ks, kc, strict=True)},
                   layout=layout,
                   num_sites_counts={int(k): int(c) for k, c in zip(ns, nc, strict=True)})

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "format": _FORMAT,
            "version": 1,
            "source": self.source,
            "element_counts": {str(k): v for k, v in sorted(self.element_counts.items())},
            "num_elements_counts": {
                str(k): v for k, v in sorted(self.num_elements_counts.items())
            },
            "ranges": {k: {"min": float(v[0]), "max": float(v[1])} for k, v in self.ranges.items()},
            "layout": self.layout.to_dict(),
            **({"num_sites_counts": {str(k): v for k, v in sorted(self.num_sites_counts.items())}}
               if self.num_sites_counts else {}),
        }

    def save(self, path: str | Path) -> Path:
        """Write the scaling as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrysTensScaling:
        """Inverse of :meth:`to_dict`."""
        if data.get("format") != _FORMAT:
            raise CrysgenError(f"not a CrysTens scaling (format {data.get('format')!r})")
        try:
            ranges = {k: (float(v["min"]), float(v["max"])) for k, v in data["ranges"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise CrysgenError(f"malformed scaling ranges: {exc}") from exc
        counts = {int(k): int(v) for k, v in data.get("element_counts", {}).items()}
        k_counts = {int(k): int(v) for k, v in data.get("num_elements_counts", {}).items()}
        n_counts = {int(k): int(v) for k, v in data.get("num_sites_counts", {}).items()}
        return cls(ranges=ranges, source=str(data.get("source", "custom")), element_counts=counts,
                   num_elements_counts=k_counts, layout=CrysTensLayout.from_dict(data.get("layout")),
                   num_sites_counts=n_counts)

    @classmethod
    def load(cls, path: str | Path) -> CrysTensScaling:
        """Read a scaling JSON; ``"paper"`` gives the preset.

        Raises:
            CrysgenError: if the file is missing or malformed.
        """
        if str(path) == "paper":
            return cls.paper()
        path = Path(path)
        if not path.is_file():
            raise CrysgenError(f"no such scaling file: {path} (use a JSON file or 'paper')")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CrysgenError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """Return (lo, hi), or (v - |v|, v + |v|) for a constant feature (v -> 0.5)."""
    lo, hi = float(lo), float(hi)
    if hi - lo > 1e-9 * max(1.0, abs(hi)):
        return lo, hi
    half = abs(lo) if lo != 0 else 1.0
    return lo - half, lo + half


def check_fits(crystals: CrystalSet, layout: CrysTensLayout) -> None:
    """Raise a clear error if some crystal cannot be written in ``layout``.

    Raises:
        CrysgenError: for a crystal with more sites than ``layout.sites``, or (with element codes)
            an element beyond Lr, which has no code.
    """
    if len(crystals) and int(crystals.num_sites.max()) > layout.sites:
        n = int((crystals.num_sites > layout.sites).sum())
        raise CrysgenError(
            f"this CrysTens layout holds at most {layout.sites} sites; {n} crystal(s) have more "
            f"(largest {int(crystals.num_sites.max())}): choose more sites (--sites) or filter "
            f"with `crysgen data prepare --max-sites {layout.sites}`")
    if layout.element_code and len(crystals) and int(crystals.atomic_numbers.max()) > MAX_Z:
        raise CrysgenError(f"element Z={int(crystals.atomic_numbers.max())} has no element code "
                           f"(at most {MAX_Z}); drop it with `crysgen data prepare --max-z`")
