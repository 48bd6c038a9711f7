"""Crystal structure prediction (CSP) scoring: generated crystals against the target crystals they name.

The published protocol (DiffCSP's ``scripts/compute_metrics.py``, ``RecEval`` for one sample per
target and ``RecEvalBatch`` for k): ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``;
``get_rms_dist(sample, target)`` (RMS displacement normalised by (V/N)^(1/3)); a target is
matched when a valid sample naming it matches; **match rate** = matched targets / targets;
**RMSE** = mean over matched targets of the (best, for k > 1) RMS distance. Invalid samples are
misses. "Valid" is CDVAE's ``Crystal.valid``: the structure builds with volume >= 0.1 Å³, all
interatomic distances >= 0.5 Å, SMACT-valid composition (:mod:`.compositional`, SMACT 2.2.1's
tables) and CrystalNN fingerprints that can be computed. With one sample per target DiffCSP also
requires the *target* to be valid (``c1.valid and c2.valid``; a SMACT-invalid test crystal is a
miss for every model), with k > 1 it does not; ``require_valid_target=None`` follows that.

OMatG's additions ("All that structure matches does not glitter", arXiv 2509.12178; OMatG
``omg/analysis/analysis.py`` ``match_rmsds`` / ``metre_rmsds``):

- **cRMSE**: the mean over targets of the RMS distance, with ``stol`` for unmatched targets.
- **METRe** (match everyone to reference): a target counts as matched when *any* valid sample of
  the same reduced composition matches it, whichever target that sample named (polymorphs in the
  test set); its RMSE and cRMSE use each target's best match the same way.

Per-target rows (``CSPResult.rows``) say how many samples named the target, how many were valid,
the best match and why a target was missed. Both the reading/validity of the samples and the
matching run in worker processes with a progress bar; each match has a wall-clock limit (a
generated cell can keep the matcher busy for minutes), and a match that runs out is a miss
counted in ``n_timeouts``.
"""

from __future__ import annotations

import csv
import math
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crysgen.crystal_set import CrystalSet
from crysgen.errors import CrysgenError

MATCHER = {"stol": 0.5, "angle_tol": 10.0, "ltol": 0.3}
"""DiffCSP's ``StructureMatcher`` settings (also CDVAE's, FlowMM's, CrystaLLM's, OMatG's CSP defaults)."""
VALIDITY = ("cdvae", "structural", "none")
"""What makes a sample (and a target, where required) valid: CDVAE's full check, distances and
volume only, or any structure that was read."""
TIME_LIMIT_S = 60.0
"""Wall-clock seconds per ``get_rms_dist`` call before it counts as a miss."""


SITE_BINS = (1, 5, 9, 13, 17)
"""Lower edges of :meth:`CSPResult.breakdown`'s site-count groups (1-4, 5-8, ..., 17+)."""


def _sort_key(group: Any) -> tuple[int, Any]:
    """Numeric order for site ranges ("5-8") and element counts, text after."""
    head = str(group).split("-")[0].rstrip("+")
    return (0, int(head)) if head.isdigit() else (1, str(group))


@dataclass
class CSPSample:
    """One generated crystal and the id of the target crystal it is a prediction for.

    Attributes:
        id: the sample's id.
        target: id of its target crystal in the targets CrystalSet.
        structure: the crystal (pymatgen ``Structure``), or None.
        path: a CIF to read the structure from (in a worker) when ``structure`` is None.
        problem: why there is no structure (a sampling failure, an unreadable file).
    """

    id: str
    target: str
    structure: Any = None
    path: str | None = None
    problem: str | None = None


