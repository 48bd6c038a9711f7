"""The part of a CrysTens tensor that a crystal's composition alone fixes (for inpainting).

Given the elements of every site row (site order as in a CrystalSet: rows 0..A-1 present, the
rest empty), these entries of the scaled tensor are known before any structure is:

* the Z strips: header row/column 0 of every present site, all 4 layers (8 copies);
* the element-code strips (rows/columns 12-21 of present sites) when the layout has them;
* every entry of the empty site rows and columns (0);
* the entries that are 0 in every tensor: the header x header corner and the diagonal of the
  pair block.

A sampler holds this region at its known values (:func:`known_region`), and the decoder takes
the elements as given (``decode(..., atomic_numbers=...)``), so a sample has exactly the
composition asked for.
"""

from __future__ import annotations

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.representations.crystens.encode import code_strips
from crysgen.representations.crystens.layout import CODE_ROW, CODE_ROWS, LAYERS
from crysgen.representations.crystens.scaling import CrysTensScaling
from crysgen.representations.elements import MAX_Z


def check_compositions(atomic_numbers: np.ndarray, scaling: CrysTensScaling) -> np.ndarray:
    """The per-site elements as int64 (N, S), checked against the scaling's layout.

    Args:
        atomic_numbers: int (N, k), 0 = no site; k <= S columns (padded to S here).
        scaling: the model's scaling (its layout's S; element codes need Z <= 103).

    Returns:
        int64 (N, S).

    Raises:
        CrysgenError: for more sites than S, an atomic number outside 0..max, a crystal without
            sites, or a row whose sites are not contiguous from row 0.
    """
    z = np.asarray(atomic_numbers)
    layout = scaling.layout
    if z.ndim != 2:
        raise CrysgenError(f"compositions must be an (N, sites) array of atomic numbers, got shape {z.shape}")
    sites = (z > 0).sum(1)
    if z.shape[1] > layout.sites:
        if (z[:, layout.sites:] != 0).any():
            raise CrysgenError(f"a composition has {int(sites.max())} sites; this model's CrysTens "
                               f"layout holds at most {layout.sites}")
        z = z[:, :layout.sites]
    if z.size and int(z.min()) < 0:
        raise CrysgenError(f"atomic numbers must be positive (0 = no site), got {int(z.min())}")
    lo, hi = scaling.ranges["Z"]
    top = min(hi, MAX_Z) if layout.element_code else hi
    outside = sorted({int(v) for v in np.unique(z[z > 0]) if not lo <= v <= top})
    if outside:
        raise CrysgenError(f"element(s) Z = {', '.join(map(str, outside))} lie outside this model's "
                           f"atomic-number range {lo:g}-{top:g} (its training data)")
    if (sites == 0).any():
        raise CrysgenError("a composition has no sites")
    if ((z > 0) != (np.arange(z.shape[1])[None] < sites[:, None])).any():
        raise CrysgenError("the sites of a composition must fill rows 0..A-1 (no gaps)")
    out = np.zeros((len(z), layout.sites), np.int64)
    out[:, :z.shape[1]] = z
    return out


def known_region(atomic_numbers: np.ndarray, scaling: CrysTensScaling) -> tuple[np.ndarray, np.ndarray]:
    """The known values and where they are, for tensors of the given compositions.

    Args:
        atomic_numbers: int (N, k <= S) per-site elements, 0 = no site (see
            :func:`check_compositions`).
        scaling: the model's scaling (Z range, layout).

    Returns:
        ``(values, mask)``: float32 (N, 4, size, size) scaled values (0 outside the known region)
        and bool (N, 4, size, size), True where the composition fixes the entry.

    Raises:
        CrysgenError: as :func:`check_compositions`.
    """
    z = check_compositions(atomic_numbers, scaling)
    layout = scaling.layout
    n, o, size = len(z), layout.site_offset, layout.size
    present = z > 0  # (N, S)
    values = np.zeros((n, LAYERS, size, size), np.float32)
    mask = np.zeros((n, LAYERS, size, size), bool)
    mask[:, :, :o, :o] = True  # the header corner is 0 in every tensor
    diag = np.arange(o, size)
    mask[:, :, diag, diag] = True  # so is the pair block's diagonal
    absent = ~present
    mask[:, :, o:, :] |= absent[:, None, :, None]  # empty site rows and columns: all 0
    mask[:, :, :, o:] |= absent[:, None, None, :]
    z_scaled = (scaling.scale(z.astype(np.float64), "Z") * present).astype(np.float32)  # (N, S)
    values[:, :, o:, 0] = z_scaled[:, None, :]
    values[:, :, 0, o:] = z_scaled[:, None, :]
    mask[:, :, o:, 0] |= present[:, None, :]
    mask[:, :, 0, o:] |= present[:, None, :]
    if layout.element_code:
        codes = code_strips(z)  # (N, S, rows, 4); empty slots are 0
        rows = slice(CODE_ROW, CODE_ROW + CODE_ROWS)
        values[:, :, o:, rows] = codes.transpose(0, 3, 1, 2)
        values[:, :, rows, o:] = codes.transpose(0, 3, 2, 1)
        mask[:, :, o:, rows] |= present[:, None, :, None]
        mask[:, :, rows, o:] |= present[:, None, None, :]
    return values, mask
