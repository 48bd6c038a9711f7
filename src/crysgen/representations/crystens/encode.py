"""CrystalSet -> CrysTens tensors, vectorised over crystals, sites and pairs."""

from __future__ import annotations

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.representations.crystens.layout import HEADER, MAX_SITES, SITE_OFFSET, SIZE
from crysgen.representations.crystens.scaling import CrysTensScaling


def header_values(crystals: CrystalSet) -> np.ndarray:
    """Raw header attributes per site, float64 (N, 52, 11): Z, x, y, z, a..gamma, sg.

    Rows of empty slots are 0.
    """
    c = crystals if crystals.max_sites == MAX_SITES else crystals.with_max_sites(MAX_SITES)
    n = len(c)
    glob = np.concatenate([c.lattice, c.space_group[:, None].astype(float)], axis=1)
    head = np.concatenate(
        [
            c.atomic_numbers[..., None].astype(float),
            c.frac_coords,
            np.broadcast_to(glob[:, None, :], (n, MAX_SITES, 7)),
        ],
        axis=-1,
    )
    return head * c.site_mask[..., None]


def encode(
    crystals: CrystalSet, scaling: CrysTensScaling, *, chunk: int = 256
) -> np.ndarray:
    """Encode crystals as scaled CrysTens tensors.

    Args:
        crystals: at most 52 sites each, sites in the order they will occupy rows 12..
        scaling: min-max ranges; present entries are scaled, the diagonal and empty rows and
            columns stay exactly 0.
        chunk: crystals per vectorised block; crystals are grouped by size first, so a block
            computes only the corner its largest crystal occupies.

    Returns:
        float32 (N, 4, 64, 64), channel first: the transpose (2, 0, 1) of the paper's
        (64, 64, 4) tensor.

    Raises:
        CrysgenError: if a crystal has more than 52 sites.
    """
    if len(crystals) and int(crystals.num_sites.max()) > MAX_SITES:
        raise CrysgenError(
            f"CrysTens holds at most {MAX_SITES} sites; a crystal has {int(crystals.num_sites.max())}"
            " (filter with `crysgen data prepare --max-sites 52`)"
        )
    out = np.zeros((len(crystals), 4, SIZE, SIZE), dtype=np.float32)
    lo = scaling.lo(HEADER)
    span = scaling.span(HEADER)
    len_lo, len_hi = scaling.ranges["length"]
    dir_lo, dir_hi = scaling.ranges["dir"]
    padded = crystals.with_max_sites(MAX_SITES)
    head_all = header_values(padded)
    mask_all, frac_all = padded.site_mask, padded.frac_coords
    # crystals of similar size go together, so each block computes only its occupied corner
    order = np.argsort(crystals.num_sites, kind="stable")
    for start in range(0, len(crystals), chunk):
        idx = order[start : start + chunk]
        s = int(crystals.num_sites[idx].max())
        if s == 0:
            continue
        end = SITE_OFFSET + s
        mask = mask_all[idx, :s]
        head = ((head_all[idx, :s] - lo) / span * mask[..., None]).astype(np.float32)
        frac = frac_all[idx, :s].astype(np.float32)
        diff = frac[:, :, None, :] - frac[:, None, :, :]  # (n, s, s, 3): row minus column
        dist = np.sqrt(np.einsum("nijk,nijk->nij", diff, diff))
        pair = mask[:, :, None] & mask[:, None, :] & ~np.eye(s, dtype=bool)[None]
        block = np.zeros((len(idx), 4, end, end), dtype=np.float32)
        block[:, 0, SITE_OFFSET:, SITE_OFFSET:] = ((dist - len_lo) / (len_hi - len_lo)) * pair
        block[:, 1:, SITE_OFFSET:, SITE_OFFSET:] = (
            (diff - dir_lo) / (dir_hi - dir_lo) * pair[..., None]
        ).transpose(0, 3, 1, 2)
        # header strips, identical in all 4 layers: rows 12+s x cols k and rows k x cols 12+s
        block[:, :, SITE_OFFSET:, : len(HEADER)] = head[:, None]
        block[:, :, : len(HEADER), SITE_OFFSET:] = head.transpose(0, 2, 1)[:, None]
        out[idx, :, :end, :end] = block
    return out
