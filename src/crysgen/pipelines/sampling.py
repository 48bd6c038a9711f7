"""`crysgen sample`: draw crystals from a trained model into a folder, in resumable chunks.

Output folder::

    OUT/sample_config.json      the model's path, the SHA-256 of its weight files (and of a
                                --composition-prior model's) and the options (a resumed run
                                must have the same ones), and the sampler settings they
                                resolved to (``sampler``)
    OUT/chunks/chunk_00000.csv  one per finished chunk, written last (its presence = chunk done)
    OUT/chunks/chunk_00000.npz  raw tensors of the chunk (with --save-tensors)
    OUT/cifs/sample_000000.cif  one P1 CIF per decoded crystal
    OUT/samples.csv             all rows: id, target, template, formula, sites, space groups, failure,
                                repair rounds (--repair), diagnostics
    OUT/summary.json            counts, failure reasons, samples repaired, mean diagnostics, speed

Chunk k draws its noise from seed ``[seed, k]``, so an interrupted run that is resumed gives the
same crystals as an uninterrupted one, without duplicates or gaps.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.crystal_set import write_npz_atomic, write_text_atomic
from crysgen.data.guards import check_input_file, dumps_strict, space_group_number_or_zero
from crysgen.errors import CrysgenError
from crysgen.models.model_dir import weights_sha256
from crysgen.pipelines.protocol import SampleOptions, substitute_draw
from crysgen.representations.crystens import DIAGNOSTICS, DecodeOptions, DecodeResult
from crysgen.representations.crystens.decode import failure_kind

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from crysgen.pipelines.compositions import Compositions
    from crysgen.pipelines.protocol import Generator

__all__ = ["FIELDS", "SampleOptions", "SampleSummary", "sample_to_dir"]

FIELDS = ("id", "target", "template", "formula", "num_sites", "structurally_valid",
          "decoded_space_group", "spglib_space_group", "failure", "repair_rounds",
          *DIAGNOSTICS, "cif")


@dataclass
class SampleSummary:
    """What a sampling run produced.

    ``seconds`` is the wall time of this call's chunks, of which ``seconds_generating`` went to
    the model (sampling and decoding) and ``seconds_writing`` to the CIFs and per-crystal checks.
    ``repaired`` counts the samples that ``--repair`` sampled again (None: no repair asked for).
    """

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
    composition_prior: dict[str, int] | None = None
    seconds_generating: float = 0.0
    seconds_writing: float = 0.0
    repaired: int | None = None


COINCIDENT = 0.01
"""Å: two decoded atoms closer than this are one site to a CIF reader (the sample fails)."""


def _chunk_rows(res: DecodeResult, ids: list[str], cif_dir: Path,
                targets: list[str] | None = None, workers: int = 1,
                templates: list[str] | None = None) -> list[dict[str, Any]]:
    """One samples.csv row per input (CIFs written on the way), in ``workers`` processes.

    ``targets`` and ``templates`` name each sample's target crystal and symmetry template ("":
    none). The rows of a chunk do not depend on ``workers``.
    """
    from crysgen.data.parallel import robust_map

    position = {int(i): j for j, i in enumerate(res.index)}
    failure = {f.index: f.reason for f in res.failures}
    jobs: list[tuple[dict[str, Any], Structure | None, Path]] = []
    for i, ident in enumerate(ids):
        row: dict[str, Any] = {k: "" for k in FIELDS}
        row["id"] = ident
        row["target"] = targets[i] if targets else ""
        row["template"] = templates[i] if templates else ""
        row.update({k: float(res.diagnostics[k][i]) for k in DIAGNOSTICS})
        if res.repair_rounds is not None:
            row["repair_rounds"] = int(res.repair_rounds[i])
        if i in failure:
            row["failure"] = failure[i]
            jobs.append((row, None, cif_dir))
        else:
            j = position[i]
            row["decoded_space_group"] = int(res.crystals.space_group[j])
            jobs.append((row, res.crystals.to_structure(j), cif_dir))
    if workers > 1 and len(jobs) > 1:
        chunk = max(1, len(jobs) // (4 * workers))
        return robust_map(write_sample_row, jobs, workers=workers, died=_row_died, chunksize=chunk)
    return [write_sample_row(job) for job in jobs]


def write_sample_row(job: tuple[dict[str, Any], Any, Path]) -> dict[str, Any]:
    """Finish one samples.csv row: write the CIF, add formula, sites, validity and spglib's space group.

    ``job`` is (row with an ``id``, structure or None, CIF folder). A structure with coincident
    sites gets a ``failure`` and no CIF (a CIF reader would merge them); None leaves the row as it is.
    """
    from pymatgen.io.cif import CifWriter

    from crysgen.data.validity import pair_distances, structurally_valid

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
                  "spglib_space_group": space_group_number_or_zero(structure), "cif": f"cifs/{cif.name}"}


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

    The model is used through the :class:`~crysgen.pipelines.protocol.Generator` protocol only:
    its ``prepare`` refuses the options it does not take, and each chunk is one ``generate``.

    Args:
        model_dir: a model directory (any kind crysgen can sample) or a training run directory
            (its ``model/``); None: the bundled model.
        out: output folder.
        options: what to sample.
        device: "cpu" or "cuda" (does not change which crystals come out beyond float noise).
        batch_size: tensors per forward pass (None: the model's default, 256 on cuda; on a cpu
            16, or 64 for atom diffusion, the faster measured on 2 cores).
        progress: show a progress bar with crystals/s.
        workers: processes that decode CrysTens tensors, write CIFs and check each crystal (and
            run the voxel watershed); does not change which crystals come out.

    Raises:
        CrysgenError: if ``out`` holds a run with other options or of other weights (the model
            at that path changed) or is a file, for a device torch
            cannot use here, and for bad options (all before anything is written).
    """
    from tqdm.auto import tqdm

    from crysgen.data.guards import check_device, check_output_dir
    from crysgen.pipelines.compositions import prior_model_dir
    from crysgen.pipelines.generators import load_generator, resolve_model_dir

    device = check_device(device)
    check_output_dir(out)
    decode_options = DecodeOptions(mode=options.decode_mode, symprec=options.symprec)
    model_dir = resolve_model_dir(model_dir)
    model = load_generator(model_dir)  # fails before anything is written for a bad directory
    compositions, prior_counts = _compositions(model, options, device)  # so do options it cannot take
    gen_kwargs = model.prepare(options, device=device, compositions=compositions)
    templates = gen_kwargs.get("templates")  # symmetry templates (atom diffusion), named in samples.csv
    batch_size = batch_size or model.default_batch_size(device)
    out = Path(out)
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    (out / "cifs").mkdir(exist_ok=True)
    config_path = out / "sample_config.json"
    wanted = json.loads(json.dumps({"model": str(model_dir.resolve()), "options": asdict(options)}))
    weights = weights_sha256(model_dir)
    prior_dir = prior_model_dir(options.composition_prior)
    if prior_dir is not None:  # a composition model's weights are part of what the folder holds
        weights |= {f"composition_prior/{k}": v for k, v in weights_sha256(prior_dir).items()}
    # the sampler settings the options resolved to (e.g. a model's default churn or repair)
    resolved = json.loads(json.dumps({k: v for k, v in gen_kwargs.items()
                                      if isinstance(v, (int, float, str, bool, tuple, type(None)))}))
    if config_path.exists():
        have = json.loads(config_path.read_text())
        if have.get("weights", weights) != weights:  # (folders written before it was recorded: unchecked)
            raise CrysgenError(f"{out} holds a sampling run of other weights than {model_dir} has now "
                               f"({config_path}: the model changed since); use a new --out")
        # an option added since the folder was written counts as its default there
        defaults = json.loads(json.dumps(asdict(SampleOptions(n=options.n))))
        have["options"] = defaults | have.get("options", {})
        have["options"]["substitute"] = substitute_draw(have["options"]["substitute"])  # older: a bool
        sampler = have.get("sampler", {})  # (settings added since the folder was written: unchecked,
        if sampler:                        # but a folder from before the repair existed was not repaired)
            sampler = {"repair": None} | sampler
        # an option the model resolves (None: its default) is compared as it resolved, where recorded
        loose = [k for k in RESOLVED_OPTIONS if k in sampler]
        if ({k: have.get(k) for k in wanted} | {"options": _without(have["options"], loose)}
                != wanted | {"options": _without(wanted["options"], loose)}):
            raise CrysgenError(f"{out} holds a sampling run with other options ({config_path}); "
                               "use a new --out or the same options to resume")
        changed = sorted(k for k in sampler if k in resolved and resolved[k] != sampler[k])
        if changed:
            what = "; ".join(f"{k}: {sampler[k]} there, {resolved[k]} now" for k in changed)
            raise CrysgenError(f"{out} was sampled with other sampler settings ({what}; {config_path}): "
                               "the model's defaults changed since, or another device resolved "
                               "--precision auto otherwise; give those settings explicitly (e.g. "
                               "--repair off, --precision bf16) or use a new --out")
    else:
        write_text_atomic(config_path, json.dumps(wanted | {"weights": weights, "sampler": resolved},
                                                  indent=1) + "\n")
    n_chunks = -(-options.n // options.chunk_size)
    done_before = sum((out / "chunks" / f"chunk_{k:05d}.csv").exists() for k in range(n_chunks))
    bar = tqdm(total=options.n, desc="sample", unit="crystal", disable=not progress)
    t0 = time.perf_counter()
    produced = 0
    phases = {"generating": 0.0, "writing": 0.0}
    for k in range(n_chunks):
        start = k * options.chunk_size
        size = min(options.chunk_size, options.n - start)
        csv_path = out / "chunks" / f"chunk_{k:05d}.csv"
        if csv_path.exists():
            bar.update(size)
            continue
        ids = [f"sample_{start + i:06d}" for i in range(size)]
        on_tensors = (functools.partial(_save_tensors, out / "chunks" / f"chunk_{k:05d}.npz")
                      if options.save_tensors else None)
        t_chunk = time.perf_counter()
        res = model.generate(size, seed=[options.seed, k], device=device, batch_size=batch_size, ids=ids,
                             compositions=compositions, offset=start, workers=workers, decode=decode_options,
                             on_batch=bar.update, on_tensors=on_tensors, **gen_kwargs)
        t_generated = time.perf_counter()
        targets = compositions.targets[start:start + size] if compositions is not None else None
        sources = templates.sources[start:start + size] if templates is not None else None
        rows = _chunk_rows(res, ids, out / "cifs", targets, workers=workers, templates=sources)
        _write_csv(csv_path, rows)  # last: marks the chunk done
        phases["generating"] += t_generated - t_chunk
        phases["writing"] += time.perf_counter() - t_generated
        produced += size
        bar.set_postfix(crystals_per_s=f"{produced / (time.perf_counter() - t0):.1f}")
    bar.close()
    seconds = time.perf_counter() - t0
    return _summarize(out, n_chunks, options, done_before, seconds, produced, prior_counts, phases)


def _save_tensors(path: Path, tensors: np.ndarray) -> None:
    """``--save-tensors``: a chunk's raw CrysTens tensors."""
    write_npz_atomic(path, {"tensors": tensors})


def _compositions(model: Generator, options: SampleOptions, device: str = "cpu",
                  ) -> tuple[Compositions | None, dict[str, int] | None]:
    """The elements of every sample, or None (de novo), and the prior draw's counts.

    The elements come from ``--formula``, ``--compositions`` or ``--composition-prior``; the
    counts are None without ``--composition-prior``. A composition model runs on ``device``
    (its draw stays seeded on the CPU).

    Raises:
        CrysgenError: for bad composition options, and from a model without composition control
            or one that cannot make them (before any sampling).
    """
    from crysgen.crystal_set import CrystalSet
    from crysgen.pipelines.compositions import load_prior

    given = [name for name, value in (("--formula", options.formula),
                                      ("--compositions", options.compositions),
                                      ("--composition-prior", options.composition_prior))
             if value is not None]
    if len(given) > 1:
        raise CrysgenError(f"{' and '.join(given)} exclude each other")
    if options.num_atoms is not None and options.formula is None:
        raise CrysgenError("--num-atoms goes with --formula")
    if options.substitute and options.composition_prior is None:
        raise CrysgenError("--substitute goes with --composition-prior")
    if not given:
        return None, None
    if options.formula is not None:
        return model.compositions_from_formula(options.formula, options.n, num_atoms=options.num_atoms,
                                               seed=[options.seed, 2]), None
    if options.composition_prior is not None:
        return model.compositions_from_prior(load_prior(options.composition_prior, device), options.n,
                                             substitute=options.substitute, seed=[options.seed, 5])
    assert options.compositions is not None  # neither given: returned above
    check_input_file(options.compositions, "--compositions")
    comps = model.compositions_from_targets(CrystalSet.load(options.compositions), options.per_target)
    if len(comps.targets) != options.n:
        raise CrysgenError(f"--compositions gives {len(comps.targets)} samples "
                           f"({options.per_target} per target), not -n {options.n}")
    return comps, None


RESOLVED_OPTIONS = ("churn", "anneal_rho", "anneal_rho_lattice", "precision", "repair")
"""Sample options whose None (or "auto") a model resolves to its own default: a folder is resumed
when they resolve to what they resolved to there (``sample_config.json``'s ``sampler``)."""


def _without(options: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in keys}


def _summarize(out: Path, n_chunks: int, options: SampleOptions, done_before: int,
               seconds: float, produced: int, prior_counts: dict[str, int] | None,
               phases: dict[str, float]) -> SampleSummary:
    rows: list[dict[str, str]] = []
    for k in range(n_chunks):
        with (out / "chunks" / f"chunk_{k:05d}.csv").open(newline="") as fh:
            rows.extend(csv.DictReader(fh))
    _write_csv(out / "samples.csv", rows)
    failures = Counter(failure_kind(r["failure"]) for r in rows if r["failure"])
    diag = {k: np.array([float(r[k]) for r in rows]) for k in DIAGNOSTICS}
    rounds = [r.get("repair_rounds", "") for r in rows]
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
        composition_prior=prior_counts,
        seconds_generating=round(phases["generating"], 3),
        seconds_writing=round(phases["writing"], 3),
        repaired=sum(v not in ("", "0") for v in rounds) if any(v != "" for v in rounds) else None,
    )
    write_text_atomic(out / "summary.json", dumps_strict(asdict(summary) | {"options": asdict(options)},
                                                     indent=1) + "\n")
    return summary
