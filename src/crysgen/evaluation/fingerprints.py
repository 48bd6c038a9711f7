"""CDVAE's fingerprints: CrystalNN "ops" site fingerprints averaged over sites, Magpie composition.

The composition fingerprint is standardised before distances are taken. CDVAE standardises with
fixed means/stds from its own code (``CompScalerMeans/Stds``), which crysgen does not ship;
crysgen fits them on the reference set instead (:func:`fit_comp_scaler`), so COV-R/COV-P are
CDVAE's definition with that one documented difference.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

VERSION = 1
"""Bumped when the fingerprints change: keys the suite's cache of reference fingerprints."""
_STRUCT = None
_COMP = None


def _featurizers():
    global _STRUCT, _COMP
    if _STRUCT is None:
        from matminer.featurizers.composition.composite import ElementProperty
        from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

        _STRUCT = CrystalNNFingerprint.from_preset("ops")
        _COMP = ElementProperty.from_preset("magpie", impute_nan=True)
    return _STRUCT, _COMP


def structure_fingerprint(structure: Structure) -> np.ndarray:
    """Mean over sites of the CrystalNN "ops" fingerprint, (61,)."""
    struct, _ = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.mean([struct.featurize(structure, i) for i in range(len(structure))], axis=0)


def composition_fingerprint(structure: Structure) -> np.ndarray:
    """Magpie element-property statistics of the composition, (132,)."""
    _, comp = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(comp.featurize(structure.composition), dtype=float)


def fit_comp_scaler(fps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means and stds (std 0 -> 1) of composition fingerprints, (132,) each."""
    mean, std = np.nanmean(fps, axis=0), np.nanstd(fps, axis=0)
    return mean, np.where(std > 0, std, 1.0)
