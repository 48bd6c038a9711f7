"""`crysgen sample`: draw crystals from a trained model into a folder, in resumable chunks.

Output folder::

    OUT/sample_config.json      the options (a resumed run must use the same ones)
    OUT/chunks/chunk_00000.csv  one per finished chunk, written last (its presence = chunk done)
    OUT/chunks/chunk_00000.npz  raw tensors of the chunk (with --save-tensors)
    OUT/cifs/sample_000000.cif  one P1 CIF per decoded crystal
    OUT/samples.csv             all rows: id, formula, sites, space groups, failure, diagnostics
    OUT/summary.json            counts, failure reasons, mean diagnostics, speed

Chunk k draws its noise from seed ``[seed, k]``, so an interrupted run that is resumed gives the
same crystals as an uninterrupted one, without duplicates or gaps.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.crystal_set import write_npz_atomic, write_text_atomic
from crysgen.data.guards import dumps_strict
from crysgen.errors import CrysgenError
from crysgen.representations.crystens import DIAGNOSTICS, DecodeOptions, DecodeResult, decode
from crysgen.representations.crystens.decode import DecodeMode, failure_kind

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from crysgen.pipelines.diffusion import Sampler

FIELDS = ("id", "target", "formula", "num_sites", "structurally_valid", "decoded_space_group",
          "spglib_space_group", "failure",
          *DIAGNOSTICS, "cif")


@dataclass(frozen=True)
class SampleOptions:
    """Options of `crysgen sample` (all of them decide which crystals come out).

    ``symprec`` (auto decoding only) snaps each decoded crystal to the symmetry spglib finds
    at that tolerance in Å, when that keeps its number of sites. ``condition``, ``around``,
    ``sigma2`` and ``interpolate`` are for voxel VAE models (:mod:`crysgen.pipelines.voxel`):
    the condition decile class, a base crystal (``DATA.npz:ID`` or a CIF) to sample around with
    latent variance ``sigma2``, and two base crystals to interpolate between (``n`` points);
    ``prior`` ("standard" N(0, I) or "posterior", the Gaussian matched to the training posteriors)
    is where a voxel VAE's other latents come from.
    ``formula`` (with ``num_atoms``, else site counts drawn per sample) and ``compositions`` (a
    CrystalSet of target crystals, ``per_target`` samples each, ``n`` = their product) fix the
    elements of every sample: models with composition control (atom diffusion, single-stage
    CrysTens diffusion; :mod:`crysgen.pipelines.compositions`). ``space_group`` (1-230) with
    classifier-free ``guidance`` asks for a space group; ``churn`` is EDM's S_churn (None: the
    model's): atom diffusion models only (:mod:`crysgen.pipelines.atoms`).
    """

    n: int
    steps: int = 50
    sampler: Sampler = "ddim"
    seed: int = 0
    decode_mode: DecodeMode = "auto"
    symprec: float | None = None
    chunk_size: int = 256
    save_tensors: bool = False
    condition: int | None = None
    around: str | None = None
    sigma2: float = 0.5
    prior: str = "standard"
    interpolate: tuple[str, str] | None = None
    formula: str | None = None
    num_atoms: int | None = None
    compositions: str | None = None
    per_target: int = 1
    space_group: int | None = None
    guidance: float = 1.0
    churn: float | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise CrysgenError(f"-n must be at least 1, got {self.n}")
        if self.chunk_size < 1:
            raise CrysgenError(f"chunk size must be at least 1, got {self.chunk_size}")
        if self.churn is not None and not self.churn >= 0:
            raise CrysgenError(f"--churn must be at least 0, got {self.churn}")


@dataclass
class SampleSummary:
    """What a sampling run produced."""

    n: int
    decoded: int
    structurally_valid: int
    failures: int
    failure_reasons: dict[str, int]
    mean_diagnostics: dict[str, float]
    chunks_done_before: int
    seconds: float
    crystals_per_s: float
    out: str


def _spglib_number(structure: Any) -> int:
    from crysgen.data.guards import space_group_number

    try:
        return space_group_number(structure)  # the cell is checked before spglib sees it
    except Exception:  # spglib gives up on some generated cells
        return 0


COINCIDENT = 0.01
"""Å: two decoded atoms closer than this are one site to a CIF reader (the sample fails)."""


def _chunk_rows(res: DecodeResult, ids: list[str], cif_dir: Path,
                targets: list[str] | None = None, workers: int = 1) -> list[dict[str, Any]]:
    """One samples.csv row per input (CIFs written on the way), in ``workers`` processes.

    The rows of a chunk do not depend on ``workers``.
    """
    from crysgen.data.parallel import robust_map

    position = {int(i): j for j, i in enumerate(res.index)}
    failure = {f.index: f.reason for f in res.failures}
    jobs: list[tuple[dict[str, Any], Structure | None, Path]] = []
    for i, ident in enumerate(ids):
        row: dict[str, Any] = {k: "" for k in FIELDS}
        row["id"] = ident
        row["target"] = targets[i] if targets else ""
        row.update({k: float(res.diagnostics[k][i]) for k in DIAGNOSTICS})
        if i in failure:
            row["failure"] = failure[i]
            jobs.append((row, None, cif_dir))
        else:
            j = position[i]
            row["decoded_space_group"] = int(res.crystals.space_group[j])
            jobs.append((row, res.crystals.to_structure(j), cif_dir))
    if workers > 1 and len(jobs) > 1:
        chunk = max(1, len(jobs) // (4 * workers))
        return robust_map(_row, jobs, workers=workers, died=_row_died, chunksize=chunk)
    return [_row(job) for job in jobs]


def _row(job: tuple[dict[str, Any], Any, Path]) -> dict[str, Any]:
    """Finish one row: write the CIF, add formula, sites, validity and spglib's space group."""
    from pymatgen.io.cif import CifWriter

    from crysgen.evaluation.validity import pair_distances, structurally_valid

    row, structure, cif_dir = job
    if structure is None:
        return row
    distances = pair_distances(structure)  # computed once: coincident sites and validity
    close = int((distances < COINCIDENT).sum())
    if close:  # a CIF reader would merge them into one site of occupancy > 1
        return row | {"failure": f"coincident_sites: {close} pair(s) of atoms closer than "
                                 f"{COINCIDENT} Å (no CIF written)"}
    cif = cif_dir / f"{row['id']}.cif"
    write_text_atomic(cif, str(CifWriter(structure)))
    return row | {"formula": structure.composition.reduced_formula, "num_sites": len(structure),
                  "structurally_valid": int(structurally_valid(structure, distances=distances)),
                  "spglib_space_group": _spglib_number(structure), "cif": f"cifs/{cif.name}"}


