"""CDVAE's fingerprints: CrystalNN "ops" site fingerprints averaged over sites, Magpie composition.

The composition fingerprint is standardised before distances are taken. As in CDVAE, by default
with CDVAE's fixed means/stds (``CompScalerMeans/Stds`` of ``cdvae/common/constants.py``, shipped
as ``data/cdvae_comp_scaler.json``; :func:`cdvae_comp_scaler`), and a feature that is NaN after
standardising (Magpie has no data for He, Ne, Ar, At, Rn, Fr, Bk-Lr) becomes 0, as CDVAE's
``StandardScaler(replace_nan_token=0.)`` does. :func:`fit_comp_scaler` fits the statistics on a
set instead (the ``reference`` / FILE options of the suite).

CrystalNN costs about 0.24 s per mp_20 crystal, so :func:`fingerprint_structures` spreads a set
over worker processes (largest crystals first, small chunks: no worker waits on a long tail) and
:func:`cached_fingerprints` keeps a crystal set's fingerprints on disk, under a key of the set's
content hash, the featurizer presets and the matminer and pymatgen versions
(:func:`cache_path`), for coverage and anything else that needs a reference set's fingerprints.
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence
    from pathlib import Path

    from pymatgen.core import Structure

    from crysgen.crystal_set import CrystalSet

VERSION = 2
"""Bumped when the fingerprints change: keys the suite's cache of reference fingerprints
(2: Magpie without imputation, NaN kept as CDVAE has it)."""
PRESET = "ops-magpie"
"""The featurizer presets (CrystalNN ``"ops"``, Magpie ``ElementProperty`` without imputation),
part of the cache key."""
CHUNK_MAX = 8
"""Crystals per task at most when fingerprints run in workers (about 2 s of CrystalNN work for
mp_20-sized cells): the last tasks are short, so no worker idles while one finishes a long one."""

Fingerprints = tuple["np.ndarray | None", "np.ndarray | None", "str | None"]
"""One crystal's (structure (61,), composition (132,), None), or (None, None, reason)."""
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


COORDINATION_NUMBERS = np.arange(1, 25, dtype=float)
"""The coordination numbers k of the "ops" fingerprint's "wt CN_k" columns, the columns of
:func:`coordination_shares`."""


def coordination_shares(struct_fps: np.ndarray) -> np.ndarray:
    """Each crystal's share of sites by CrystalNN coordination number, read from its fingerprint.

    The "ops" fingerprint holds, for every site, CrystalNN's weight of each coordination number
    k = 1..24 (its "wt CN_k" columns); a crystal's fingerprint is their mean over sites, so these
    columns, normalised, are the crystal's share of sites with each coordination (no extra
    neighbour search).

    Args:
        struct_fps: (N, 61) structure fingerprints (:func:`structure_fingerprint`).

    Returns:
        (N, 24) shares for k = 1..24, each row summing to 1; NaN rows for a crystal whose
        weights are all zero.
    """
    struct, _ = _featurizers()
    labels = struct.feature_labels()
    columns = {int(label.split("_")[1]): i for i, label in enumerate(labels) if label.startswith("wt CN_")}
    order = [columns[int(k)] for k in COORDINATION_NUMBERS]
    w = np.asarray(struct_fps, dtype=float).reshape(-1, len(labels))[:, order]
    total = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, w / total, np.nan)


def mean_coordination(struct_fps: np.ndarray) -> np.ndarray:
    """Each crystal's mean CrystalNN coordination number, (N,) (NaN where its shares are NaN)."""
    return coordination_shares(struct_fps) @ COORDINATION_NUMBERS


def fingerprint_pair(structure: Structure) -> Fingerprints:
    """Both fingerprints of one crystal, or the reason the first that failed gave.

    Raises only ImportError (a missing library fails every crystal alike).
    """
    try:
        st = structure_fingerprint(structure)
    except ImportError:
        raise  # a missing library is a broken install, not one crystal's failure
    except Exception as exc:  # one crystal's failure is its reason, not the run's
        return None, None, f"structure fingerprint failed: {type(exc).__name__}: {str(exc)[:150]}"
    try:
        co = composition_fingerprint(structure)
    except ImportError:
        raise
    except Exception as exc:
        return None, None, f"composition fingerprint failed: {type(exc).__name__}: {str(exc)[:150]}"
    return st, co, None


def _died(_structure: Any, reason: str) -> Fingerprints:
    return None, None, reason


class FingerprintsStopped(CrysgenError):
    """The ``stop`` event of :func:`fingerprint_structures` was set: its caller gave the work up."""


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise FingerprintsStopped("fingerprints stopped before they were all computed")