@dataclass
class CSPResult:
    """CSP figures over the targets that samples name, and one row per target.

    Attributes:
        match_rate: matched targets / targets (DiffCSP's; best of k when k samples name a target).
        rmse: mean normalised RMS distance over matched targets (NaN when none matched).
        crmse: OMatG's cRMSE: mean over targets of the RMS distance, ``stol`` where unmatched.
        metre: OMatG's METRe rate (any valid sample of the same reduced composition may match).
        metre_rmse: mean best RMS distance over METRe-matched targets.
        metre_crmse: METRe's cRMSE.
        n_targets: targets named by at least one sample (the denominator).
        n_samples: samples read (failures included).
        k: the most samples that name one target.
        samples_per_target: how many targets have each number of samples.
        n_invalid_samples: samples that are not valid (misses).
        n_invalid_targets: targets that are not valid (misses where required).
        require_valid_target: whether a target had to be valid.
        validity: the validity check used (see ``VALIDITY``).
        n_timeouts: matches stopped at the time limit (counted as misses).
        n_targets_in_file: crystals in the targets set.
        n_unknown_target: samples whose target is not in the targets set (ignored).
        rows: per target: id, formula, counts, validity, the best match and the METRe match.
        seconds: wall-clock time of reading/validity and of matching.
        cell: the lattice alone, each target's first sample's cell against the target's
            (:func:`cell_agreement`).
    """

    match_rate: float
    rmse: float
    crmse: float
    metre: float
    metre_rmse: float
    metre_crmse: float
    n_targets: int
    n_samples: int
    k: int
    samples_per_target: dict[int, int]
    n_invalid_samples: int
    n_invalid_targets: int
    require_valid_target: bool
    validity: str
    n_timeouts: int
    n_targets_in_file: int
    n_unknown_target: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    cell: CellAgreement = field(default_factory=lambda: CellAgreement(math.nan, math.nan))

    def summary(self) -> dict[str, Any]:
        """Every figure except the rows and the cells (:attr:`cell`), JSON-ready."""
        return {k: v for k, v in self.__dict__.items() if k not in ("rows", "cell")}

    def breakdown(self, site_bins: Sequence[int] = SITE_BINS) -> dict[str, Any]:
        """Match rates of the targets grouped by size and chemistry, and why targets were missed.

        Args:
            site_bins: lower edges of the site-count groups (sites of the target's cell).

        Returns:
            ``by_sites`` and ``by_elements`` (distinct elements of the target): per group
            ``{"targets": n, "match_rate_percent": p}``, and where :attr:`cell` holds verdicts
            ``cell_shape_match_percent`` (the group's targets whose first sample has the right cell
            shape) and ``match_rate_right_cell_percent`` (matched targets among those; None when
            none has), which split a group's misses into wrong cells and misplaced atoms;
            ``problems``: targets per miss reason.
        """
        edges = sorted(site_bins)

        def site_group(n: int) -> str:
            lo = max(e for e in edges if e <= n) if n >= edges[0] else 0
            hi = next((e - 1 for e in edges if e > n), None)
            return f"{lo}-{hi}" if hi is not None else f"{lo}+"

        cells = self.cell.per_target

        def percent(flags: list[bool]) -> float | None:
            return round(100 * sum(flags) / len(flags), 2) if flags else None

        def grouped(key: Callable[[dict[str, Any]], Any]) -> dict[str, dict[str, Any]]:
            groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for r in self.rows:
                groups[key(r)].append(r)
            out: dict[str, dict[str, Any]] = {}
            for g, rs in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
                matched = [bool(r["matched"]) for r in rs]
                out[str(g)] = {"targets": len(rs), "match_rate_percent": percent(matched)}
                if cells:
                    right = [bool(cells.get(r["id"], [None, False])[1]) for r in rs]
                    out[str(g)] |= {"cell_shape_match_percent": percent(right),
                                    "match_rate_right_cell_percent": percent(
                                        [m for m, ok in zip(matched, right, strict=True) if ok])}
            return out

        from pymatgen.core import Composition

        return {"by_sites": grouped(lambda r: site_group(int(r["num_sites"]))),
                "by_elements": grouped(lambda r: len(Composition(r["formula"]).elements)),
                "problems": dict(Counter(str(r["problem"]) or "matched" for r in self.rows).most_common())}


def load_csp_samples(path: str | Path) -> list[CSPSample]:
    """Generated crystals that name their targets.

    Args:
        path: a `crysgen sample` output folder whose ``samples.csv`` has a ``target`` column
            (rows with an empty ``target`` are de-novo samples and are skipped; a row with an
            empty ``cif`` failed and is a miss), or a CrystalSet ``.npz`` whose ids are the target
            ids (several crystals may share one: best of k).

    Raises:
        CrysgenError: if the input is of neither kind or names no target.
    """
    path = Path(path)
    if path.suffix == ".npz" and path.is_file():
        cs = CrystalSet.load(path)
        out = [CSPSample(str(cs.ids[i]), str(cs.ids[i]), cs.to_structure(i)) for i in range(len(cs))]
        counts = Counter(s.id for s in out)
        seen: Counter[str] = Counter()
        for s in out:  # unique sample ids when several name one target: TARGET#0, TARGET#1, ...
            if counts[s.target] > 1:
                s.id = f"{s.target}#{seen[s.target]}"
                seen[s.target] += 1
        return out
    table = path / "samples.csv"
    if not (path.is_dir() and table.is_file()):
        raise CrysgenError(f"CSP samples: {path} is neither a `crysgen sample` folder (with samples.csv) "
                           "nor a CrystalSet .npz")
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        if "target" not in (reader.fieldnames or []):
            raise CrysgenError(f"{table} has no `target` column: CSP scoring needs samples that name their "
                               "target crystals (sample with --compositions TARGETS.npz)")
        rows = list(reader)
    out = []
    for r in rows:
        if not r.get("target"):
            continue
        cif = r.get("cif") or ""
        if cif:
            out.append(CSPSample(r["id"], r["target"], path=str(path / cif)))
        else:
            reason = f"not decoded: {r.get('failure') or 'no CIF'}"
            out.append(CSPSample(r["id"], r["target"], problem=reason))
    if not out:
        raise CrysgenError(f"{table}: no row names a target (the `target` column is empty)")
    return out


