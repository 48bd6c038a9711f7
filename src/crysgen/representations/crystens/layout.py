"""Index layout of the CrysTens tensor (Alverson et al. 2024; seed_code.md §1.1-1.3).

The paper's layout (the default, and the one the faithful decoder and the GAN/WGAN networks
are built for) is 64 x 64 x 4; in its (row, column, layer) view:

* rows/columns 0-10 are the header strips: attribute ``k`` of site ``s`` (Z, x, y, z, a, b, c,
  alpha, beta, gamma, space group) is written to both ``T[k, o+s, l]`` and ``T[o+s, k, l]`` for
  every layer ``l`` (8 copies), with ``o`` the site offset (12);
* row/column 11 is zero padding;
* rows/columns 12-63 are sites 0-51; the 52x52 block holds, for sites i, j, the fractional
  Euclidean distance (layer 0, no periodic images) and the signed fractional differences
  ``x_i - x_j``, ``y_i - y_j``, ``z_i - z_j`` (layers 1-3, row minus column, not wrapped).

crysgen's :class:`CrysTensLayout` generalises it with two options:

* ``sites`` = S: any number of site rows; the tensor side is ``site_offset + S`` (12 + 52 = 64
  for the paper). A smaller S (e.g. 32 for mp_20's as-given cells of at most 20 sites) wastes
  less of the tensor on padding.
* ``element_code``: 10 more header rows, 12-21, hold each site's element code
  (:mod:`crysgen.representations.elements`: period one-hot + 32-column one-hot, 39 entries in
  {0, 1}). Entry ``c`` of the code sits in row ``12 + c // 4``, layer ``c % 4``, in both strips
  (``T[12 + c//4, o+s, c%4]`` and ``T[o+s, 12 + c//4, c%4]``: 2 copies); the 40th slot (row 21,
  layer 3) is always 0. The sites then start at ``o`` = 22. Rows 0-11 are exactly the paper's,
  so the paper's Z attribute stays; the decoder takes each site's element as the allowed element
  nearest to (code, Z) together, so Gaussian noise of 0.01 on the scaled tensor cannot move a
  site to a neighbouring atomic number (two codes are at least sqrt(2) apart; Z's neighbours
  are 1/range apart, ~0.01).

Summary of the header rows (every row is also a column, transposed):

======  ==============================  ========================
rows    content                          copies per site
======  ==============================  ========================
0       Z (atomic number)                8 (4 layers x 2 strips)
1-3     x, y, z (fractional)             8
4-9     a, b, c (Å), alpha, beta, gamma  8
10      space-group number               8
11      zero padding                     -
12-21   element code (element_code)      2 (one layer each)
======  ==============================  ========================

crysgen stores the tensor channel first, ``(4, size, size)``, by transposing ``(2, 0, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.representations.elements import CODE_DIM

SIZE = 64
"""Side of the paper's square tensor."""
LAYERS = 4
"""Layer 0: pairwise fractional distance; layers 1-3: signed fractional differences."""
SITE_OFFSET = 12
"""Row/column of site 0 in the paper's layout; row/column 11 is padding."""
MAX_SITES = SIZE - SITE_OFFSET
"""The paper's 52 sites at most."""
HEADER = ("Z", "x", "y", "z", "a", "b", "c", "alpha", "beta", "gamma", "sg")
"""Header attribute at row/column index k = 0..10."""
N_HEADER = len(HEADER)
COORD = slice(1, 4)
"""Header indices of the fractional coordinates x, y, z."""
GLOBAL = slice(4, 11)
"""Header indices of the per-crystal attributes a, b, c, alpha, beta, gamma, space group."""
LATTICE = slice(4, 10)
ALPHA = 7
SPACE_GROUP = 10
CODE_ROW = SITE_OFFSET
"""First header row of the element code (when a layout has one)."""
CODE_ROWS = -(-CODE_DIM // LAYERS)
"""Header rows the 39-entry element code takes, 4 entries (layers) per row: 10."""


@dataclass(frozen=True)
class CrysTensLayout:
    """Shape of a CrysTens tensor: how many site rows, and whether the header has element codes.

    Attributes:
        sites: S, the most sites a crystal may have (rows after the header).
        element_code: whether header rows 12-21 carry each site's element code.
    """

    sites: int = MAX_SITES
    element_code: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.sites, bool) or not isinstance(self.sites, int) or self.sites < 1:
            raise CrysgenError(f"CrysTens sites must be a positive integer, got {self.sites!r}")
        if not isinstance(self.element_code, bool):
            raise CrysgenError(f"CrysTens element_code must be true or false, got {self.element_code!r}")

    @property
    def site_offset(self) -> int:
        """Row/column of site 0: 12, or 22 with the element code."""
        return SITE_OFFSET + (CODE_ROWS if self.element_code else 0)

    @property
    def size(self) -> int:
        """Side of the square tensor: ``site_offset + sites``."""
        return self.site_offset + self.sites

    @property
    def is_paper(self) -> bool:
        """Whether this is the paper's 64 x 64 layout."""
        return self == CrysTensLayout()

    def shape(self) -> tuple[int, int, int]:
        """Channel-first shape of one tensor: ``(4, size, size)``."""
        return (LAYERS, self.size, self.size)

    @classmethod
    def fitting(cls, num_sites: Any, *, element_code: bool = False) -> CrysTensLayout:
        """The smallest layout that holds crystals of ``num_sites`` (int array): S = the largest.

        Raises:
            CrysgenError: for no crystals.
        """
        sizes = np.asarray(num_sites)
        if sizes.size == 0 or int(sizes.max()) < 1:
            raise CrysgenError("cannot choose CrysTens sites from an empty CrystalSet")
        return cls(sites=int(sizes.max()), element_code=element_code)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"sites": self.sites, "element_code": self.element_code}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CrysTensLayout:
        """Inverse of :meth:`to_dict`; missing keys (files written before layouts) give the paper's.

        Raises:
            CrysgenError: for an unknown key or a bad value.
        """
        data = dict(data or {})
        unknown = set(data) - {"sites", "element_code"}
        if unknown:
            raise CrysgenError(f"unknown CrysTens layout key(s): {', '.join(sorted(unknown))}")
        return cls(**data)


REGIONS = ("strips", "codes", "pairs", "padding")
"""Regions of a CrysTens tensor, for per-region loss weights (:func:`region_map`)."""


def region_map(layout: CrysTensLayout) -> np.ndarray:
    """Region index (into :data:`REGIONS`) of every entry of a (size, size) tensor plane.

    * "strips": the 11 attribute strips of the site rows/columns (Z, x, y, z, lattice, space group);
    * "codes": the element-code strips (rows/columns 12-21 of the site rows; layouts with codes);
    * "pairs": the site x site block (distances and differences);
    * "padding": the rest (the header x header corner and row/column 11), 0 in every tensor.

    Returns:
        int64 (size, size); the same in all 4 layers.
    """
    o, size = layout.site_offset, layout.size
    out = np.full((size, size), REGIONS.index("padding"), np.int64)
    out[o:, :N_HEADER] = out[:N_HEADER, o:] = REGIONS.index("strips")
    if layout.element_code:
        rows = slice(CODE_ROW, CODE_ROW + CODE_ROWS)
        out[o:, rows] = out[rows, o:] = REGIONS.index("codes")
    out[o:, o:] = REGIONS.index("pairs")
    return out