def fingerprint_structures(structures: Sequence[Structure], *, workers: int = 1,
                           progress: bool = False, desc: str = "fingerprints",
                           stop: threading.Event | None = None) -> list[Fingerprints]:
    """:func:`fingerprint_pair` of every structure, in ``workers`` processes, in input order.

    The work goes out largest crystals first (CrystalNN's cost grows with the number of sites)
    in chunks of at most :data:`CHUNK_MAX`, so the run ends on small crystals and every worker
    stays busy to the end. The featurizers are built before the workers fork, so no worker
    imports matminer again. A crystal whose worker process dies gets a reason
    (:func:`crysgen.data.parallel.robust_map`).

    Args:
        structures: pymatgen structures.
        workers: processes (1: in this process).
        progress: show a progress bar.
        desc: its label.
        stop: when set (by another thread, e.g. a run that stopped while these were computing
            in the background), the work ends at the next crystal or chunk of crystals with
            :class:`FingerprintsStopped`.

    Returns:
        One (structure, composition, reason) tuple per structure (see :data:`Fingerprints`).

    Raises:
        FingerprintsStopped: ``stop`` was set.
    """
    from tqdm.auto import tqdm

    from crysgen.data.parallel import robust_map

    n = len(structures)
    _featurizers()  # built once here; forked workers inherit them
    with tqdm(total=n, desc=desc, disable=not progress, leave=False) as bar:
        if workers <= 1 or n < 2:
            out: list[Fingerprints] = []
            for s in structures:
                _check(stop)
                out.append(fingerprint_pair(s))
                bar.update(1)
            return out

        def on_done(k: int) -> None:
            bar.update(k)
            _check(stop)  # raised here, the pool is shut down (the chunks running finish first)

        order = sorted(range(n), key=lambda i: -len(structures[i]))  # stable: ties keep input order
        chunk = max(1, min(CHUNK_MAX, n // (workers * 4)))
        done = robust_map(fingerprint_pair, [structures[i] for i in order], workers=min(workers, n),
                          died=_died, chunksize=chunk, on_done=on_done)
    out = [(None, None, "not computed")] * n
    for i, f in zip(order, done, strict=True):
        out[i] = f
    return out


def cache_path(crystals: CrystalSet, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`cached_fingerprints` keeps a crystal set's fingerprints.

    ``<cache_dir>/fingerprints/v<VERSION>_<PRESET>_matminer<version>_pymatgen<version>_<hash>.npz``,
    the hash being the first 20 hex digits of the set's content hash
    (:func:`crysgen.models.model_dir.data_fingerprint`: atomic numbers, coordinates, lattices).
    """
    import importlib.metadata
    from pathlib import Path

    from crysgen.evaluation.stability import default_cache_dir
    from crysgen.models.model_dir import data_fingerprint

    versions = (f"v{VERSION}_{PRESET}_matminer{importlib.metadata.version('matminer')}"
                f"_pymatgen{importlib.metadata.version('pymatgen')}")
    key = f"{versions}_{data_fingerprint(crystals, '')['sha256'][:20]}"
    return Path(cache_dir or default_cache_dir()) / "fingerprints" / f"{key}.npz"


def _read_cache(path: Path, n: int) -> list[Fingerprints] | None:
    """The cached fingerprints of ``n`` crystals, or None (missing; unreadable: said on stderr)."""
    from crysgen.evaluation.stability import CACHE_READ_ERRORS, cache_unreadable

    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            ok, st, co, reasons = z["ok"], z["structure"], z["composition"], z["reason"]
        if len(ok) == n:
            return [(st[k], co[k], None) if ok[k] else (None, None, str(reasons[k])) for k in range(n)]
        cache_unreadable(path, f"holds {len(ok)} crystals' fingerprints for {n}")
    except CACHE_READ_ERRORS as exc:  # unreadable: recompute and overwrite
        cache_unreadable(path, f"cannot be read ({type(exc).__name__}: {str(exc)[:100]})")
    return None


def cached_fingerprints(crystals: CrystalSet, structures: Sequence[Structure] | None = None, *,
                        workers: int = 1, cache_dir: str | Path | None = None,
                        progress: bool = False, stop: threading.Event | None = None) -> list[Fingerprints]:
    """Fingerprints of every crystal of a set, read from the disk cache or computed and cached.

    Every model is scored against the same reference set, and its fingerprints cost as much as
    the samples' (CrystalNN). The cache file (:func:`cache_path`) is keyed by the set's content,
    so any caller that fingerprints the same crystals (coverage, a composition scaler fitted on
    a set, benchmarks) shares it; a file that cannot be read or holds another number of crystals
    is recomputed with a warning on stderr and overwritten atomically. A set in which every
    crystal failed is not cached.

    Args:
        crystals: the crystals (their content keys the cache).
        structures: the same crystals as pymatgen structures, in the same order (made from
            ``crystals`` when not given).
        workers: processes when they must be computed (:func:`fingerprint_structures`).
        cache_dir: the cache folder (default ``$CRYSGEN_CACHE`` or ``~/.cache/crysgen``).
        progress: show a progress bar while computing.
        stop: ends the computing early (:func:`fingerprint_structures`; nothing is cached).

    Returns:
        One (structure, composition, reason) tuple per crystal (see :data:`Fingerprints`).
    """
    from crysgen.crystal_set import write_npz_atomic

    path = cache_path(crystals, cache_dir)
    cached = _read_cache(path, len(crystals))
    if cached is not None:
        return cached
    if structures is None:
        structures = crystals.to_structures()
    if len(structures) != len(crystals):
        raise CrysgenError(f"cached_fingerprints: {len(structures)} structures for {len(crystals)} crystals")
    fps = fingerprint_structures(structures, workers=workers, progress=progress,
                                 desc="reference fingerprints", stop=stop)
    good = [f for f in fps if f[2] is None]
    if good:
        st0, co0, _ = good[0]
        assert st0 is not None and co0 is not None  # no reason: both fingerprints are there
        st = np.zeros((len(fps), *np.shape(st0)))
        co = np.zeros((len(fps), *np.shape(co0)))
        for k, f in enumerate(fps):
            if f[2] is None:
                st[k], co[k] = f[0], f[1]
        write_npz_atomic(path, {"ok": np.array([f[2] is None for f in fps]), "structure": st,
                                "composition": co, "reason": np.array([f[2] or "" for f in fps])})
    elif fps:
        print(f"note: no fingerprint of {len(fps)} crystals could be computed; not cached",
              file=sys.stderr)
    return fps