def _composition_key(structure: Any) -> tuple[tuple[int, int], ...]:
    """Reduced composition as sorted (Z, count / gcd) pairs."""
    counts = Counter(site.specie.Z for site in structure)
    g = math.gcd(*counts.values())
    return tuple(sorted((z, n // g) for z, n in counts.items()))


def _validity(structure: Any, mode: str, tables: str) -> str | None:
    """None if valid, else the reason (CDVAE's ``Crystal.valid`` for ``mode="cdvae"``)."""
    import warnings

    from crysgen.evaluation.validity import structurally_valid

    if mode == "none":
        return None
    if not np.isfinite(structure.volume) or structure.volume < 0.1:
        return "volume < 0.1 Å³"
    if not structurally_valid(structure):
        return "atoms closer than 0.5 Å"
    if mode == "structural":
        return None
    from crysgen.evaluation.compositional import smact_valid

    if not smact_valid([site.specie.Z for site in structure], tables=tables):
        return "composition not SMACT-valid"
    from crysgen.evaluation.fingerprints import structure_fingerprint

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure_fingerprint(structure)
    except ImportError:
        raise  # a missing library is a broken install, not an invalid crystal
    except Exception as exc:
        return f"CrystalNN fingerprint failed: {type(exc).__name__}"
    return None


def _read(sample: CSPSample) -> tuple[Any, str | None]:
    """(structure or None, why it is unreadable) of one sample; reading its CIF where needed."""
    if sample.structure is not None or not sample.path:
        return sample.structure, None
    try:
        from pymatgen.core import Structure

        return Structure.from_file(sample.path), None
    except Exception as exc:
        return None, f"unreadable: {type(exc).__name__}: {str(exc)[:100]}"


def _read_and_check(args: tuple[CSPSample, str, str]) -> tuple[Any, str | None, str | None]:
    """(structure, problem, invalid reason) of one sample; reading a CIF where needed."""
    sample, mode, tables = args
    s, unreadable = _read(sample)
    if unreadable:
        return None, unreadable, None
    if s is None:
        return None, sample.problem or "no structure", None
    try:
        return s, None, _validity(s, mode, tables)
    except ImportError:
        raise  # every sample would count as invalid: say what is missing instead
    except Exception as exc:
        return s, None, f"validity check failed: {type(exc).__name__}: {str(exc)[:100]}"


class _TimeUp(Exception):
    pass


def _limited(fn: Callable[[], Any], seconds: float | None) -> Any:
    """``fn()`` stopped with ``_TimeUp`` after ``seconds`` (where SIGALRM is usable)."""
    in_main = threading.current_thread() is threading.main_thread()
    if not seconds or not hasattr(signal, "setitimer") or not in_main:
        return fn()

    def alarm(signum, frame):
        raise _TimeUp

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_MATCHER = None


def _rms(pair: tuple[Any, Any], time_limit_s: float | None) -> tuple[float | None, bool]:
    """(normalised RMS distance or None, timed out) of a sample against a target."""
    global _MATCHER
    if _MATCHER is None:
        from pymatgen.analysis.structure_matcher import StructureMatcher

        _MATCHER = StructureMatcher(ltol=MATCHER["ltol"], stol=MATCHER["stol"],
                                    angle_tol=MATCHER["angle_tol"])
    sample, target = pair
    try:
        res = _limited(lambda: _MATCHER.get_rms_dist(sample, target), time_limit_s)
    except _TimeUp:
        return None, True
    except Exception:  # DiffCSP: an exception in the matcher is a miss
        return None, False
    return (None if res is None else float(res[0])), False


def _match_target(args: tuple[Any, list[tuple[int, Any]], float | None]) -> list[tuple[int, Any, bool]]:
    """RMS distances of the given samples (index, structure) against one target."""
    import warnings

    target, samples, limit = args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(i, *_rms((s, target), limit)) for i, s in samples]


def _pool_map(fn: Callable, items: list, workers: int, desc: str, progress: bool) -> list:
    from tqdm.auto import tqdm

    if workers <= 1 or len(items) < 4:
        return [fn(x) for x in tqdm(items, desc=desc, disable=not progress, leave=False)]
    with ProcessPoolExecutor(workers) as pool:
        chunk = max(1, min(64, len(items) // (workers * 16)))
        return list(tqdm(pool.map(fn, items, chunksize=chunk), total=len(items), desc=desc,
                         disable=not progress, leave=False))


def _match_candidates(args: tuple[list[Any], float | None]) -> list[tuple[int, int]]:
    """The index pairs (a < b) of one target's candidates that match each other."""
    import warnings

    structures, limit = args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(a, b) for a in range(len(structures)) for b in range(a + 1, len(structures))
                if structures[a] is not None and structures[b] is not None
                and _rms((structures[a], structures[b]), limit)[0] is not None]


def mutual_matches(candidates: Sequence[Sequence[Any]], *, workers: int = 1,
                   time_limit_s: float | None = TIME_LIMIT_S, progress: bool = True) -> np.ndarray:
    """Which of each target's candidate crystals match each other (DiffCSP's matcher, ``MATCHER``).

    The agreement between several predictions of one target, without the target: the candidate
    that most others match is the sampler's consensus (a self-consistency choice). A match that
    runs past ``time_limit_s`` or raises counts as no match, as in :func:`score_csp`.

    Args:
        candidates: per target its k candidate pymatgen structures (None: no candidate there, e.g.
            an invalid sample); every target the same k.
        workers: processes (one target per task).
        time_limit_s: wall-clock limit per match (None: none).
        progress: show a progress bar.

    Returns:
        bool (n, k, k), symmetric, False on the diagonal: ``[i, a, b]`` says candidates a and b of
        target i match.

    Raises:
        CrysgenError: when the targets have different numbers of candidates.
    """
    ks = {len(c) for c in candidates}
    if len(ks) > 1:
        raise CrysgenError("mutual_matches: every target needs the same number of candidates, "
                           f"got {sorted(ks)}")
    k = ks.pop() if ks else 0
    out = np.zeros((len(candidates), k, k), bool)
    done = _pool_map(_match_candidates, [(list(c), time_limit_s) for c in candidates], workers,
                     "CSP: candidates against each other", progress)
    for i, pairs in enumerate(done):
        for a, b in pairs:
            out[i, a, b] = out[i, b, a] = True
    return out


@dataclass
class CellAgreement:
    """How the cells of CSP samples compare with their targets' cells: the lattice alone.

    Attributes:
        shape_match_rate: targets whose (first) sample's cell has the target's cell shape
            (:func:`same_cell_shape`: scaled to the target's volume, mapped within
            :data:`MATCHER`'s ``ltol`` and ``angle_tol`` in any setting) / targets named.
        median_volume_error: median over targets with a sample of |ln(V_sample / V_target)|.
        per_target: target id -> [|ln(V_sample / V_target)| or None (no sample), shape matched].
    """

    shape_match_rate: float
    median_volume_error: float
    per_target: dict[str, list] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """``shape_match_percent`` and ``median_volume_error`` (|ln V ratio|), JSON-ready."""
        return {"shape_match_percent": 100 * self.shape_match_rate,
                "median_volume_error": self.median_volume_error}


def cell_agreement(samples: Sequence[CSPSample], targets: CrystalSet) -> CellAgreement:
    """The lattice part of CSP: each target's first sample's cell against the target's.

    A sample's CIF is read where it has no structure; one without a structure (or an unreadable
    CIF) counts as a shape miss with no volume error. A sample that is a
    supercell of a smaller repeat (which the matcher's primitive reduction can still match) counts
    as a shape miss. :func:`score_csp` gives the same as its result's ``cell``.

    Raises:
        CrysgenError: when no sample names a crystal of ``targets``.
    """
    row_of = {str(t): j for j, t in enumerate(targets.ids)}
    first: dict[str, CSPSample] = {}
    for s in samples:
        if s.target in row_of:
            first.setdefault(s.target, s)
    if not first:
        raise CrysgenError("no sample names a crystal of the targets set")
    return _cells({t: (_read(s)[0], targets.to_structure(row_of[t])) for t, s in first.items()})


def same_cell_shape(lattice: Any, reference: Any) -> bool:
    """Whether ``lattice``, scaled to ``reference``'s volume, is ``reference`` in another setting.

    Args:
        lattice: a pymatgen ``Lattice`` (Å).
        reference: the ``Lattice`` it is compared with (Å).

    Returns:
        True when a change of basis (a unimodular integer matrix, so not a superlattice) maps one
        onto the other within :data:`MATCHER`'s ``ltol`` and ``angle_tol``.
    """
    mappings = reference.find_all_mappings(lattice.scale(reference.volume), ltol=MATCHER["ltol"],
                                           atol=MATCHER["angle_tol"], skip_rotation_matrix=True)
    return any(round(abs(np.linalg.det(m[2]))) == 1 for m in mappings)


def _cells(pairs: dict[str, tuple[Any, Any]]) -> CellAgreement:
    """:class:`CellAgreement` of target id -> (its first sample's structure or None, the target's)."""
    per_target: dict[str, list] = {}
    for t, (structure, target) in pairs.items():
        if structure is None:
            per_target[t] = [None, False]
            continue
        error = abs(math.log(structure.lattice.volume / target.lattice.volume))
        per_target[t] = [error, same_cell_shape(structure.lattice, target.lattice)]
    errors = [e for e, _ in per_target.values() if e is not None]
    return CellAgreement(shape_match_rate=sum(m for _, m in per_target.values()) / len(per_target),
                         median_volume_error=float(np.median(errors)) if errors else math.nan,
                         per_target=per_target)


def score_csp(samples: Sequence[CSPSample], targets: CrystalSet, *, validity: str = "cdvae",
              require_valid_target: bool | None = None, metre: bool = True, workers: int = 1,
              time_limit_s: float | None = TIME_LIMIT_S, smact_tables: str = "smact-2.2.1",
              progress: bool = True, target_verdicts: dict[str, str | None] | None = None) -> CSPResult:
    """Match rate, RMSE, cRMSE and METRe of generated crystals against the targets they name.

    Args:
        samples: generated crystals, each naming its target (:func:`load_csp_samples`).
        targets: the target crystals (their ids are what samples name).
        validity: ``"cdvae"`` (DiffCSP's), ``"structural"`` or ``"none"`` (see ``VALIDITY``).
        require_valid_target: whether an invalid target is a miss; None: as DiffCSP, yes with one
            sample per target and no with several.
        metre: also compute OMatG's METRe (extra matches against same-composition targets).
        workers: processes for reading/validity and matching.
        time_limit_s: wall-clock limit per match (None: none).
        smact_tables: oxidation-state tables of the compositional check.
        progress: show progress bars.
        target_verdicts: a dict the caller keeps between calls that score samples against the
            same targets with the same ``validity`` and ``smact_tables``: each target's invalid
            reason (None: valid) is read from it where present and written to it where checked,
            so several scorings check each target once.

    Raises:
        CrysgenError: for an unknown validity mode or when no sample names a target of the set.
    """
    if validity not in VALIDITY:
        raise CrysgenError(f"unknown CSP validity {validity!r} (known: {', '.join(VALIDITY)})")
    t0 = time.perf_counter()
    index = {str(t): j for j, t in enumerate(targets.ids)}
    known = [s for s in samples if s.target in index]
    if not known:
        raise CrysgenError(f"no sample names a crystal of the targets set ({len(targets)} crystals; "
                           f"first named: {samples[0].target if samples else 'none'})")
    by_target: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(known):
        by_target[index[s.target]].append(i)
    named = sorted(by_target)
    per_target = Counter(len(v) for v in by_target.values())
    k = max(per_target)
    need_target = (k == 1) if require_valid_target is None else require_valid_target

    checked = _pool_map(_read_and_check, [(s, validity, smact_tables) for s in known], workers,
                        "CSP: reading and checking samples", progress)
    structs = [c[0] for c in checked]
    sample_ok = [c[0] is not None and c[1] is None and c[2] is None for c in checked]
    target_structs = {j: targets.to_structure(j) for j in named}
    target_reason: dict[int, str | None] = {j: None for j in named}
    if need_target:
        known_verdicts = {} if target_verdicts is None else target_verdicts
        unchecked = [j for j in named if str(targets.ids[j]) not in known_verdicts]
        tc = _pool_map(_read_and_check, [(CSPSample(str(targets.ids[j]), "", target_structs[j]), validity,
                                          smact_tables) for j in unchecked], workers,
                       "CSP: checking targets", progress)
        known_verdicts.update({str(targets.ids[j]): c[2] for j, c in zip(unchecked, tc, strict=True)})
        target_reason = {j: known_verdicts[str(targets.ids[j])] for j in named}
    t_read = time.perf_counter() - t0

    # pairs: every valid sample against the target it names; for METRe also against every
    # (valid, where required) target of the same reduced composition
    pairs: dict[int, set[int]] = {j: set() for j in named}
    for j in named:
        if target_reason[j] is None:
            pairs[j].update(i for i in by_target[j] if sample_ok[i])
    if metre:
        by_comp: dict[tuple, list[int]] = defaultdict(list)
        for i, s in enumerate(structs):
            if sample_ok[i]:
                by_comp[_composition_key(s)].append(i)
        for j in named:
            if target_reason[j] is None:
                pairs[j].update(by_comp.get(_composition_key(target_structs[j]), []))
    tasks = [(target_structs[j], [(i, structs[i]) for i in sorted(pairs[j])], time_limit_s) for j in named]
    order = sorted(range(len(tasks)), key=lambda n: -len(tasks[n][1]))  # big tasks first
    done = _pool_map(_match_target, [tasks[n] for n in order], workers, "CSP: matching", progress)
    results = {named[n]: r for n, r in zip(order, done, strict=True)}

    stol = MATCHER["stol"]
    rows, best, best_m = [], [], []
    timeouts = 0
    for j in named:
        own = set(by_target[j])
        res = results[j]
        timeouts += sum(1 for _, _, to in res if to)
        own_hits = [(r, i) for i, r, _ in res if r is not None and i in own]
        any_hits = [(r, i) for i, r, _ in res if r is not None]
        b = min(own_hits) if own_hits else None
        m = min(any_hits) if any_hits else None
        best.append(b[0] if b else None)
        best_m.append(m[0] if m else None)
        invalid = [checked[i][1] or checked[i][2] for i in by_target[j] if not sample_ok[i]]
        if b:
            reason = ""
        elif target_reason[j]:
            reason = f"target invalid: {target_reason[j]}"
        elif not any(sample_ok[i] for i in by_target[j]):
            reason = f"no valid sample: {Counter(invalid).most_common(1)[0][0]}"
        elif any(to for i, _, to in res if i in own):
            reason = "no match (a match timed out)"
        else:
            reason = "no match"
        rows.append({
            "id": str(targets.ids[j]), "formula": target_structs[j].composition.reduced_formula,
            "num_sites": len(target_structs[j]), "n_samples": len(by_target[j]),
            "n_valid_samples": sum(sample_ok[i] for i in by_target[j]),
            "target_valid": target_reason[j] is None if need_target else "",
            "matched": b is not None, "rms_dist": b[0] if b else "",
            "best_sample": known[b[1]].id if b else "",
            "metre_matched": m is not None if metre else "", "metre_rms_dist": m[0] if m else "",
            "metre_sample": known[m[1]].id if m else "", "problem": reason})
    n = len(named)

    def mean(xs: list[float | None]) -> float:
        hit = [x for x in xs if x is not None]
        return float(np.mean(hit)) if hit else float("nan")

    nan = float("nan")
    cell = _cells({str(targets.ids[j]): (structs[by_target[j][0]], target_structs[j]) for j in named})
    return CSPResult(
        match_rate=sum(x is not None for x in best) / n, rmse=mean(best),
        crmse=float(np.mean([stol if x is None else x for x in best])),
        metre=sum(x is not None for x in best_m) / n if metre else nan,
        metre_rmse=mean(best_m) if metre else nan,
        metre_crmse=float(np.mean([stol if x is None else x for x in best_m])) if metre else nan,
        n_targets=n, n_samples=len(samples), k=k, samples_per_target=dict(sorted(per_target.items())),
        n_invalid_samples=sum(not ok for ok in sample_ok),
        n_invalid_targets=sum(r is not None for r in target_reason.values()),
        require_valid_target=need_target, validity=validity, n_timeouts=timeouts,
        n_targets_in_file=len(targets), n_unknown_target=len(samples) - len(known), rows=rows,
        seconds={"read_and_validity": round(t_read, 2),
                 "matching": round(time.perf_counter() - t0 - t_read, 2)}, cell=cell)
