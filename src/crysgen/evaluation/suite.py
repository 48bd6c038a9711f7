"""`crysgen evaluate`: score generated crystals against training and reference data, per structure.

Metric families (each a small named unit; a failure inside one structure becomes a reason in
its row of ``structures.csv``, never a failed run):

- ``validity``: CDVAE structural (distances >= 0.5 Å, volume >= 0.1 Å³) and compositional
  (SMACT) validity.
- ``distributions``: the seed's K-S statistics of a, b, c, α, β, γ, space group (spglib,
  0.1 Å) and atomic number, with overlay plots; CDVAE's Wasserstein distances of density and of
  the number of elements over up to 1,000 valid samples.
- ``coverage``: CDVAE's COV-R / COV-P with CrystalNN + Magpie fingerprints, over every generated
  crystal whose fingerprints can be computed (``cov_over="valid"``: the valid ones only), Magpie
  standardised with CDVAE's fixed constants (``comp_scaler``); and, from the same structure
  fingerprints, ``wdist_cn`` (Wasserstein distance of the crystals' mean CrystalNN coordination
  number) and ``cn_share_tv`` (total variation distance of the shares of sites by coordination
  number) between those generated crystals and the reference.
- ``novelty``: uniqueness within the samples and novelty against the training set
  (StructureMatcher, :mod:`crysgen.evaluation.novelty`).
- ``properties``: with a models directory, the seven pre-trained CGCNN regressors on samples and
  reference (K-S + violin plots, the seed's Fig. 7) and, with ``property_model``, CDVAE's
  Wasserstein distance of that predicted property.

- ``csp`` (off by default): crystal structure prediction scoring of samples that name their
  target crystals in the reference set (:mod:`crysgen.evaluation.csp`): DiffCSP's match rate and
  RMSE (best of k), OMatG's cRMSE and METRe, one row per target in ``structures.csv``.

- ``stability`` (off by default, `--stability`): CHGNet relaxation of every structurally valid
  sample (energy per atom, RMSD, volume change, per-structure time limit; batched: each worker
  relaxes up to 64 structures in lockstep, one CHGNet call per FIRE step), energy above the hull
  of the training + reference crystals evaluated with the same potential (cached on disk by the
  data's hash; every reference crystal, also under ``reference_limit``), stable rates (≤ 0.1
  and ≤ 0.0 eV/atom) and S.U.N.; see
  :mod:`crysgen.evaluation.stability`.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.crystal_set import CrystalSet, part_path, write_text_atomic
from crysgen.data.guards import check_device, check_input_file, dumps_strict, space_group_number
from crysgen.data.structures import InputCrystal, load_inputs
from crysgen.errors import CrysgenError
from crysgen.evaluation.stability import RelaxOptions, static_pass_size

if TYPE_CHECKING:
    import threading

    from pymatgen.core import Structure

    from crysgen.evaluation.background import Background
    from crysgen.evaluation.fingerprints import Fingerprints

SCALER_CRYSTALS = 1000
"""Crystals of ``EvalOptions.comp_scaler_from`` whose fingerprints give the Magpie statistics."""
FAMILIES = ("validity", "distributions", "coverage", "novelty", "properties")
"""The families run by default."""
ALL_FAMILIES = (*FAMILIES, "stability", "csp")
"""Every family (stability needs CHGNet time: minutes on a GPU for 1,000 structures)."""
NEEDS_TRAIN = ("novelty", "stability")
"""Families that need the training set (novelty against it; the hull is built from it)."""
COV_OVER = ("all", "valid")
"""Generated crystals COV uses: every one with fingerprints (CDVAE), or only the valid ones."""
HULL_REFERENCE = ("all", "subset")
"""Reference crystals in the stability hull: every one, or only ``reference_limit``'s subset."""
CGCNN_REGRESSORS = ("formation_energy", "final_energy", "band_gap", "fermi_energy", "bulk_modulus",
                    "shear_modulus", "poisson_ratio")


@dataclass(frozen=True)
class EvalOptions:
    """What `crysgen evaluate` computes.

    Attributes:
        metrics: metric families to run (see the module docstring).
        cov_cutoffs: (structure, composition) fingerprint cut-offs; None: CDVAE's for the
            dataset named by ``dataset`` (or found in the reference file name).
        dataset: mp_20, perov_5 or carbon_24 (cut-offs); None: guessed from the reference name,
            and mp_20's cut-offs with a printed note when the name says nothing.
        comp_scaler: what standardises the Magpie composition fingerprints: ``"cdvae"`` (CDVAE's
            fixed constants, ``data/cdvae_comp_scaler.json``), ``"reference"`` (the reference's
            own statistics; a narrow reference such as perov_5 stretches composition distances:
            sanity COV-R 60 % with its own, 89 % with mp_20's, benchmarks/cov_diagnosis.py) or the
            path of a CrystalSet (.npz) whose statistics are used (a seeded subset of
            ``SCALER_CRYSTALS``).
        comp_scaler_from: the older spelling of ``comp_scaler=FILE`` (wins when given).
        cov_over: ``"all"`` (CDVAE's ``compute_cov``: every generated crystal with fingerprints)
            or ``"valid"`` (only structurally and compositionally valid ones).
        smact_tables: oxidation states and electronegativities of the compositional validity:
            ``"smact-2.2.1"`` (CDVAE's) or ``"installed"`` (the installed smact release).
        csp_validity: what makes a CSP sample valid (:data:`crysgen.evaluation.csp.VALIDITY`).
        csp_metre: also compute OMatG's METRe for CSP.
        property_model: model whose predicted property enters CDVAE's W(property).
        models_dir: where property models are found (default: $CRYSGEN_MODELS_DIR).
        workers: processes for the per-structure work (validity, fingerprints, relaxation).
        relax_workers: processes for the CHGNet relaxation when it should differ from
            ``workers`` (on a GPU each holds a CUDA context and its batches' memory).
        limit: evaluate only the first N samples.
        reference_limit: use a seeded random subset of N reference crystals (for coverage,
            distributions and properties; for the hull only with ``hull_reference="subset"``).
        hull_reference: the reference crystals of the stability hull beside the training set:
            ``"all"`` of them (default), or ``"subset"``, the ``reference_limit`` subset (how
            every evaluation before this option built its hull; a smaller hull places samples
            lower, and in chemical systems it lacks, more than 0.5 eV/atom below it).
        n_wasserstein: valid samples drawn for the Wasserstein distances (CDVAE: 1,000).
        wasserstein_draws: further draws of ``n_wasserstein`` valid samples (from their own
            generator: the protocol's draw stays as it was) whose mean, standard deviation and
            range go beside each Wasserstein distance as its ``spread``, with the distance on
            every valid sample; 0: none.
        seed: seeds every random subset.
        device: "cpu" or "cuda" for the property models and CHGNet.
        relax_steps: CHGNet FIRE steps at most per structure.
        relax_fmax: force convergence (eV/Å).
        relax_time_limit_s: wall-clock limit per relaxation (s).
        relax_batch_size: structures per CHGNet forward pass (bounds GPU memory); None: the
            relaxation engine's own (64 for ase, 512 for torch) and 64 for static energies.
        relax_engine: "auto", "ase" or "torch" (``RelaxOptions.engine``: the same relaxation, on
            the CPU per structure or batched on the device).
            The five relax_* defaults are :class:`~crysgen.evaluation.stability.RelaxOptions`'s.
        potential: what rates stability: ``"chgnet"`` (default), ``"sevennet"`` (SevenNet-0's
            static energies of the CHGNet-relaxed structures and of the hull references; needs
            ``pip install 'crysgen[potentials]'``) or ``"both"`` (each sample gets E_hull under
            both, with both stable rates and their agreement).
        cache_dir: where the reference hull's energies and reference fingerprints are cached
            (default $CRYSGEN_CACHE or ~/.cache/crysgen).
    """

    metrics: tuple[str, ...] = FAMILIES
    cov_cutoffs: tuple[float, float] | None = None
    dataset: str | None = None
    comp_scaler: str = "cdvae"
    comp_scaler_from: str | None = None
    cov_over: str = "all"
    smact_tables: str = "smact-2.2.1"
    csp_validity: str = "cdvae"
    csp_metre: bool = True
    property_model: str | None = None
    models_dir: str | None = None
    workers: int = 1
    relax_workers: int | None = None
    limit: int | None = None
    reference_limit: int | None = None
    hull_reference: str = "all"
    n_wasserstein: int = 1000
    wasserstein_draws: int = 20
    seed: int = 0
    device: str = "cpu"
    relax_steps: int = RelaxOptions.steps
    relax_fmax: float = RelaxOptions.fmax
    relax_time_limit_s: float = RelaxOptions.time_limit_s
    relax_batch_size: int | None = RelaxOptions.batch_size
    relax_engine: str = RelaxOptions.engine
    cache_dir: str | None = None
    potential: str = "chgnet"

    def __post_init__(self) -> None:
        bad = set(self.metrics) - set(ALL_FAMILIES)
        if bad:
            raise CrysgenError(f"unknown metric famil{'ies' if len(bad) > 1 else 'y'}: "
                               f"{', '.join(sorted(bad))} (known: {', '.join(ALL_FAMILIES)})")
        if self.cov_over not in COV_OVER:
            raise CrysgenError(f"cov_over must be one of {', '.join(COV_OVER)}, got {self.cov_over!r}")
        if self.hull_reference not in HULL_REFERENCE:
            raise CrysgenError(f"hull_reference must be one of {', '.join(HULL_REFERENCE)}, "
                               f"got {self.hull_reference!r}")
        from crysgen.evaluation.compositional import TABLES
        from crysgen.evaluation.potentials import POTENTIAL_CHOICES

        if self.potential not in POTENTIAL_CHOICES:
            raise CrysgenError(f"--potential must be one of {', '.join(POTENTIAL_CHOICES)}, "
                               f"got {self.potential!r}")
        from crysgen.evaluation.stability import RELAX_ENGINES

        if self.relax_engine not in RELAX_ENGINES:
            raise CrysgenError(f"--relax-engine must be one of {', '.join(RELAX_ENGINES)}, "
                               f"got {self.relax_engine!r}")
        if self.smact_tables not in TABLES:
            raise CrysgenError(f"smact_tables must be one of {', '.join(TABLES)}, got {self.smact_tables!r}")

    @property
    def scaler(self) -> str:
        """``"cdvae"``, ``"reference"`` or a CrystalSet path (``comp_scaler_from`` wins)."""
        return self.comp_scaler_from or self.comp_scaler


