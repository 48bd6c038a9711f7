"""CDVAE's fingerprints: CrystalNN "ops" site fingerprints averaged over sites, Magpie composition.

The composition fingerprint is standardised before distances are taken. As in CDVAE, by default
with CDVAE's fixed means/stds (``CompScalerMeans/Stds`` of ``cdvae/common/constants.py``, shipped
as ``data/cdvae_comp_scaler.json``; :func:`cdvae_comp_scaler`), and a feature that is NaN after
standardising (Magpie has no data for He, Ne, Ar, At, Rn, Fr, Bk-Lr) becomes 0, as CDVAE's
``StandardScaler(replace_nan_token=0.)`` does. :func:`fit_comp_scaler` fits the statistics on a
set instead (the ``reference`` / FILE options of the suite).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

VERSION = 2
"""Bumped when the fingerprints change: keys the suite's cache of reference fingerprints
(2: Magpie without imputation, NaN kept as CDVAE has it)."""
_STRUCT = None
_COMP = None


def _featurizers():
    global _STRUCT, _COMP
    if _STRUCT is None:
        from matminer.featurizers.composition.composite import ElementProperty
        from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

        _STRUCT = CrystalNNFingerprint.from_preset("ops")
        _COMP = ElementProperty.from_preset("magpie", impute_nan=False)  # as CDVAE (NaN -> 0 later)
    return _STRUCT, _COMP


def structure_fingerprint(structure: Structure) -> np.ndarray:
    """Mean over sites of the CrystalNN "ops" fingerprint, (61,)."""
    struct, _ = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.mean([struct.featurize(structure, i) for i in range(len(structure))], axis=0)


def composition_fingerprint(structure: Structure) -> np.ndarray:
    """Magpie element-property statistics of the composition, (132,); NaN where Magpie has no data."""
    _, comp = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(comp.featurize(structure.composition), dtype=float)


def fit_comp_scaler(fps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means and stds (std 0 -> 1) of composition fingerprints, (132,) each."""
    mean, std = np.nanmean(fps, axis=0), np.nanstd(fps, axis=0)
    return mean, np.where(std > 0, std, 1.0)


def cdvae_comp_scaler() -> tuple[np.ndarray, np.ndarray]:
    """CDVAE's fixed means and stds (132,) of the Magpie features (``data/cdvae_comp_scaler.json``)."""
    import json
    from importlib import resources

    text = resources.files("crysgen.evaluation").joinpath("data/cdvae_comp_scaler.json").read_text()
    data = json.loads(text)
    return np.asarray(data["means"], float), np.asarray(data["stds"], float)


def standardise(fps: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(fps - mean) / std with NaN replaced by 0 (CDVAE's ``replace_nan_token=0.``)."""
    out = (np.asarray(fps, float) - mean) / std
    return np.where(np.isnan(out), 0.0, out)
