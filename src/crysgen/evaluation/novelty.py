"""Uniqueness and novelty with pymatgen's ``StructureMatcher`` (its default tolerances).

Tolerances: ``ltol=0.2``, ``stol=0.3``, ``angle_tol=5`` degrees, primitive cells, scaled volumes
(pymatgen's defaults, as in MatterGen's ordered matcher). Only crystals with the same reduced
formula are compared, which is what the matcher would conclude anyway and keeps it fast.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

MATCHER_SETTINGS = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}


def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**MATCHER_SETTINGS)


def unique_mask(structures: list[Structure]) -> np.ndarray:
    """True for each structure that matches no earlier one in the list (the first of a group)."""
    m = _matcher()
    seen: dict[str, list[Structure]] = defaultdict(list)
    out = np.zeros(len(structures), dtype=bool)
    for i, s in enumerate(structures):
        key = s.composition.reduced_formula
        if not any(m.fit(s, t) for t in seen[key]):
            out[i] = True
            seen[key].append(s)
    return out


def novel_mask(structures: list[Structure], training: list[Structure]) -> np.ndarray:
    """True for each structure that matches no training structure."""
    m = _matcher()
    by_formula: dict[str, list[Structure]] = defaultdict(list)
    for t in training:
        by_formula[t.composition.reduced_formula].append(t)
    return np.array([not any(m.fit(s, t) for t in by_formula.get(s.composition.reduced_formula, []))
                     for s in structures], dtype=bool)
