"""Element codes that noise cannot turn into a neighbouring element, shared by representations.

An element's code is the one-hot of its period (7) next to the one-hot of its column in the
32-column periodic table (s 2, f 14, d 10, p 6): ``CODE_DIM`` = 39 entries in {0, 1}. Two
elements' codes differ in two entries (same period or same column) or four, so neighbouring
atomic numbers are far apart (distance sqrt(2) or 2) while elements of one column share half their
code. A noisy code is decoded by snapping it to the nearest code of an allowed element
(:func:`nearest_rows`), never by rounding a scalar.

Users: the atom-set representation (:mod:`crysgen.representations.atoms`, centred codes per
site) and CrysTens with ``element_code`` (:mod:`crysgen.representations.crystens.layout`, codes in
the header strips).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MAX_Z = 103
"""Heaviest element with a code (Lr)."""
CODE_DIM = 7 + 32
"""Length of an element code: period one-hot (7) + 32-column one-hot."""


@lru_cache(maxsize=1)
def element_code_table() -> np.ndarray:
    """float32 (MAX_Z + 1, CODE_DIM): row Z is element Z's {0, 1} code (row 0 is all zeros).

    The column of the 32-column table: s block 0-1, f block 2-15 (La-Yb, Ac-No), d block
    16-25 (groups 3-12, Lu and Lr included), p block 26-31 (groups 13-18, He included).
    """
    from pymatgen.core import Element

    table = np.zeros((MAX_Z + 1, CODE_DIM), np.float32)
    seen: dict[tuple[int, int], int] = {}
    for z in range(1, MAX_Z + 1):
        el = Element.from_Z(z)
        period = int(el.row) if el.block != "f" else (6 if z < 89 else 7)
        if el.block == "f":
            column = 2 + z - (57 if z < 89 else 89)
        elif el.block == "s" and el.group <= 2:
            column = el.group - 1
        else:
            column = int(el.group) + 13
        if (period, column) in seen:  # pragma: no cover - a pymatgen table change
            raise RuntimeError(f"elements {seen[(period, column)]} and {z} share a code")
        seen[(period, column)] = z
        table[z, period - 1] = 1.0
        table[z, 7 + column] = 1.0
    return table


def nearest_rows(points: np.ndarray, table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Label of the nearest table row (Euclidean) for every point.

    Args:
        points: float (..., D) noisy codes.
        table: float (K, D) the allowed codes, one row per label.
        labels: (K,) what each row stands for (e.g. atomic numbers).

    Returns:
        (...,) the label of each point's nearest row (ties: the first row).
    """
    p = np.asarray(points, np.float64)
    t = np.asarray(table, np.float64)
    # |p - t|^2 = |p|^2 - 2 p.t + |t|^2; |p|^2 is the same for every row, so it is left out
    d2 = (t**2).sum(-1) - 2.0 * p @ t.T
    return np.asarray(labels)[np.argmin(d2, axis=-1)]