@dataclass
class Evaluation:
    """The outcome: metrics (each with the number of structures it used) and per-structure rows."""

    metrics: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]]
    plots: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Further per-item tables written next to structures.csv (name -> rows)."""
    relaxed: dict[int, Any] = field(default_factory=dict)
    """Row index -> relaxed pymatgen structure (stability), written as ``relaxed.extxyz``."""


def _metric(value: float | dict[str, Any], n: int, **extra: Any) -> dict[str, Any]:
    return {"value": value, "n": int(n), **extra}


def _number(row: dict[str, Any], key: str) -> float:
    """A row's numeric field, NaN where the row has none (a sample that failed before it)."""
    v = row.get(key)
    return float(v) if v not in (None, "") else float("nan")


def _wdist(o: EvalOptions, values: list[float], ref: np.ndarray, draw: np.ndarray, valid_idx: np.ndarray,
           **extra: Any) -> dict[str, Any]:
    """CDVAE's W on the protocol's draw of valid samples (``n``: its finite values), with its spread.

    Args:
        o: the options (``n_wasserstein``, ``wasserstein_draws``, ``seed``).
        values: one value per generated sample (NaN where it has none).
        ref: (R,) the reference values.
        draw: indices of the protocol's draw (a subset of ``valid_idx``).
        valid_idx: indices of every valid sample, which the spread's draws come from.
        **extra: further fields of the metric (e.g. the property model).
    """
    from crysgen.evaluation.distributions import wasserstein, wasserstein_spread

    v = np.asarray(values, float)
    chosen = v[draw]
    if o.wasserstein_draws > 0:
        # a generator of its own, so that the protocol's draw (and every figure before) is unchanged
        extra["spread"] = wasserstein_spread(v[valid_idx], ref, o.n_wasserstein, o.wasserstein_draws,
                                             np.random.default_rng([o.seed, 1]))
    return _metric(wasserstein(chosen, ref), int(np.isfinite(chosen).sum()), **extra)


def _guarded(fn: Callable[[Any], Any], x: Any) -> tuple[Any, str | None]:
    try:
        return fn(x), None
    except ImportError:
        raise  # a missing library is a broken install, not one structure's failure
    except Exception as exc:  # one structure's failure is recorded, not raised
        return None, f"{type(exc).__name__}: {str(exc)[:150]}"