def _row_died(job: tuple[dict[str, Any], Any, Path], reason: str) -> dict[str, Any]:
    return job[0] | {"failure": reason}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def sample_to_dir(
    model_dir: str | Path | None,
    out: str | Path,
    options: SampleOptions,
    *,
    device: str = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
    workers: int = 1,
) -> SampleSummary:
    """Sample ``options.n`` crystals from a model directory into ``out`` (resumable).

    Args:
        model_dir: a model directory (any kind crysgen can sample) or a training run directory
            (its ``model/``); None: the bundled model.
        out: output folder.
        options: what to sample.
        device: "cpu" or "cuda" (does not change which crystals come out beyond float noise).
        batch_size: tensors per forward pass (None: 256 on cuda, 16 on cpu, where small
            batches measured faster on 2 cores).
        progress: show a progress bar with crystals/s.
        workers: processes that decode CrysTens tensors, write CIFs and check each crystal (and
            run the voxel watershed); does not change which crystals come out.

    Raises:
        CrysgenError: if ``out`` holds a run with other options or is a file, for a device torch
            cannot use here, and for bad options (all before anything is written).
    """
    from tqdm.auto import tqdm

    from crysgen.data.guards import check_device, check_output_dir
    from crysgen.pipelines.atoms import AtomDiffusionModel
    from crysgen.pipelines.generators import load_generator, resolve_model_dir
    from crysgen.pipelines.voxel import VoxelModel

    device = check_device(device)
    check_output_dir(out)
    decode_options = DecodeOptions(mode=options.decode_mode, symprec=options.symprec)
    model_dir = resolve_model_dir(model_dir)
    model = load_generator(model_dir)  # fails before anything is written for a bad directory
    compositions = _compositions(model, options)  # so do bad model-specific options
    gen_kwargs = _generate_kwargs(model, options, device, compositions)
    batch_size = batch_size or default_batch_size(model, device)
    out = Path(out)
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    (out / "cifs").mkdir(exist_ok=True)
    config_path = out / "sample_config.json"
    wanted = json.loads(json.dumps({"model": str(model_dir.resolve()), "options": asdict(options)}))
    if config_path.exists():
        have = json.loads(config_path.read_text())
        if have != wanted:
            raise CrysgenError(f"{out} holds a sampling run with other options ({config_path}); "
                               "use a new --out or the same options to resume")
    else:
        write_text_atomic(config_path, json.dumps(wanted, indent=1) + "\n")
    n_chunks = -(-options.n // options.chunk_size)
    done_before = sum((out / "chunks" / f"chunk_{k:05d}.csv").exists() for k in range(n_chunks))
    bar = tqdm(total=options.n, desc="sample", unit="crystal", disable=not progress)
    if gen_kwargs is not None and _reports_batches(model):  # progress within a chunk
        gen_kwargs["on_batch"] = bar.update
    t0 = time.perf_counter()
    produced = 0
    for k in range(n_chunks):
        start = k * options.chunk_size
        size = min(options.chunk_size, options.n - start)
        csv_path = out / "chunks" / f"chunk_{k:05d}.csv"
        if csv_path.exists():
            bar.update(size)
            continue
        ids = [f"sample_{start + i:06d}" for i in range(size)]
        if isinstance(model, VoxelModel | AtomDiffusionModel):  # models that decode themselves
            assert gen_kwargs is not None  # _generate_kwargs gives theirs (None for CrysTens models)
            res = model.generate(size, seed=[options.seed, k], device=device, batch_size=batch_size,
                                 ids=ids, offset=start, total=options.n, workers=workers,
                                 **gen_kwargs)
        else:  # CrysTens: with a composition, its part of the tensor is inpainted and decoded as given
            given = {} if compositions is None else {
                "atomic_numbers": compositions.atomic_numbers[start:start + size]}
            tensors = model.sample(size, steps=options.steps, sampler=options.sampler,
                                   seed=[options.seed, k], device=device, batch_size=batch_size, **given)
            res = decode_in_parts(tensors, model.scaling, decode_options, ids=ids, workers=workers, **given)
            if options.save_tensors:
                write_npz_atomic(out / "chunks" / f"chunk_{k:05d}.npz", {"tensors": tensors})
        targets = compositions.targets[start:start + size] if compositions is not None else None
        rows = _chunk_rows(res, ids, out / "cifs", targets, workers=workers)
        _write_csv(csv_path, rows)  # last: marks the chunk done
        produced += size
        if gen_kwargs is None or "on_batch" not in gen_kwargs:
            bar.update(size)
        bar.set_postfix(crystals_per_s=f"{produced / (time.perf_counter() - t0):.1f}")
    bar.close()
    seconds = time.perf_counter() - t0
    return _summarize(out, n_chunks, options, done_before, seconds, produced)


def decode_in_parts(tensors: np.ndarray, scaling: Any, options: DecodeOptions, *, ids: list[str],
                    workers: int = 1, atomic_numbers: np.ndarray | None = None) -> DecodeResult:
    """Decode (N, 4, size, size) CrysTens tensors (the scaling's layout) in ``workers`` processes.

    Contiguous parts go to the processes and come back in input order: the same result as
    :func:`~crysgen.representations.crystens.decode` in one process. A part whose process dies
    gets a ``worker_died`` failure for each of its tensors. ``atomic_numbers`` (N, S): the given
    composition of every tensor (decoded as given), or None.
    """
    from crysgen.data.parallel import robust_map

    n = len(tensors)
    if workers <= 1 or n < 2:
        return decode(tensors, scaling, options, ids=ids, atomic_numbers=atomic_numbers)
    bounds = np.linspace(0, n, min(n, 4 * workers) + 1).astype(int)
    parts = [(tensors[a:b], scaling, options, ids[a:b], a,
              None if atomic_numbers is None else atomic_numbers[a:b]) for a, b in pairwise(bounds)]
    done = robust_map(_decode_part, parts, workers=workers, died=_decode_part_died)
    return _merge_results(done)


def _decode_part(part: tuple[Any, ...]) -> tuple[int, DecodeResult]:
    tensors, scaling, options, ids, start, given = part
    return start, decode(tensors, scaling, options, ids=ids, atomic_numbers=given)


def _decode_part_died(part: tuple[Any, ...], reason: str) -> tuple[int, DecodeResult]:
    from crysgen.crystal_set import CrystalSet
    from crysgen.representations.crystens.decode import DecodeFailure

    tensors, scaling, _, _, start, _ = part
    k, s = len(tensors), scaling.layout.sites
    empty = CrystalSet(np.zeros((0, s)), np.zeros((0, s, 3)), np.zeros((0, 6)), np.zeros(0), np.zeros(0),
                       np.zeros(0, str))
    return start, DecodeResult(empty, np.zeros(0, np.int64), {key: np.full(k, np.nan) for key in DIAGNOSTICS},
                               [DecodeFailure(i, reason) for i in range(k)])


def _merge_results(done: list[tuple[int, DecodeResult]]) -> DecodeResult:
    from crysgen.crystal_set import CrystalSet
    from crysgen.representations.crystens.decode import DecodeFailure

    return DecodeResult(
        CrystalSet.concatenate([r.crystals for _, r in done]),
        np.concatenate([r.index + start for start, r in done]).astype(np.int64),
        {k: np.concatenate([r.diagnostics[k] for _, r in done]) for k in DIAGNOSTICS},
        [DecodeFailure(f.index + start, f.reason) for start, r in done for f in r.failures])


def _reports_batches(model: Any) -> bool:
    from crysgen.pipelines.atoms import AtomDiffusionModel

    return isinstance(model, AtomDiffusionModel)


def default_batch_size(model: Any, device: str) -> int:
    """Crystals per forward pass when none is given.

    256 on CUDA; on a CPU 16 for the CrysTens UNet and 64 for the atom transformer (the faster
    of 16 and 64 measured on 2 cores for each).
    """
    if device.startswith("cuda"):
        return 256
    return 64 if _reports_batches(model) else 16


def _generate_kwargs(model: Any, options: SampleOptions, device: str,
                     compositions: Any = None) -> dict[str, Any] | None:
    """The ``generate`` arguments of a model that decodes itself (voxel VAE, atom diffusion).

    None for CrysTens models. Options of another kind of model are refused here, before any
    sampling; ``compositions`` (from :func:`_compositions`) goes to an atom model as is.
    """
    from crysgen.pipelines.atoms import AtomDiffusionModel
    from crysgen.pipelines.voxel import VoxelModel

    voxel_opts = (options.condition is not None or options.around is not None
                  or options.interpolate is not None or options.prior != "standard")
    atom_opts = options.space_group is not None or options.churn is not None
    if voxel_opts and not isinstance(model, VoxelModel):
        raise CrysgenError("--condition, --around, --interpolate and --prior apply to voxel VAE models only")
    if atom_opts and not isinstance(model, AtomDiffusionModel):
        raise CrysgenError("--space-group and --churn apply to atom diffusion models only")
    if isinstance(model, AtomDiffusionModel):
        model.check_space_group(options.space_group)  # refused here, before any sampling
        return {"steps": options.steps, "compositions": compositions,
                "space_group": options.space_group, "guidance": options.guidance, "churn": options.churn}
    if not isinstance(model, VoxelModel):
        return None
    if options.around is not None and options.interpolate is not None:
        raise CrysgenError("--around and --interpolate exclude each other")
    kwargs: dict[str, Any] = {"condition": options.condition, "sigma2": options.sigma2,
                              "prior": options.prior}
    if options.around is None and options.interpolate is None:
        model.latents(1, prior=options.prior)  # an unknown prior or a missing prior file: refused here
    if options.around is not None:
        kwargs["around"], kwargs["condition"] = model.base(options.around, options.condition, device=device)
    if options.interpolate is not None:
        (mu_a, c_a), (mu_b, _) = (model.base(r, options.condition, device=device)
                                  for r in options.interpolate)
        kwargs["line"], kwargs["condition"] = (mu_a, mu_b), c_a
    return kwargs


def _has_composition_control(model: Any) -> bool:
    """Whether a model takes compositions: it makes them from a formula and from targets.

    A single-stage CrysTens diffusion model and an atom diffusion model do; a cascade's stage
    refuses when asked, and cascades, GANs and voxel VAEs have no such methods.
    """
    return callable(getattr(model, "compositions_from_formula", None)) and callable(
        getattr(model, "compositions_from_targets", None))


def _compositions(model: Any, options: SampleOptions) -> Any:
    """The elements of every sample of a model with composition control, or None (de novo).

    Raises:
        CrysgenError: for composition options given to a model without composition control, and
            for bad ones (before any sampling).
    """
    from crysgen.crystal_set import CrystalSet

    if options.formula is None and options.compositions is None:
        if options.num_atoms is not None:
            raise CrysgenError("--num-atoms goes with --formula")
        return None
    if not _has_composition_control(model):
        raise CrysgenError(f"--formula and --compositions need a model with composition control (atom "
                           f"diffusion or single-stage CrysTens diffusion); this is a "
                           f"{type(model).__name__}")
    if options.formula is not None and options.compositions is not None:
        raise CrysgenError("--formula and --compositions exclude each other")
    if options.num_atoms is not None and options.formula is None:
        raise CrysgenError("--num-atoms goes with --formula")
    if options.formula is not None:
        return model.compositions_from_formula(options.formula, options.n, num_atoms=options.num_atoms,
                                               seed=[options.seed, 2])
    assert options.compositions is not None  # neither given: returned above
    if not Path(options.compositions).is_file():
        raise CrysgenError(f"--compositions: no such file {options.compositions}")
    comps = model.compositions_from_targets(CrystalSet.load(options.compositions), options.per_target)
    if len(comps.targets) != options.n:
        raise CrysgenError(f"--compositions gives {len(comps.targets)} samples "
                           f"({options.per_target} per target), not -n {options.n}")
    return comps


def _summarize(out: Path, n_chunks: int, options: SampleOptions, done_before: int,
               seconds: float, produced: int) -> SampleSummary:
    rows: list[dict[str, str]] = []
    for k in range(n_chunks):
        with (out / "chunks" / f"chunk_{k:05d}.csv").open(newline="") as fh:
            rows.extend(csv.DictReader(fh))
    _write_csv(out / "samples.csv", rows)
    failures = Counter(failure_kind(r["failure"]) for r in rows if r["failure"])
    diag = {k: np.array([float(r[k]) for r in rows]) for k in DIAGNOSTICS}
    summary = SampleSummary(
        n=len(rows),
        decoded=len(rows) - sum(failures.values()),
        structurally_valid=sum(r.get("structurally_valid") == "1" for r in rows),
        failures=sum(failures.values()),
        failure_reasons=dict(sorted(failures.items())),
        mean_diagnostics={k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                          for k, v in diag.items()},
        chunks_done_before=done_before,
        seconds=round(seconds, 3),
        crystals_per_s=round(produced / seconds, 3) if seconds > 0 and produced else float("nan"),
        out=str(out),
    )
    write_text_atomic(out / "summary.json", dumps_strict(asdict(summary) | {"options": asdict(options)},
                                                     indent=1) + "\n")
    return summary
