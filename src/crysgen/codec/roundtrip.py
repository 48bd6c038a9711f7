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
    DIAGNOSTICS,
    CrysTensScaling,
    DecodeOptions,
    decode,
    encode,
)
from crysgen.representations.crystens.decode import failure_kind


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
        atom_count_errors: decoded crystals whose detected number of sites A differs from the
            original's.
        elements: the auto decoder's element rule.
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
    atom_count_errors: int = 0
    elements: str = "map"
    matched_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable dict of everything but the per-crystal mask."""
        out = asdict(self)
        out.pop("matched_mask")
        return out


_MATCHER = None


def _match_one(original: tuple, decoded: tuple) -> tuple[bool, str | None]:
    """StructureMatcher().fit(original, decoded); an error becomes a reason, never a raise."""
    global _MATCHER
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Lattice, Structure

    if _MATCHER is None:
        _MATCHER = StructureMatcher()
    (z0, f0, l0), (z1, f1, l1) = original, decoded
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = Structure(Lattice.from_parameters(*l0), z0.tolist(), f0)
            b = Structure(Lattice.from_parameters(*l1), z1.tolist(), f1)
            return bool(_MATCHER.fit(a, b)), None
    except Exception as exc:  # a degenerate decoded cell can break the matcher
        return False, f"matcher error: {type(exc).__name__}"


def _crystal_tuple(c: CrystalSet, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = int(c.num_sites[i])
    return c.atomic_numbers[i, :k], c.frac_coords[i, :k], c.lattice[i]


@dataclass
class _ChunkOutcome:
    matched: np.ndarray
    reasons: list[str]
    diagnostics: dict[str, np.ndarray]
    encode_s: float
    decode_s: float
    elements_mismatch: int
    atom_count_errors: int


def _roundtrip_chunk(job: tuple) -> _ChunkOutcome:
    """Encode, perturb, decode and match one chunk (runs in a worker process)."""
    part, scaling, options, noise, seed, chunk_index = job
    t0 = time.perf_counter()
    tensors = encode(part, scaling)
    t_enc = time.perf_counter() - t0
    if noise > 0:
        rng = np.random.default_rng([seed, chunk_index])
        tensors += rng.normal(0.0, noise, size=tensors.shape).astype(np.float32)
    t0 = time.perf_counter()
    res = decode(tensors, scaling, options, ids=part.ids)
    t_dec = time.perf_counter() - t0
    matched = np.zeros(len(part), bool)
    reasons = [failure_kind(f.reason) for f in res.failures]
    mismatch = 0
    detected = res.diagnostics["num_atoms"][res.index]
    wrong_a = int((detected != part.num_sites[res.index]).sum())
    for j, i in enumerate(res.index):
        orig, dec = _crystal_tuple(part, int(i)), _crystal_tuple(res.crystals, j)
        mismatch += not np.array_equal(np.sort(orig[0]), np.sort(dec[0]))
        matched[i], why = _match_one(orig, dec)
        if why:
            reasons.append(why)
    return _ChunkOutcome(matched, reasons, res.diagnostics, t_enc, t_dec, mismatch, wrong_a)


def roundtrip(
    crystals: CrystalSet,
    *,
    scaling: CrysTensScaling | None = None,
    options: DecodeOptions | None = None,
    noise: float = 0.0,
    seed: int = 0,
    workers: int = 1,
    chunk: int = 256,
    progress: bool = True,
) -> RoundtripResult:
    """Encode every crystal, optionally add noise, decode, and match with the original.

    Chunks of crystals go through encode -> noise -> decode -> ``StructureMatcher()`` in
    ``workers`` processes. Throughput is the number of crystals over the summed time spent
    inside encode (decode) in all processes, i.e. crystals per second per core.

    Args:
        crystals: at most 52 sites each.
        scaling: fitted on ``crystals`` when not given.
        options: decoder settings.
        noise: std of i.i.d. Gaussian noise added to every entry of the scaled tensors.
        seed: seed of the noise (chunk ``k`` uses ``default_rng([seed, k])``, so the result
            does not depend on ``workers``).
        workers: processes.
        chunk: crystals per job.
        progress: show a progress bar.

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
    n = len(crystals)
    jobs = [
        (crystals.subset(slice(s, s + chunk)), scaling, options, noise, seed, k)
        for k, s in enumerate(range(0, n, chunk))
    ]
    bar = tqdm(total=n, desc=f"roundtrip ({options.mode}, noise {noise:g})", unit="crystal",
               disable=not progress)
    outcomes: list[_ChunkOutcome] = []
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            outcomes.append(_roundtrip_chunk(job))
            bar.update(len(job[0]))
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(workers) as pool:
            for job, out in zip(jobs, pool.imap(_roundtrip_chunk, jobs), strict=True):
                outcomes.append(out)
                bar.update(len(job[0]))
    bar.close()
    matched = np.concatenate([o.matched for o in outcomes]) if outcomes else np.zeros(0, bool)
    reasons = Counter(r for o in outcomes for r in o.reasons)
    diag = {k: np.concatenate([o.diagnostics[k] for o in outcomes]) for k in DIAGNOSTICS}
    t_enc = sum(o.encode_s for o in outcomes)
    t_dec = sum(o.decode_s for o in outcomes)
    return RoundtripResult(
        n=n,
        matched=int(matched.sum()),
        match_rate=float(matched.mean()) if n else float("nan"),
        failures=sum(1 for o in outcomes for r in o.reasons if not r.startswith("matcher")),
        failure_reasons=dict(sorted(reasons.items())),
        mean_diagnostics={
            k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for k, v in diag.items()
        },
        encode_per_s=n / t_enc if t_enc > 0 else float("nan"),
        decode_per_s=n / t_dec if t_dec > 0 else float("nan"),
        mode=options.mode,
        noise=noise,
        seed=seed,
        num_elements_mismatch=sum(o.elements_mismatch for o in outcomes),
        atom_count_errors=sum(o.atom_count_errors for o in outcomes),
        elements=options.elements,
        matched_mask=matched,
    )
