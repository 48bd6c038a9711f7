"""CrystalSet -> CrysTens tensors, vectorised over crystals, sites and pairs."""

from __future__ import annotations

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.representations.crystens.layout import CODE_ROW, CODE_ROWS, HEADER, LAYERS, MAX_SITES
from crysgen.representations.crystens.scaling import CrysTensScaling, check_fits
from crysgen.representations.elements import CODE_DIM, element_code_table


def header_values(crystals: CrystalSet, sites: int = MAX_SITES) -> np.ndarray:
    """Raw header attributes per site, float64 (N, S, 11): Z, x, y, z, a..gamma, sg.

    Rows of empty slots are 0; ``sites`` is S (the crystals must fit).
    """
    c = crystals if crystals.max_sites == sites else crystals.with_max_sites(sites)
    n = len(c)
    glob = np.concatenate([c.lattice, c.space_group[:, None].astype(float)], axis=1)
    head = np.concatenate(
        [
            c.atomic_numbers[..., None].astype(float),
            c.frac_coords,
            np.broadcast_to(glob[:, None, :], (n, sites, 7)),
        ],
        axis=-1,
    )
    return head * c.site_mask[..., None]


def code_strips(atomic_numbers: np.ndarray) -> np.ndarray:
    """Element codes laid out as header rows: int (n, s) -> float32 (n, s, CODE_ROWS, 4).

    Entry ``c`` of a site's code goes to code row ``c // 4``, layer ``c % 4``; empty slots
    (Z = 0) get zeros.
    """
    n, s = atomic_numbers.shape
    codes = element_code_table()[atomic_numbers]  # row 0 (empty) is all zeros
    out = np.zeros((n, s, CODE_ROWS * LAYERS), np.float32)
    out[..., :CODE_DIM] = codes
    return out.reshape(n, s, CODE_ROWS, LAYERS)


def encode(
    crystals: CrystalSet, scaling: CrysTensScaling, *, chunk: int = 256
) -> np.ndarray:
    """Encode crystals as scaled CrysTens tensors in the scaling's layout.

    Args:
        crystals: at most S sites each (``scaling.layout.sites``; the paper's 52), sites in the
            order they will occupy the site rows.
        scaling: min-max ranges and the layout; present entries are scaled, the diagonal and
            empty rows and columns stay exactly 0.
        chunk: crystals per vectorised block; crystals are grouped by size first, so a block
            computes only the corner its largest crystal occupies.

    Returns:
        float32 (N, 4, size, size), channel first: the transpose (2, 0, 1) of the paper's
        (size, size, 4) tensor; size = 64 for the paper's layout (see
        :mod:`crysgen.representations.crystens.layout`).

    Raises:
        CrysgenError: if a crystal has more than S sites, or (element codes) an element beyond Lr.
    """
    layout = scaling.layout
    check_fits(crystals, layout)
    offset, sites = layout.site_offset, layout.sites
    out = np.zeros((len(crystals), *layout.shape()), dtype=np.float32)
    lo = scaling.lo(HEADER)
    span = scaling.span(HEADER)
    len_lo, len_hi = scaling.ranges["length"]
    dir_lo, dir_hi = scaling.ranges["dir"]
    padded = crystals.with_max_sites(sites)
    head_all = header_values(padded, sites)
    mask_all, frac_all = padded.site_mask, padded.frac_coords
    # crystals of similar size go together, so each block computes only its occupied corner
    order = np.argsort(crystals.num_sites, kind="stable")
    for start in range(0, len(crystals), chunk):
        idx = order[start : start + chunk]
        s = int(crystals.num_sites[idx].max())
        if s == 0:
            continue
        end = offset + s
        mask = mask_all[idx, :s]
        head = ((head_all[idx, :s] - lo) / span * mask[..., None]).astype(np.float32)
        frac = frac_all[idx, :s].astype(np.float32)
        diff = frac[:, :, None, :] - frac[:, None, :, :]  # (n, s, s, 3): row minus column
        dist = np.sqrt(np.einsum("nijk,nijk->nij", diff, diff))
        pair = mask[:, :, None] & mask[:, None, :] & ~np.eye(s, dtype=bool)[None]
        block = np.zeros((len(idx), 4, end, end), dtype=np.float32)
        block[:, 0, offset:, offset:] = ((dist - len_lo) / (len_hi - len_lo)) * pair
        block[:, 1:, offset:, offset:] = (
            (diff - dir_lo) / (dir_hi - dir_lo) * pair[..., None]
        ).transpose(0, 3, 1, 2)
        # header strips, identical in all 4 layers: rows o+s x cols k and rows k x cols o+s
        block[:, :, offset:, : len(HEADER)] = head[:, None]
        block[:, :, : len(HEADER), offset:] = head.transpose(0, 2, 1)[:, None]
        if layout.element_code:  # code row r, layer l of site s: T[l, CODE_ROW + r, o + s], transposed
            codes = code_strips(padded.atomic_numbers[idx, :s].astype(np.int64))  # (n, s, rows, 4)
            rows = slice(CODE_ROW, CODE_ROW + CODE_ROWS)
            block[:, :, offset:, rows] = codes.transpose(0, 3, 1, 2)
            block[:, :, rows, offset:] = codes.transpose(0, 3, 2, 1)
        out[idx, :, :end, :end] = block
    return out