def _map(fn: Callable, items: list, workers: int, desc: str, progress: bool, *,
         spawn: bool = False, min_items: int = 8,
         died: Callable[[Any, str], Any] | None = None) -> list:
    """``fn`` over ``items`` in ``workers`` processes (in this one below ``min_items`` items).

    ``spawn`` for workers that use CUDA: a forked child cannot re-initialise CUDA once the
    parent has used it. An item whose worker process dies (a crash in native code) gets
    ``died(item, reason)``; without ``died`` the run stops with an error (never hangs).
    """
    import multiprocessing

    from tqdm.auto import tqdm

    from crysgen.data.parallel import robust_map

    if workers <= 1 or len(items) < min_items:
        return [fn(x) for x in tqdm(items, desc=desc, disable=not progress, leave=False)]

    def _stop(_item: Any, reason: str) -> Any:
        raise CrysgenError(f"{desc}: {reason}")

    context = multiprocessing.get_context("spawn") if spawn else None
    with tqdm(total=len(items), desc=desc, disable=not progress, leave=False) as bar:
        return robust_map(fn, items, workers=workers, died=died or _stop, context=context,
                          chunksize=max(1, len(items) // (workers * 8)), on_done=bar.update)


def _basics_died(_s: Any, reason: str) -> tuple[dict[str, Any], bool, bool]:
    return {"struct_valid": "", "struct_valid_reason": reason}, False, False


def _basics(s: Structure, tables: str = "smact-2.2.1") -> tuple[dict[str, Any], bool, bool]:
    """One structure's basics: validity, composition, density, cell and space group.

    Args:
        s: the structure.
        tables: SMACT tables of the compositional validity.

    Returns:
        (row values with the reasons of what failed, structurally valid, compositionally valid).
    """
    from crysgen.evaluation.compositional import smact_valid
    from crysgen.evaluation.validity import structurally_valid

    row: dict[str, Any] = {}
    v, err = _guarded(structurally_valid, s)
    row["struct_valid"] = bool(v) if err is None else ""
    if err:
        row["struct_valid_reason"] = err
    comp = False
    try:
        comp = smact_valid([site.specie.Z for site in s], tables=tables)
        row["comp_valid"] = bool(comp)
    except ImportError:
        raise
    except Exception as exc:
        row["comp_valid"], row["comp_valid_reason"] = "", f"{type(exc).__name__}: {exc}"
    row["num_elements"] = len(s.composition.elements)
    row["density_g_cm3"], _ = _guarded(lambda x: float(x.density), s)
    (a, b, c), (al, be, ga) = s.lattice.abc, s.lattice.angles
    row.update(a=a, b=b, c=c, alpha=al, beta=be, gamma=ga)
    sg, err = _guarded(space_group_number, s)
    row["space_group"] = sg if sg else ""
    if err:
        row["space_group_reason"] = err
    return row, bool(v), bool(comp)


def reference_fingerprints(ref_cs: CrystalSet, ref: list[Any], o: EvalOptions, progress: bool, *,
                           stop: threading.Event | None = None) -> list[Fingerprints]:
    """Fingerprints of every reference crystal, cached on disk by the data's content.

    :func:`crysgen.evaluation.fingerprints.cached_fingerprints` with the options' ``workers``
    and ``cache_dir``: the cache lives in ``<cache_dir>/fingerprints/`` under a key of the set's
    content hash, the featurizer presets and the matminer and pymatgen (CrystalNN) versions; a
    cache that cannot be read is recomputed with a warning on stderr and overwritten atomically.

    Args:
        ref_cs: the reference crystals (their content keys the cache).
        ref: the same crystals as pymatgen structures, in the same order.
        o: options (``workers``, ``cache_dir``).
        progress: show a progress bar while computing.
        stop: when set, the computing ends early with
            :class:`~crysgen.evaluation.fingerprints.FingerprintsStopped` (nothing is cached).

    Returns:
        Per crystal: (structure fingerprint (61,), composition fingerprint (132,), None), or
        (None, None, reason) where a fingerprint failed.
    """
    from crysgen.evaluation.fingerprints import cached_fingerprints

    return cached_fingerprints(ref_cs, ref, workers=o.workers, cache_dir=o.cache_dir, progress=progress,
                               stop=stop)


def _reference_fingerprints_behind(ref_cs: CrystalSet, ref: list[Any], o: EvalOptions,
                                   progress: bool) -> Background[list[Fingerprints]] | None:
    """:func:`reference_fingerprints` started in the background, or None where not worth it.

    A cold start's reference fingerprints are CPU work (CrystalNN in ``o.workers`` processes)
    that nothing before coverage's last step needs, so they compute while the families after
    coverage run (the stability family's relaxation is mostly GPU work); a daemon thread drives
    the worker processes (:class:`~crysgen.evaluation.background.Background`). None (computed or
    read in place) where the cache file is there (reading it is quick) or with one worker (the
    thread would compute them itself, competing with the main thread for the interpreter).
    """
    from crysgen.evaluation.background import Background
    from crysgen.evaluation.fingerprints import cache_path

    if o.workers <= 1 or cache_path(ref_cs, o.cache_dir).exists():
        return None
    return Background(lambda stop: reference_fingerprints(ref_cs, ref, o, progress, stop=stop),
                      name="reference fingerprints")


def _comp_scaler(o: EvalOptions, ref_comp: np.ndarray,
                 progress: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean and std (132,) standardising Magpie fingerprints, and where they come from.

    CDVAE's fixed constants (``o.scaler == "cdvae"``), the reference's own composition
    fingerprints ``ref_comp`` (R, 132) (``"reference"``), or a seeded subset of a CrystalSet file.
    """
    from crysgen.evaluation.fingerprints import cdvae_comp_scaler, fit_comp_scaler

    if o.scaler == "cdvae":
        return (*cdvae_comp_scaler(), "cdvae (CompScalerMeans/Stds, cdvae/common/constants.py)")
    if o.scaler == "reference":
        return (*fit_comp_scaler(ref_comp), "reference")
    cs = CrystalSet.load(o.scaler)
    if len(cs) > SCALER_CRYSTALS:
        cs = cs.subset(np.sort(np.random.default_rng(0).choice(len(cs), SCALER_CRYSTALS, replace=False)))
    fps = reference_fingerprints(cs, [cs.to_structure(i) for i in range(len(cs))], o, progress)
    mean, std = fit_comp_scaler(np.array([f[1] for f in fps if f[2] is None]))
    return mean, std, f"{Path(o.scaler).name} ({len(cs)} crystals)"


def _csp(samples: str | Path | list[str | Path], reference: str | Path, o: EvalOptions,
         progress: bool) -> Evaluation:
    """The ``csp`` family: samples that name their targets, scored against the reference set."""
    from crysgen.evaluation.csp import MATCHER, load_csp_samples, score_csp

    t0 = time.perf_counter()
    items = [samples] if isinstance(samples, (str, Path)) else list(samples)
    gen = [c for item in items for c in load_csp_samples(item)][: o.limit]
    res = score_csp(gen, CrystalSet.load(reference), validity=o.csp_validity, metre=o.csp_metre,
                    workers=o.workers, smact_tables=o.smact_tables, progress=progress)
    cells = res.cell
    common = {"k": res.k, "validity": res.validity, "require_valid_target": res.require_valid_target}
    metrics = {
        "csp_match_rate": _metric(res.match_rate, res.n_targets, matcher=MATCHER, **common,
                                  samples_per_target=res.samples_per_target,
                                  invalid_samples=res.n_invalid_samples,
                                  invalid_targets=res.n_invalid_targets,
                                  timeouts=res.n_timeouts, targets_in_file=res.n_targets_in_file,
                                  samples_with_unknown_target=res.n_unknown_target,
                                  breakdown=res.breakdown()),
        "csp_rmse": _metric(res.rmse, round(res.match_rate * res.n_targets), **common,
                            over="matched targets (normalised by (V/N)^(1/3))"),
        "csp_crmse": _metric(res.crmse, res.n_targets, **common, unmatched=f"stol = {MATCHER['stol']}"),
    }
    if o.csp_metre:
        metrics["csp_metre"] = _metric(res.metre, res.n_targets, **common)
        metrics["csp_metre_rmse"] = _metric(res.metre_rmse, round(res.metre * res.n_targets), **common)
        metrics["csp_metre_crmse"] = _metric(res.metre_crmse, res.n_targets, **common)
    metrics["csp_cell_shape_match"] = _metric(cells.shape_match_rate, len(cells.per_target),
                                              over="targets, their first sample's cell alone (scaled to "
                                                   "the target's volume, mapped within ltol and angle_tol)")
    volume_n = sum(e is not None for e, _ in cells.per_target.values())
    metrics["csp_cell_volume_error"] = _metric(cells.median_volume_error, volume_n,
                                               over="median |ln(V_sample / V_target)| of first samples")
    metrics["csp_n_samples"] = _metric(res.n_samples, res.n_samples)
    return Evaluation(metrics, res.rows, seconds={**res.seconds, "total": round(time.perf_counter() - t0, 2)})


def reference_subset(ref_cs: CrystalSet, limit: int | None, rng: np.random.Generator) -> CrystalSet:
    """The reference crystals an evaluation uses: all, or ``limit`` of them drawn with ``rng``.

    :func:`evaluate` makes this the first draw of ``np.random.default_rng(seed)``, so anyone who
    calls it the same way (a rescore, a benchmark) gets the same crystals, hull included.
    """
    if limit and limit < len(ref_cs):
        return ref_cs.subset(np.sort(rng.choice(len(ref_cs), limit, replace=False)))
    return ref_cs


def _guess_dataset(path: str | Path) -> str | None:
    from crysgen.evaluation.coverage import COV_CUTOFFS

    name = Path(path).name.lower()
    return next((d for d in COV_CUTOFFS if d in name), None)


def evaluate(samples: str | Path | list[str | Path], train: str | Path | None, reference: str | Path,
             options: EvalOptions | None = None, *, progress: bool = True,
             status_file: str | Path | None = None) -> Evaluation:
    """Run the chosen metric families; see the module docstring.

    Every family and the slow parts inside it are timed (:mod:`crysgen.evaluation.timing`):
    ``Evaluation.seconds`` holds them (``"stability"``, ``"stability.relax"``, ...) and
    ``"total"``. With ``status_file``, the times so far and the step now running are rewritten
    there whenever a step starts or ends (``"status": "running"``), and the error when the run
    fails (``"status": "failed"``), whether or not progress bars are shown.

    With both coverage and stability, reference fingerprints that are not cached yet and more
    than one worker, the reference fingerprints are computed in the background (``workers``
    processes driven by a thread) from the end of coverage's own fingerprints on, while the
    families after it run (the stability family's relaxation is mostly GPU work); coverage's
    last step then runs after stability. ``"coverage.reference_fingerprints"`` is then the time
    coverage waited for them, ``"coverage.reference_fingerprints_background"`` the wall seconds
    they took (overlapping other steps', not in ``"coverage"``'s). The figures are those of the
    sequential order; an error in that work is raised here as it was raised there, and a run that
    stops early (an error, Ctrl-C) tells it to stop without waiting for it.

    Args:
        samples: generated crystals (a `crysgen sample` folder, CIFs or a CrystalSet .npz).
        train: the training CrystalSet; needed only by ``NEEDS_TRAIN`` families.
        reference: the reference CrystalSet (the test split; CSP: the target crystals).
        options: what to compute.
        progress: show progress bars.
        status_file: where the running status is written (`crysgen evaluate`: the report's
            ``metrics.json``, replaced by :func:`write_report` at the end).

    Raises:
        CrysgenError: for missing inputs, unknown families or options.
    """
    from crysgen.evaluation.timing import FAILED, StepTimer

    timer = StepTimer(Path(status_file) if status_file is not None else None)
    try:
        with contextlib.ExitStack() as background:  # work left in the background is stopped at the end
            return _evaluate(samples, train, reference, options or EvalOptions(), progress, timer,
                             background)
    except BaseException as exc:  # the status says where it stopped, then the error goes on
        if timer.seconds or timer.running:  # not for a refusal before any work
            timer.write(FAILED, f"{type(exc).__name__}: {str(exc)[:300]}")
        raise


def _evaluate(samples: str | Path | list[str | Path], train: str | Path | None, reference: str | Path,
              o: EvalOptions, progress: bool, timer: Any, background: contextlib.ExitStack) -> Evaluation:
    """:func:`evaluate`'s work, each step timed by ``timer`` (a ``timing.StepTimer``).

    Work started in the background enters ``background``, whose end stops what is still running.
    """
    from crysgen.evaluation.timing import timed

    check_device(o.device)  # every named file and the device before any long work
    check_input_file(reference, "--reference")
    needs = [f for f in NEEDS_TRAIN if f in o.metrics]
    if needs and train is None:
        raise CrysgenError(f"{' and '.join(needs)} need{'s' if len(needs) == 1 else ''} the training set: "
                           f"pass --train TRAIN.npz, or leave {' and '.join(needs)} out of --metrics")
    if needs:
        check_input_file(train, "--train")
    if "stability" in o.metrics:
        from crysgen.evaluation.potentials import check_potential

        check_potential(o.potential)  # the second potential's package, before any long work
    if o.scaler not in ("cdvae", "reference") and not Path(o.scaler).is_file():  # before any long work
        raise CrysgenError(f"--comp-scaler: neither cdvae, reference nor a CrystalSet file: {o.scaler}")
    csp = None
    if "csp" in o.metrics:
        with timed(timer, "csp"):
            csp = _csp(samples, reference, o, progress)
    if set(o.metrics) == {"csp"} and csp is not None:
        return csp
    timer.begin("load")
    gen = load_inputs(samples, limit=o.limit)
    if not gen:
        raise CrysgenError(f"no crystals in {samples}")
    rng = np.random.default_rng(o.seed)
    ref_all = CrystalSet.load(reference)
    ref_cs = reference_subset(ref_all, o.reference_limit, rng)
    ref = [ref_cs.to_structure(i) for i in range(len(ref_cs))]
    timer.end("load")
    rows = [{"id": c.id, "formula": c.structure.composition.reduced_formula if c.structure else "",
             "num_sites": len(c.structure) if c.structure else "", "problem": c.problem or ""}
            for c in gen]
    structs = {i: c.structure for i, c in enumerate(gen) if c.structure is not None}
    ok = list(structs)
    metrics: dict[str, dict[str, Any]] = {"n_samples": _metric(len(gen), len(gen)),
                                          "n_reference": _metric(len(ref), len(ref))}
    plots: dict[str, str] = {}

    # per-structure basics used by several families (SMACT's enumeration is the slow part)
    timer.begin("basics")
    struct_valid = np.zeros(len(gen), dtype=bool)
    comp_valid = np.zeros(len(gen), dtype=bool)
    for i, (row, sv_i, cv_i) in zip(ok, _map(partial(_basics, tables=o.smact_tables),
                                             [structs[i] for i in ok], o.workers,
                                             "validity and cell", progress, died=_basics_died),
                                    strict=True):
        rows[i].update(row)
        struct_valid[i], comp_valid[i] = sv_i, cv_i
    timer.end("basics")
    n = len(gen)
    if "validity" in o.metrics:
        metrics["struct_valid"] = _metric(float(struct_valid.sum() / n), n)
        metrics["comp_valid"] = _metric(float(comp_valid.sum() / n), n,
                                        undecided=sum(1 for r in rows if r.get("comp_valid") == ""))
        metrics["valid"] = _metric(float((struct_valid & comp_valid).sum() / n), n)

    fp_ok = np.zeros(len(gen), dtype=bool)
    pending = None  # the reference fingerprints while they compute in the background
    if "coverage" in o.metrics:
        timer.begin("coverage")
        cut, cut_source = _cov_cutoffs(o, reference)
        # CDVAE's compute_cov: every generated crystal whose fingerprints can be computed
        cand = ok if o.cov_over == "all" else [i for i in ok if struct_valid[i] and comp_valid[i]]
        from crysgen.evaluation.fingerprints import fingerprint_structures

        with timed(timer, "coverage.fingerprints"):
            fps = fingerprint_structures([structs[i] for i in cand], workers=o.workers,
                                         progress=progress)
        gs, gc, fp_rows = [], [], []
        for i, (s_fp, c_fp, err) in zip(cand, fps, strict=True):
            if err:
                rows[i]["fingerprint_reason"] = err
                continue
            fp_ok[i] = True
            gs.append(s_fp)
            gc.append(c_fp)
            fp_rows.append(rows[i])
            rows[i].update(cov_struct_distance="", cov_comp_distance="", cov_precise="")  # their places
        finish_coverage = partial(_coverage_metrics, o, gs, gc, n, cut, cut_source, progress,
                                  rows=fp_rows)
        if "stability" in o.metrics:  # the relaxation runs while they compute (collected below)
            pending = _reference_fingerprints_behind(ref_cs, ref, o, progress)
        if pending is None:
            with timed(timer, "coverage.reference_fingerprints"):
                ref_fps = reference_fingerprints(ref_cs, ref, o, progress)
            metrics.update(finish_coverage(ref_fps))
        else:
            background.enter_context(pending)  # a run that stops early stops them too
            metrics.update({k: {} for k in COVERAGE_KEYS})  # their places (filled after stability)
        timer.end("coverage")
    # CDVAE's "valid": comp and struct valid and (when computed) fingerprintable
    valid = struct_valid & comp_valid & (fp_ok if "coverage" in o.metrics else True)
    if "validity" in o.metrics and "coverage" in o.metrics:
        metrics["valid"] = _metric(float(valid.sum() / n), n, requires="struct, comp and fingerprints")
    valid_idx = np.flatnonzero(valid)
    draw = (np.sort(rng.choice(valid_idx, o.n_wasserstein, replace=False))
            if len(valid_idx) > o.n_wasserstein else valid_idx)

    if "distributions" in o.metrics:
        timer.begin("distributions")
        from crysgen.evaluation.distributions import distributions, ks_statistics, overlay_plot

        ref_d = distributions(ref_cs)
        sv = [i for i in ok if struct_valid[i]]
        gen_d = {k: np.array([float(rows[i][k]) for i in sv if rows[i].get(k, "") != ""])
                 for k in ("a", "b", "c", "alpha", "beta", "gamma", "space_group")}
        gen_d["atomic_number"] = np.array([site.specie.Z for i in sv for site in structs[i]], float)
        ks = ks_statistics(gen_d, ref_d)
        metrics["ks"] = _metric(ks, len(sv))
        png = io.BytesIO()
        overlay_plot(gen_d, ref_d, ks, png)
        plots["distributions"] = base64.b64encode(png.getvalue()).decode()
        ref_density = np.array([s.density for s in ref])
        ref_nel = np.array([len(s.composition.elements) for s in ref])
        metrics["wdist_density"] = _wdist(o, [_number(r, "density_g_cm3") for r in rows], ref_density, draw,
                                          valid_idx)
        metrics["wdist_num_elems"] = _wdist(o, [_number(r, "num_elements") for r in rows], ref_nel, draw,
                                            valid_idx)
        timer.end("distributions")

    if "novelty" in o.metrics:
        timer.begin("novelty")
        assert train is not None  # NEEDS_TRAIN: refused above without it
        from crysgen.evaluation.novelty import MATCHER_SETTINGS, novel_mask, unique_mask

        train_cs = CrystalSet.load(train)
        train_structs = [train_cs.to_structure(i) for i in range(len(train_cs))]
        sv = [i for i in ok if struct_valid[i]]
        uniq = unique_mask([structs[i] for i in sv])
        nov = novel_mask([structs[i] for i in sv], train_structs)
        for k, i in enumerate(sv):
            rows[i]["unique"], rows[i]["novel"] = bool(uniq[k]), bool(nov[k])
        metrics["unique"] = _metric(float(uniq.mean()) if len(sv) else float("nan"), len(sv),
                                    matcher=MATCHER_SETTINGS, among="structurally valid samples")
        metrics["novel"] = _metric(float(nov.mean()) if len(sv) else float("nan"), len(sv),
                                   matcher=MATCHER_SETTINGS, against=f"{Path(train).name} ({len(train_cs)})")
        both = float((uniq & nov).mean()) if len(sv) else float("nan")
        metrics["unique_and_novel"] = _metric(both, len(sv))
        timer.end("novelty")

    if "properties" in o.metrics:
        timer.begin("properties")
        metrics.update(_properties(o, gen, ok, rows, ref, draw, valid_idx, plots))
        timer.end("properties")

    if "stability" in o.metrics:
        timer.begin("stability")
        assert train is not None  # NEEDS_TRAIN: refused above without it
        sv = [i for i in ok if struct_valid[i]]
        stab, relaxed_s = _stability(o, [structs[i] for i in sv], [rows[i] for i in sv], n, train,
                                     ref_all if o.hull_reference == "all" else ref_cs,
                                     "novelty" in o.metrics, plots, progress, timer)
        metrics.update(stab)
        relaxed = {i: r for i, r in zip(sv, relaxed_s, strict=True) if r is not None}
        for i in ok:
            if not struct_valid[i]:
                rows[i]["relax_reason"] = "not relaxed: structurally invalid"
        timer.end("stability")
    if pending is not None:  # coverage's last step, on the reference fingerprints computed meanwhile
        timer.begin("coverage")
        with timed(timer, "coverage.reference_fingerprints"):  # the wait for them, not their work
            ref_fps = pending.result()
        timer.add("coverage.reference_fingerprints_background", pending.seconds or 0.0)
        metrics.update(finish_coverage(ref_fps))
        for name in COVERAGE_KEYS:  # a place left empty: nothing to compute it on (e.g. no fingerprints)
            if metrics.get(name) == {}:
                del metrics[name]
        timer.end("coverage")
    for r in rows:
        r.setdefault("problem", "")
    if "stability" not in o.metrics:
        relaxed = {}
    tables = {}
    if csp is not None:  # with other families: CSP's per-target rows in their own table
        metrics.update(csp.metrics)
        tables["csp_targets.csv"] = csp.rows
    return Evaluation(metrics, rows, plots, {**timer.rounded(), "total": round(timer.elapsed(), 2)},
                      tables, relaxed)


def _cov_cutoffs(o: EvalOptions, reference: str | Path) -> tuple[tuple[float, float], str]:
    """COV's (structure, composition) cut-offs and where they come from (a note when guessed)."""
    if o.cov_cutoffs is not None:
        return o.cov_cutoffs, "--cov-cutoffs"
    from crysgen.evaluation.coverage import COV_CUTOFFS, DEFAULT_DATASET

    dataset = o.dataset or _guess_dataset(reference)
    cut_source = f"CDVAE's {dataset}" if dataset else f"CDVAE's {DEFAULT_DATASET} (default)"
    if dataset is None:
        print(f"note: {Path(reference).name} is not a known dataset (mp_20, perov_5, carbon_24): "
              f"coverage uses mp_20's cut-offs {COV_CUTOFFS[DEFAULT_DATASET]}; "
              "pass --dataset or --cov-cutoffs STRUCT,COMP to choose", file=sys.stderr)
        dataset = DEFAULT_DATASET
    return COV_CUTOFFS[dataset], cut_source


COVERAGE_KEYS = ("cov_recall", "cov_precision", "wdist_cn", "cn_share_tv")
"""The metrics of the coverage family, in the order they are written."""


def _coverage_metrics(o: EvalOptions, gs: list[Any], gc: list[Any], n: int,
                      cut: tuple[float, float], cut_source: str, progress: bool,
                      ref_fps: list[Fingerprints], *, rows: list[dict[str, Any]] | None = None
                      ) -> dict[str, dict[str, Any]]:
    """COV-R and COV-P of the generated fingerprints (``gs``, ``gc``) against the reference's.

    Each of ``rows`` (the structures.csv rows of ``gs``, in order) gets its crystal's distances to
    the nearest reference crystal (``cov_struct_distance``, ``cov_comp_distance``) and whether
    COV-P counts it (``cov_precise``); with rows, COV-P's metric also holds ``by_sites``, its
    share within each site-count bin (:func:`~crysgen.evaluation.coverage.precision_by_sites`).

    Args:
        o: options (``comp_scaler``, ``cov_over``).
        gs: structure fingerprints of the generated crystals that have them.
        gc: their composition fingerprints, in the same order.
        n: number of samples (COV-P's ``n_generated``).
        cut: (structure, composition) cut-offs.
        cut_source: where they come from.
        progress: progress bars (a composition scaler fitted on a file).
        ref_fps: :func:`reference_fingerprints` of the reference crystals.
        rows: the rows of ``gs``' crystals, updated in place.
    """
    from crysgen.evaluation.coverage import coverage, precision_by_sites
    from crysgen.evaluation.distributions import wasserstein
    from crysgen.evaluation.fingerprints import COORDINATION_NUMBERS, coordination_shares, standardise

    rs = np.array([f[0] for f in ref_fps if f[2] is None])
    rc = np.array([f[1] for f in ref_fps if f[2] is None])
    mean, std, scaler = _comp_scaler(o, rc, progress)
    gs_a = np.array(gs).reshape(len(gs), rs.shape[1])  # (0, Fs) when nothing has fingerprints
    gc_a = np.array(gc).reshape(len(gc), rc.shape[1])
    cov = coverage(gs_a, standardise(gc_a, mean, std), rs, standardise(rc, mean, std), n_generated=n,
                   struct_cutoff=cut[0], comp_cutoff=cut[1])
    for row, d_s, d_c in zip(rows or [], cov.struct_distance, cov.comp_distance, strict=bool(rows)):
        row.update(cov_struct_distance=round(float(d_s), 5), cov_comp_distance=round(float(d_c), 5),
                   cov_precise=bool(d_s <= cut[0] and d_c <= cut[1]))
    extra = {"cutoffs": list(cut), "cutoffs_from": cut_source, "comp_scaler": scaler,
             "generated_used": f"{o.cov_over} ({cov.n_fingerprinted} with fingerprints)"}
    by_sites = ({"by_sites": precision_by_sites(np.array([int(r["num_sites"]) for r in rows]),
                                                np.array([r["cov_precise"] for r in rows], dtype=bool))}
                if rows else {})
    out = {"cov_recall": _metric(cov.recall, cov.n_reference, **extra),
           "cov_precision": _metric(cov.precision, cov.n_generated, **extra, **by_sites)}
    # the local environments behind the structure fingerprints: coordination numbers
    gen_sh, ref_sh = coordination_shares(gs_a), coordination_shares(rs)
    gen_sh, ref_sh = gen_sh[np.isfinite(gen_sh).all(axis=1)], ref_sh[np.isfinite(ref_sh).all(axis=1)]
    if len(gen_sh) and len(ref_sh):
        gen_p, ref_p = gen_sh.mean(axis=0), ref_sh.mean(axis=0)
        gen_cn, ref_cn = gen_sh @ COORDINATION_NUMBERS, ref_sh @ COORDINATION_NUMBERS  # per crystal

        def shares(p: np.ndarray) -> dict[str, float]:
            return {str(int(c)): round(float(v), 4) for c, v in zip(COORDINATION_NUMBERS, p, strict=True)
                    if v >= 5e-4}

        used = {"generated_used": extra["generated_used"], "generated_cn_share": shares(gen_p),
                "reference_cn_share": shares(ref_p)}
        out["wdist_cn"] = _metric(wasserstein(gen_cn, ref_cn), len(gen_sh), **used,
                                  generated_mean=float(gen_cn.mean()), reference_mean=float(ref_cn.mean()),
                                  definition="Wasserstein distance of the crystals' mean CrystalNN "
                                             "coordination number (from the structure fingerprints)")
        out["cn_share_tv"] = _metric(0.5 * float(np.abs(gen_p - ref_p).sum()), len(gen_sh), **used,
                                     definition="total variation distance between the shares of sites "
                                                "by CrystalNN coordination number (each crystal "
                                                "weighted equally), 0 = same, 1 = disjoint")
    return out


def _properties(o: EvalOptions, gen: list[InputCrystal], ok: list[int], rows: list[dict[str, Any]],
                ref: list[Any], draw: np.ndarray, valid_idx: np.ndarray,
                plots: dict[str, str]) -> dict[str, dict[str, Any]]:
    from crysgen.evaluation.distributions import ks_statistics
    from crysgen.properties.predict import column_name, featurize
    from crysgen.properties.registry import load_property_model, models_dir

    try:
        models_dir(o.models_dir)
    except CrysgenError as exc:
        return {"properties_skipped": _metric(float("nan"), 0, reason=str(exc))}
    names = list(CGCNN_REGRESSORS) + ([o.property_model] if o.property_model and
                                      o.property_model not in CGCNN_REGRESSORS else [])
    graphs, problems = featurize([gen[i] for i in ok])
    good = [k for k, g in enumerate(graphs) if g is not None]
    good_graphs = [g for g in graphs if g is not None]
    for k, p in enumerate(problems):
        if p:
            rows[ok[k]]["property_reason"] = p
    ref_featurized, _ = featurize([InputCrystal(str(i), s) for i, s in enumerate(ref)])
    ref_graphs = [g for g in ref_featurized if g is not None]
    gen_p, ref_p, out = {}, {}, {}
    for name in names:
        model = load_property_model(name, o.models_dir)
        col = column_name(model.target, model.unit)
        pred = model.predict(good_graphs, device=o.device)
        for k, v in zip(good, pred, strict=True):
            rows[ok[k]][col] = float(v)
        gen_p[col] = pred
        ref_p[col] = model.predict(ref_graphs, device=o.device)
        if name == o.property_model:
            values = [_number(r, col) for r in rows]
            out["wdist_prop"] = _wdist(o, values, ref_p[col], draw, valid_idx, model=name, column=col)
    out["property_ks"] = _metric(ks_statistics(gen_p, ref_p), len(good), models=names)
    plots["properties"] = _violins(gen_p, ref_p)
    return out


RELAX_BATCH = 64
"""Structures relaxed in lockstep by one worker at most (CHGNet passes of
``EvalOptions.relax_batch_size`` per FIRE step); more structures make more rounds of chunks."""


def _relax_chunk(args: tuple[list[Any], Any, int, bool]) -> list[Any]:
    import os

    import torch

    from crysgen.evaluation.stability import relax_batch

    structures, options, workers, relax_cell = args
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))  # workers share the cores
    try:
        return relax_batch(structures, options, relax_cell=relax_cell)
    finally:
        torch.set_num_threads(threads)


def relax_all(structures: list[Any], options: Any, workers: int, progress: bool, *,
              relax_cell: bool = True) -> list[Any]:
    """Relaxations (:class:`~crysgen.evaluation.stability.Relaxation`) of all structures, in input order.

    Args:
        structures: pymatgen structures.
        options: :class:`~crysgen.evaluation.stability.RelaxOptions`.
        workers: processes, each relaxing its chunks in lockstep batches (ASE's engine).
        progress: show a progress bar.
        relax_cell: relax the cell too (False: the positions in the given cell).

    The torch engine (``options.engine``, :func:`~crysgen.evaluation.stability.relax_engine`)
    relaxes everything here in one batched call. ASE's: interleaved chunks (similar mixes of
    sizes), one batched relaxation per chunk, as many chunks as a multiple of ``workers`` so that
    every round keeps all workers busy (spawned on CUDA).
    """
    if not structures:
        return []
    from crysgen.evaluation.stability import relax_batch, relax_engine

    if relax_engine(options) == "torch":  # one process: the whole set in tensors on the device
        return relax_batch(structures, options, relax_cell=relax_cell, progress=progress)
    workers = max(1, workers)
    k = workers * -(-len(structures) // (workers * RELAX_BATCH))
    chunks = [structures[j::k] for j in range(k) if structures[j::k]]
    done = _map(_relax_chunk, [(c, options, workers, relax_cell) for c in chunks], workers,
                "CHGNet relaxation", progress, spawn=options.device.startswith("cuda"), min_items=2)
    out: list[Any] = [None] * len(structures)
    for j, part in enumerate(done):
        out[j::len(chunks)] = part
    return out


def stable_metrics(e_hull: np.ndarray, unique_novel: np.ndarray | None, n: int,
                   converged: np.ndarray) -> dict[str, dict[str, Any]]:
    """The suite's stable and S.U.N. metrics (see :func:`stability.stability_rates`).

    Args:
        e_hull: (n,) energies above hull (eV/atom), NaN where unknown.
        unique_novel: (n,) bool, or None when novelty was not computed (no S.U.N. metrics).
        n: number of samples (the denominator).
        converged: (n,) bool, whether each relaxation converged.
    """
    from crysgen.evaluation.stability import (
        IMPLAUSIBLE_BELOW,
        STABLE_THRESHOLDS,
        stability_rates,
        threshold_key,
    )

    rates = stability_rates(e_hull, unique_novel, n, converged)
    computed_on = int(np.isfinite(np.asarray(e_hull, float)).sum())
    out = {f"stable_e_hull_le_{thr:g}": _metric(
        rates[f"stable_{threshold_key(thr)}"], n, computed_on=computed_on,
        requires=f"converged relaxation, E_hull >= {IMPLAUSIBLE_BELOW:g} eV/atom",
        excluded_unconverged=rates[f"excluded_unconverged_{threshold_key(thr)}"],
        excluded_implausible=rates["excluded_implausible"]) for thr in STABLE_THRESHOLDS}
    if unique_novel is not None:
        for thr in STABLE_THRESHOLDS:
            out[f"sun_e_hull_le_{thr:g}"] = _metric(rates[f"sun_{threshold_key(thr)}"], n)
    return out


def _column(potential: str) -> str:
    """The suffix of a potential's columns and metrics: "" for CHGNet (unchanged names)."""
    return "" if potential == "chgnet" else f"_{potential}"


def rate_with(potential: str, hull: Any, relaxed_structures: list[Any], energies: list[float | None],
              rows: list[dict[str, Any]], n: int, converged: np.ndarray,
              unique_novel: np.ndarray | None) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """Place structures on one potential's hull: per-row columns and the stable/S.U.N. metrics.

    Args:
        potential: whose energies these are (names the columns: CHGNet's keep their old names,
            ``e_above_hull_eV_atom``; another's get its name, ``e_above_hull_sevennet_eV_atom``).
        hull: the :class:`~crysgen.evaluation.stability.ReferenceHull` in that potential's energies.
        relaxed_structures: the CHGNet-relaxed structures (the inputs where none).
        energies: their energies per atom under ``potential`` (eV/atom), None where unknown.
        rows: their rows (updated in place).
        n: number of samples (the denominator of the rates).
        converged: (n,) bool, whether each relaxation converged (first ``len(rows)`` used).
        unique_novel: (n,) bool, or None without novelty (no S.U.N.).

    Returns:
        ((n,) E_hull with NaN where unknown, metrics).
    """
    from crysgen.evaluation.potentials import describe
    from crysgen.evaluation.stability import IMPLAUSIBLE_BELOW

    suffix = _column(potential)
    placed = hull.e_above_hull(relaxed_structures, energies)
    e_hull = np.full(n, np.nan)
    for k, (row, (e, reason)) in enumerate(zip(rows, placed, strict=True)):
        row[f"e_above_hull{suffix}_eV_atom"] = e if e is not None else ""
        if e is not None and e < IMPLAUSIBLE_BELOW:
            reason = (f"implausible: {-e:.3g} eV/atom below the hull (a hole of the potential or "
                      "missing hull phases); not counted as stable")
        if reason:
            row[f"e_above_hull{suffix}_reason"] = reason
        e_hull[k] = np.nan if e is None else e
    out = {f"{k}{suffix}": v for k, v in stable_metrics(e_hull, unique_novel, n, converged).items()}
    # the mean and median over plausible values only: one potential's hole (SevenNet-0 once gave
    # -1.5e10 eV/atom) would otherwise be the whole mean
    finite = np.isfinite(e_hull)
    ok_e = e_hull[finite & (e_hull >= IMPLAUSIBLE_BELOW)]
    excluded = int((finite & (e_hull < IMPLAUSIBLE_BELOW)).sum())
    out[f"mean_e_above_hull{suffix}"] = _metric(float(ok_e.mean()) if len(ok_e) else float("nan"),
                                                len(ok_e), unit="eV/atom", excluded_implausible=excluded)
    out[f"median_e_above_hull{suffix}"] = _metric(float(np.median(ok_e)) if len(ok_e) else float("nan"),
                                                  len(ok_e), unit="eV/atom", excluded_implausible=excluded)
    out[f"hull_reference{suffix}"] = _metric(
        float(len(hull.formulas)), len(hull.formulas),
        potential="CHGNet (bundled weights, raw energies)" if potential == "chgnet" else describe(potential),
        terminals={k: v["source"] for k, v in hull.terminals.items()},
        dropped_implausible=hull.dropped_implausible)
    return e_hull, out


def agreement_metrics(first: np.ndarray, second: np.ndarray, converged: np.ndarray,
                      names: tuple[str, str] = ("chgnet", "sevennet")) -> dict[str, dict[str, Any]]:
    """Spearman rank correlation of two potentials' E_hull and their 2×2 confusion at 0.1 eV/atom.

    See :func:`crysgen.evaluation.stability.agreement`; the confusion's cells are named after
    the potentials (``both_stable``, ``<first>_only``, ``<second>_only``, ``neither``).
    """
    from crysgen.evaluation.stability import agreement

    a = agreement(first, second, converged, threshold=0.1)
    over = "samples with E_hull under both potentials"
    return {
        "e_hull_spearman": _metric(a["spearman"], a["n"], potentials=list(names), over=over),
        "stable_agreement_0.1": _metric(
            a["agree"], a["n"], potentials=list(names), over=over,
            confusion={"both_stable": a["both_stable"], f"{names[0]}_only": a["first_only"],
                       f"{names[1]}_only": a["second_only"], "neither": a["neither"]},
            rule="E_hull <= 0.1 eV/atom, converged relaxation, not implausible"),
    }


def _stability(o: EvalOptions, structures: list[Any], rows: list[dict[str, Any]], n: int,
               train: str | Path, hull_ref: CrystalSet, with_novelty: bool, plots: dict[str, str],
               progress: bool, timer: Any = None) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    """Relax, place on the reference hull(s), count stable and S.U.N. (over all ``n`` samples).

    The hull is made of ``train`` and ``hull_ref`` (see ``EvalOptions.hull_reference``).

    CHGNet relaxes every structure; each potential of ``o.potential`` then rates the relaxed
    structures on a hull of its own energies (see :func:`rate_with`). With a ``timer``
    (:class:`~crysgen.evaluation.timing.StepTimer`) the parts are timed: ``stability.relax``,
    ``stability.hull_<potential>.reference_energies`` / ``.terminals``,
    ``stability.<potential>_static`` (the second potential's energies of the relaxed samples).

    Returns:
        (metrics, the relaxed structure of each of ``structures``, None where none).
    """
    from crysgen.evaluation.potentials import check_potential, static_energies
    from crysgen.evaluation.stability import STABLE_THRESHOLDS, ReferenceHull, check_device
    from crysgen.evaluation.timing import timed

    check_device(o.device)
    potentials = check_potential(o.potential)
    ro = RelaxOptions(fmax=o.relax_fmax, steps=o.relax_steps, time_limit_s=o.relax_time_limit_s,
                      device=o.device, batch_size=o.relax_batch_size, engine=o.relax_engine)
    static_batch = static_pass_size(ro)
    with timed(timer, "stability.relax"):
        relaxed = relax_all(structures, ro, o.relax_workers or o.workers, progress)
    for row, r, s in zip(rows, relaxed, structures, strict=True):
        row.update(r.row())
        if r.structure is not None:
            row["volume_change"] = r.structure.volume / s.volume - 1.0
    needed = {el.symbol for s in structures for el in s.composition.elements}
    un = np.zeros(n, dtype=bool)
    converged = np.zeros(n, dtype=bool)
    for k, (row, r) in enumerate(zip(rows, relaxed, strict=True)):
        un[k] = bool(row.get("unique")) and bool(row.get("novel"))
        converged[k] = r.converged
    final = [r.structure if r.structure is not None else s for r, s in zip(relaxed, structures, strict=True)]
    sets = [CrystalSet.load(train), hull_ref]
    out: dict[str, dict[str, Any]] = {}
    e_hulls: dict[str, np.ndarray] = {}
    for pot in potentials:
        hull = ReferenceHull.build(sets, needed, options=ro, batch_size=static_batch,
                                   cache_dir=o.cache_dir, progress=progress, potential=pot, timer=timer,
                                   workers=o.workers)
        if pot == "chgnet":
            energies: list[float | None] = [r.energy_per_atom for r in relaxed]
        else:
            has = [k for k, r in enumerate(relaxed)
                   if r.structure is not None and r.energy_per_atom is not None]
            with timed(timer, f"stability.{pot}_static"):
                static = static_energies([relaxed[k].structure for k in has], pot, device=o.device,
                                         batch_size=static_batch)
            energies = [None] * len(relaxed)
            for k, e in zip(has, static, strict=True):
                energies[k] = float(e) if np.isfinite(e) else None
                rows[k][f"energy_per_atom_{pot}"] = energies[k] if energies[k] is not None else ""
        e_hulls[pot], rated = rate_with(pot, hull, final, energies, rows, n, converged,
                                        un if with_novelty else None)
        out.update(rated)
    if len(e_hulls) == 2:
        out.update(agreement_metrics(e_hulls["chgnet"], e_hulls[potentials[1]], converged,
                                     ("chgnet", potentials[1])))
    rmsd = np.array([r.rmsd for r in relaxed if r.rmsd is not None], float)
    out["mean_relax_rmsd"] = _metric(float(rmsd.mean()) if len(rmsd) else float("nan"), len(rmsd),
                                     unit="Å")
    out["relax_converged"] = _metric(float(np.mean([r.converged for r in relaxed])) if relaxed
                                     else float("nan"), len(relaxed))
    first = e_hulls[potentials[0]]
    ok_e = first[np.isfinite(first)]
    if len(ok_e):
        plots["stability"] = _histogram(ok_e, f"energy above hull (eV/atom, {potentials[0]})",
                                        STABLE_THRESHOLDS)
    return out, [r.structure for r in relaxed]


def _histogram(values: np.ndarray, label: str, lines: tuple[float, ...]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(np.clip(values, -1, 3), bins=60)
    for x in lines:
        ax.axvline(x, color="k", ls="--", lw=1)
    ax.set_xlabel(label + " (clipped to [-1, 3])")
    ax.set_ylabel("structures")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _violins(gen: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in gen if len(gen[k]) and len(ref[k])]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(2.6 * max(1, len(names)), 4))
    for ax, name in zip(np.atleast_1d(axes), names, strict=False):
        ax.violinplot([ref[name], gen[name]], showmedians=True)
        ax.set_xticks([1, 2], ["reference", "generated"], fontsize=8)
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_report(ev: Evaluation, out: str | Path, *, title: str, options: EvalOptions) -> Path:
    """``metrics.json``, ``structures.csv`` and ``report.html`` in ``out`` (each written atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from crysgen.evaluation.timing import COMPLETE

    meta = {"status": COMPLETE, "options": asdict(options), "seconds": ev.seconds}
    write_text_atomic(out / "metrics.json", dumps_strict({"metrics": ev.metrics, **meta}, indent=1,
                                                         default=str) + "\n")  # NaN -> null
    for name, rows in {"structures.csv": ev.rows, **ev.tables}.items():
        write_rows(out / name, rows)
    if ev.relaxed:
        write_relaxed(out / RELAXED_FILE, ev.relaxed, ev.rows)
    from crysgen.evaluation.report import render_html

    html = render_html(ev.metrics, ev.plots, ev.seconds, title=title)
    return write_text_atomic(out / "report.html", html)


RELAXED_FILE = "relaxed.extxyz"
"""The CHGNet-relaxed structures of a report (beside structures.csv), for a later re-score."""


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV (columns in order of appearance, ``problem`` last), atomically."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    columns = [c for c in columns if c != "problem"] + ["problem"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def write_relaxed(path: Path, relaxed: dict[int, Any], rows: list[dict[str, Any]]) -> None:
    """Relaxed structures as extended XYZ; each frame's ``row`` is its row of structures.csv.

    Written through a ``.part`` file and a rename; the ``id`` of the row goes along.
    """
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    for i in sorted(relaxed):
        atoms = AseAtomsAdaptor.get_atoms(relaxed[i])
        atoms.info = {"row": int(i), "id": str(rows[i].get("id", i))}
        frames.append(atoms)
    tmp = part_path(path)
    try:
        write(tmp, frames, format="extxyz")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_relaxed(path: Path) -> dict[int, Any]:
    """:func:`write_relaxed`'s file back: row index -> pymatgen structure."""
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = read(path, index=":", format="extxyz")
    return {int(a.info["row"]): AseAtomsAdaptor.get_structure(a) for a in frames}


def rescore_report(report: str | Path, train: str | Path, reference: str | Path, *,
                   potential: str = "sevennet", device: str | None = None,
                   cache_dir: str | None = None, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Rate an existing evaluation's relaxed structures with another potential, in place.

    Reads ``structures.csv``, ``metrics.json`` (its options: relaxation settings, reference
    subset) and ``relaxed.extxyz`` of a report folder written with the stability family,
    builds the hull of ``train`` + ``reference`` in ``potential``'s energies (terminals: CHGNet-
    relaxed candidates re-scored, as in ``crysgen evaluate --potential both``), places every
    relaxed structure on it, and rewrites ``structures.csv`` (the potential's columns) and
    ``metrics.json`` (its stable and S.U.N. rates; with CHGNet's E_hull in the rows, their
    agreement) atomically. No relaxation is repeated, except for elemental candidates missing
    from the cache.

    Args:
        report: the report folder.
        train: the training CrystalSet the evaluation used.
        reference: the reference CrystalSet it used (the hull takes all of it, or, where the
            evaluation's ``hull_reference`` was ``"subset"`` or is not recorded (reports written
            before that option), its ``reference_limit`` subset, redrawn with its seed).
        potential: the potential that re-scores.
        device: where the potential runs (default: the evaluation's).
        cache_dir: energy caches (default: the evaluation's, else $CRYSGEN_CACHE).
        progress: progress bars.

    Returns:
        The new metrics.

    Raises:
        CrysgenError: a report without relaxed structures, or an unknown/missing potential.
    """
    import json

    from crysgen.evaluation.potentials import POTENTIALS, check_potential, static_energies
    from crysgen.evaluation.stability import ReferenceHull

    if potential not in POTENTIALS:
        raise CrysgenError(f"rescore: potential must be one of {', '.join(POTENTIALS)}, got {potential!r}")
    check_potential(potential)
    report = Path(report)
    relaxed_path = report / RELAXED_FILE
    if not relaxed_path.is_file():
        raise CrysgenError(f"{report}: no {RELAXED_FILE}; evaluate again with the stability family "
                           "(reports keep their relaxed structures since this version)")
    check_input_file(train, "--train")
    check_input_file(reference, "--reference")
    with (report / "structures.csv").open(newline="") as f:
        rows: list[dict[str, Any]] = list(csv.DictReader(f))
    saved = json.loads((report / "metrics.json").read_text())
    opts = saved.get("options", {})
    device = device or opts.get("device", "cpu")
    d = RelaxOptions()  # what the report ran with, where it does not say
    ro = RelaxOptions(fmax=opts.get("relax_fmax", d.fmax), steps=opts.get("relax_steps", d.steps),
                      time_limit_s=opts.get("relax_time_limit_s", d.time_limit_s), device=device,
                      batch_size=opts.get("relax_batch_size", d.batch_size),
                      engine=opts.get("relax_engine", d.engine))
    ref_cs = CrystalSet.load(reference)
    if opts.get("hull_reference", "subset") == "subset":
        ref_cs = reference_subset(ref_cs, opts.get("reference_limit"),
                                  np.random.default_rng(opts.get("seed", 0)))
    relaxed = read_relaxed(relaxed_path)
    idx = sorted(relaxed)
    structures = [relaxed[i] for i in idx]
    sub = [rows[i] for i in idx]
    n = len(rows)
    converged = np.zeros(n, bool)
    un = np.zeros(n, bool)
    for k, r in enumerate(sub):
        converged[k] = r.get("relax_converged") == "True"
        un[k] = r.get("unique") == "True" and r.get("novel") == "True"
    with_novelty = any(r.get("unique") for r in rows)
    needed = {el.symbol for s in structures for el in s.composition.elements}
    static_batch = static_pass_size(ro)
    hull = ReferenceHull.build([CrystalSet.load(train), ref_cs], needed, options=ro,
                               batch_size=static_batch, cache_dir=cache_dir or opts.get("cache_dir"),
                               progress=progress, potential=potential)
    if potential == "chgnet":
        energies: list[float | None] = [float(r["energy_per_atom"]) if r.get("energy_per_atom") else None
                                        for r in sub]
    else:
        static = static_energies(structures, potential, device=device, batch_size=static_batch)
        energies = [float(e) if np.isfinite(e) and r.get("energy_per_atom") else None
                    for e, r in zip(static, sub, strict=True)]
        for r, e in zip(sub, energies, strict=True):
            r[f"energy_per_atom_{potential}"] = e if e is not None else ""
    e_hull, metrics = rate_with(potential, hull, structures, energies, sub, n, converged,
                                un if with_novelty else None)
    if potential != "chgnet" and any(r.get("e_above_hull_eV_atom") for r in sub):
        first = np.full(n, np.nan)
        for k, r in enumerate(sub):
            first[k] = float(r["e_above_hull_eV_atom"]) if r.get("e_above_hull_eV_atom") else np.nan
        metrics.update(agreement_metrics(first, e_hull, converged, ("chgnet", potential)))
    for r in rows:
        r.setdefault("problem", "")
    write_rows(report / "structures.csv", rows)
    saved["metrics"].update(metrics)
    saved.setdefault("rescored", []).append({"potential": potential, "train": str(train),
                                             "reference": str(reference), "device": device})
    write_text_atomic(report / "metrics.json", dumps_strict(saved, indent=1, default=str) + "\n")
    return metrics
