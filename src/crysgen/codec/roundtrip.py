"""Encode -> (noise) -> decode -> StructureMatcher: how faithful and how forgiving a codec is."""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError
from crysgen.representations.crystens import (
    CrysTensScaling,
    DecodeOptions,
    DecodeResult,
    decode,
    encode,
)


@dataclass
class RoundtripResult:
    """Outcome of a round trip.

    Attributes:
        n: crystals tried.
        matched: decoded crystals that pymatgen ``StructureMatcher()`` (default tolerances)
            matches with their original.
        match_rate: matched / n (failures count as misses).
        failures: tensors that could not be decoded.
        failure_reasons: reason -> count.
        mean_diagnostics: mean of every decode diagnostic over decoded crystals.
        encode_per_s: crystals encoded per second (this process, one core).
        decode_per_s: crystals decoded per second (this process, one core).
        mode: decode mode.
        noise: std of the Gaussian noise added to the scaled tensors.
        seed: noise seed.
        num_elements_mismatch: decoded crystals whose element multiset differs from the original.
        matched_mask: bool (n,) per crystal (not serialised by :meth:`summary`).
    """

    n: int
    matched: int
    match_rate: float
    failures: int
    failure_reasons: dict[str, int]
    mean_diagnostics: dict[str, float]
    encode_per_s: float
    decode_per_s: float
    mode: str
    noise: float
    seed: int
    num_elements_mismatch: int = 0
    matched_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable dict of everything but the per-crystal mask."""
        out = asdict(self)
        out.pop("matched_mask")
        return out


_MATCHER = None


def _match_one(item: tuple) -> tuple[bool, str | None]:
    """Worker: StructureMatcher().fit(original, decoded); errors become a reason."""
    global _MATCHER
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Lattice, Structure

    if _MATCHER is None:
        _MATCHER = StructureMatcher()
        warnings.simplefilter("ignore")
    (z0, f0, l0), (z1, f1, l1) = item
    try:
        a = Structure(Lattice.from_parameters(*l0), z0.tolist(), f0)
        b = Structure(Lattice.from_parameters(*l1), z1.tolist(), f1)
        return bool(_MATCHER.fit(a, b)), None
    except Exception as exc:  # a degenerate decoded cell can break the matcher
        return False, f"matcher error: {type(exc).__name__}"


def _crystal_tuple(c: CrystalSet, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = int(c.num_sites[i])
    return c.atomic_numbers[i, :k].copy(), c.frac_coords[i, :k].copy(), c.lattice[i].copy()


def roundtrip(
    crystals: CrystalSet,
    *,
    scaling: CrysTensScaling | None = None,
    options: DecodeOptions | None = None,
    noise: float = 0.0,
    seed: int = 0,
    workers: int = 1,
    chunk: int = 1024,
    progress: bool = True,
) -> RoundtripResult:
    """Encode every crystal, optionally add noise, decode, and match with the original.

    Args:
        crystals: at most 52 sites each.
        scaling: fitted on ``crystals`` when not given.
        options: decoder settings.
        noise: std of i.i.d. Gaussian noise added to every entry of the scaled tensors.
        seed: seed of the noise.
        workers: processes for StructureMatcher (the slow part).
        chunk: crystals encoded and decoded at a time (bounds memory).
        progress: show progress bars.

    Returns:
        Counts, match rate, mean diagnostics and throughput.
    """
    from tqdm.auto import tqdm

    if noise < 0:
        raise CrysgenError(f"--noise must be >= 0, got {noise}")
    if workers < 1:
        raise CrysgenError(f"--workers must be at least 1, got {workers}")
    options = options or DecodeOptions()
    scaling = scaling or CrysTensScaling.fit(crystals)
    rng = np.random.default_rng(seed)
    t_enc = t_dec = 0.0
    results: list[DecodeResult] = []
    n = len(crystals)
    bar = tqdm(total=n, desc=f"encode+decode ({options.mode})", unit="crystal",
               disable=not progress)
    for start in range(0, n, chunk):
        part = crystals.subset(slice(start, start + chunk))
        t0 = time.perf_counter()
        tensors = encode(part, scaling)
        t_enc += time.perf_counter() - t0
        if noise > 0:
            tensors += rng.normal(0.0, noise, size=tensors.shape).astype(np.float32)
        t0 = time.perf_counter()
        results.append(decode(tensors, scaling, options, ids=part.ids))
        t_dec += time.perf_counter() - t0
        bar.update(len(part))
    bar.close()

    pairs, owners, reasons = [], [], Counter()
    elem_mismatch = 0
    for k, res in enumerate(results):
        offset = k * chunk
        for j, i in enumerate(res.index):
            orig = _crystal_tuple(crystals, offset + int(i))
            dec = _crystal_tuple(res.crystals, j)
            elem_mismatch += not np.array_equal(np.sort(orig[0]), np.sort(dec[0]))
            pairs.append((orig, dec))
            owners.append(offset + int(i))
        reasons.update(f.reason.split(":")[0] for f in res.failures)
    matched = np.zeros(n, bool)
    mbar = tqdm(total=len(pairs), desc="StructureMatcher", unit="crystal", disable=not progress)
    if workers == 1:
        outcomes = []
        for p in pairs:
            outcomes.append(_match_one(p))
            mbar.update()
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            outcomes = []
            for o in pool.imap(_match_one, pairs, chunksize=64):
                outcomes.append(o)
                mbar.update()
    mbar.close()
    for owner, (ok, why) in zip(owners, outcomes, strict=True):
        matched[owner] = ok
        if why:
            reasons[why] += 1
    n_fail = sum(len(r.failures) for r in results)
    diag_keys = results[0].diagnostics.keys() if results else []
    all_diag = {k: np.concatenate([r.diagnostics[k] for r in results]) for k in diag_keys}
    mean_diag = {
        k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in all_diag.items()
    }
    return RoundtripResult(
        n=n,
        matched=int(matched.sum()),
        match_rate=float(matched.mean()) if n else float("nan"),
        failures=n_fail,
        failure_reasons=dict(sorted(reasons.items())),
        mean_diagnostics=mean_diag,
        encode_per_s=n / t_enc if t_enc > 0 else float("nan"),
        decode_per_s=n / t_dec if t_dec > 0 else float("nan"),
        mode=options.mode,
        noise=noise,
        seed=seed,
        num_elements_mismatch=int(elem_mismatch),
        matched_mask=matched,
    )
