"""Index layout of the CrysTens tensor (Alverson et al. 2024; seed_code.md §1.1-1.3).

In the paper's (row, column, layer) = (64, 64, 4) view:

* rows/columns 0-10 are the header strips: attribute ``k`` of site ``s`` is written to both
  ``T[k, 12+s, l]`` and ``T[12+s, k, l]`` for every layer ``l`` (8 copies);
* row/column 11 is zero padding;
* rows/columns 12-63 are sites 0-51; the 52x52 block holds, for sites i, j, the fractional
  Euclidean distance (layer 0, no periodic images) and the signed fractional differences
  ``x_i - x_j``, ``y_i - y_j``, ``z_i - z_j`` (layers 1-3, row minus column, not wrapped).

crysgen stores the tensor channel first, ``(4, 64, 64)``, by transposing ``(2, 0, 1)``.
"""

from __future__ import annotations

SIZE = 64
"""Side of the square tensor."""
LAYERS = 4
"""Layer 0: pairwise fractional distance; layers 1-3: signed fractional differences."""
SITE_OFFSET = 12
"""Row/column of site 0; row/column 11 is padding."""
MAX_SITES = SIZE - SITE_OFFSET
"""52 sites at most."""
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
