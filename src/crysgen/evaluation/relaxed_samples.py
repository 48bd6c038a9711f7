"""Generated crystals relaxed by CHGNet, written out as a sample folder (`crysgen relax`).

The input is anything :func:`~crysgen.data.structures.load_inputs` reads (a `crysgen sample`
folder, CIFs, a CrystalSet ``.npz``, ...). Every crystal with a structure is relaxed as
``crysgen evaluate --stability`` relaxes (:func:`~crysgen.evaluation.suite.relax_all`: positions
and cell, FIRE, :class:`~crysgen.evaluation.relaxation.RelaxOptions`; or the positions alone in
the generated cell), structurally invalid ones included (close atoms are pushed apart or the
relaxation fails). The output folder is itself a `crysgen sample` folder, so ``crysgen evaluate
OUT`` scores the relaxed crystals as it scores samples:

* ``cifs/<id>.cif``: the relaxed structure; the generated one where the relaxation failed
  (``relaxed`` = 0 in ``relax.csv``, with the reason);
* ``samples.csv``: the input's rows (a sample folder's columns such as ``target`` kept, undecoded
  samples kept with their failure) with ``formula``, ``num_sites``, ``structurally_valid`` and
  ``spglib_space_group`` of the written structure, as `crysgen sample` writes them
  (:func:`~crysgen.pipelines.sampling.write_sample_row`: a relaxed crystal with coincident sites
  would get a failure instead of a CIF);
* ``relax.csv``: per crystal ``relaxed``, ``converged``, FIRE ``steps``, the CHGNet energies
  before and after (eV/atom), the RMSD of the atoms' displacements (Å), the wall time (s) and
  the reason of a failed relaxation;
* ``sample_config.json``: the input's sample configuration (a sample folder's) with a
  ``relaxation`` entry: the source, the settings, the counts, the crysgen version, the device
  and the date; a sample folder's
  ``summary.json`` (its sampling) is copied as it is.

The folder is written under a temporary name (``OUT.partial``) and renamed at the end: an
interrupted run leaves no half-written output, and an existing non-empty ``--out`` is refused,
never overwritten. The relaxations are done in parts of :data:`RESUME_PART` crystals, each saved
to ``OUT.partial/parts/`` as it finishes, so an interrupted run (``crysgen relax --resume``)
continues where it stopped instead of relaxing everything again; a run without ``--resume`` never
deletes such parts (it refuses, naming both ways on), and a resume with other inputs or settings
than the interrupted run's is refused.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crysgen.crystal_set import write_text_atomic
from crysgen.data.structures import load_inputs
from crysgen.errors import CrysgenError
from crysgen.evaluation.relaxation import Relaxation, RelaxOptions, relax_engine

RESUME_PART = 256
"""Crystals per saved part of the relaxations (the most an interrupted run loses)."""
PLAN = "plan.json"
RELAX_TABLE = "relax.csv"
RELAX_COLUMNS = ("id", "relaxed", "converged", "steps", "initial_energy_per_atom", "energy_per_atom",
                 "rmsd", "seconds", "reason")


@dataclass
class RelaxedSamples:
    """What :func:`relax_samples` wrote.

    Attributes:
        out: the output folder.
        n: crystals read (with or without a structure).
        relaxed: crystals whose CIF holds a relaxed structure.
        converged: of those, relaxations that reached the force criterion.
        kept_as_generated: crystals with a structure whose relaxation failed (written unrelaxed).
        without_structure: inputs without a structure (undecoded, unparsable), passed through.
        structurally_valid_before: of all ``n``, valid as generated (CDVAE's check).
        structurally_valid_after: of all ``n``, valid as written.
        mean_rmsd: mean RMSD of the relaxed crystals' atom displacements (Å); None if none.
        seconds: wall time of the relaxation (s).
    """

    out: Path
    n: int
    relaxed: int
    converged: int
    kept_as_generated: int
    without_structure: int
    structurally_valid_before: int
    structurally_valid_after: int
    mean_rmsd: float | None
    seconds: float


def _source_rows(source: Path) -> tuple[list[dict[str, str]], list[str], dict[str, Any]]:
    """A `crysgen sample` folder's samples.csv rows, its columns and its sample_config.json (else empty)."""
    table, config = source / "samples.csv", source / "sample_config.json"
    if not (source.is_dir() and table.is_file() and config.is_file()):
        return [], [], {}
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    try:
        cfg = json.loads(config.read_text())
    except ValueError as exc:
        raise CrysgenError(f"{config} is not JSON: {exc}") from exc
    return rows, columns, cfg


def check_relax_output(out: str | Path) -> Path:
    """Refuse an output folder that is a file or already holds files (before any work)."""
    from crysgen.data.guards import check_output_dir

    path = check_output_dir(out)
    if path.is_dir() and any(path.iterdir()):
        raise CrysgenError(f"--out {path} is not empty: relaxed samples go to a new folder")
    return path


def relax_samples(samples: str | Path, out: str | Path, options: RelaxOptions | None = None, *,
                  relax_cell: bool = True, workers: int = 1, limit: int | None = None,
                  progress: bool = False, resume: bool = False) -> RelaxedSamples:
    """Relax every crystal of ``samples`` with CHGNet and write a sample folder (module docstring).

    Args:
        samples: a `crysgen sample` folder, a folder of CIFs, a CrystalSet ``.npz``, ...
        out: the folder to write (must not exist or be empty).
        options: relaxation settings (device, engine, steps, fmax, time limit).
        relax_cell: relax the cell with the positions; False: the positions only, in the
            generated cell (its volume, so the density, stays the model's).
        workers: processes for ASE's engine (the torch engine runs in this process).
        limit: the first ``limit`` crystals only.
        progress: show a progress bar.
        resume: continue the interrupted run that left ``OUT.partial`` (the same input, limit,
            relax_cell and relaxation settings; device, engine, batch and workers may differ).

    Raises:
        CrysgenError: for a missing or empty input, an output folder that is a file or not
            empty, an unknown engine, an interrupted run's parts without ``resume``, or
            ``resume`` with inputs or settings other than the interrupted run's.
    """
    from crysgen.data.validity import structurally_valid
    from crysgen.pipelines.sampling import write_sample_row

    o = options or RelaxOptions()
    relax_engine(o)  # an unknown engine fails before any work
    dest = check_relax_output(out)
    source = Path(samples)
    crystals = load_inputs(source, limit=limit)
    if not crystals:
        raise CrysgenError(f"no crystals in {samples}")
    rows, columns, sampled = _source_rows(source)
    by_id = {r["id"]: r for r in rows}
    todo = [i for i, c in enumerate(crystals) if c.structure is not None]
    tmp = dest.with_name(dest.name + ".partial")
    plan = {"source": str(source.resolve()), "limit": limit, "relax_cell": relax_cell, "n": len(crystals),
            "ids": [crystals[i].id for i in todo], "fmax": o.fmax, "steps": o.steps,
            "time_limit_s": o.time_limit_s, "max_volume_ratio": o.max_volume_ratio}
    saved = _saved_parts(tmp, plan, resume)
    t0 = time.perf_counter()
    results = _relax_in_parts([crystals[i].structure for i in todo], saved, tmp / "parts", o, workers,
                              progress, relax_cell)
    seconds = time.perf_counter() - t0

    if (tmp / "cifs").exists():  # written by a run interrupted after its relaxations
        shutil.rmtree(tmp / "cifs")
    (tmp / "cifs").mkdir(parents=True)
    result_of = dict(zip(todo, results, strict=True))
    table: list[dict[str, Any]] = []
    out_rows: list[dict[str, Any]] = []
    counts = {"valid_before": 0, "valid_after": 0, "kept": 0}
    rmsds: list[float] = []
    for i, c in enumerate(crystals):
        row: dict[str, Any] = dict(by_id.get(c.id, {"id": c.id}))
        r = result_of.get(i)
        if c.structure is None or r is None:
            if not row.get("failure"):  # not written as a CIF: the row must say why
                row["failure"] = c.problem or "no structure"
            out_rows.append(row)
            table.append({"id": c.id, "relaxed": 0, "converged": 0, "reason": c.problem or "no structure"})
            continue
        counts["valid_before"] += structurally_valid(c.structure)
        structure = r.structure if r.structure is not None else c.structure
        counts["kept"] += r.structure is None
        if r.structure is not None and r.rmsd is not None:
            rmsds.append(float(r.rmsd))
        row = write_sample_row((row, structure, tmp / "cifs"))  # `crysgen sample`'s CIF and columns
        counts["valid_after"] += row.get("structurally_valid") == 1
        out_rows.append(row)
        table.append({"id": c.id, "relaxed": int(r.structure is not None), "converged": int(r.converged),
                      "steps": r.steps, "initial_energy_per_atom": r.initial_energy_per_atom,
                      "energy_per_atom": r.energy_per_atom, "rmsd": r.rmsd,
                      "seconds": round(r.seconds, 3), "reason": r.reason or ""})
    summary = RelaxedSamples(
        out=dest, n=len(crystals), relaxed=len(todo) - counts["kept"],
        converged=sum(int(r.converged) for r in results), kept_as_generated=counts["kept"],
        without_structure=len(crystals) - len(todo), structurally_valid_before=counts["valid_before"],
        structurally_valid_after=counts["valid_after"],
        mean_rmsd=float(sum(rmsds) / len(rmsds)) if rmsds else None, seconds=round(seconds, 2))
    names = columns or ["id", "formula", "num_sites", "structurally_valid", "failure", "cif"]
    names += [k for row in out_rows for k in row if k not in names]
    _write_csv(tmp / "samples.csv", out_rows, list(dict.fromkeys(names)))
    _write_csv(tmp / RELAX_TABLE, table, list(RELAX_COLUMNS))
    info = {k: v for k, v in asdict(summary).items() if k != "out"}
    config = sampled | {"relaxation": {"source": str(source), "options": asdict(o), "relax_cell": relax_cell,
                                       "limit": limit}
                        | info | _where(o.device)}
    write_text_atomic(tmp / "sample_config.json", json.dumps(config, indent=1) + "\n")
    if sampled and (source / "summary.json").is_file():  # a sample folder's own summary, as it was
        shutil.copyfile(source / "summary.json", tmp / "summary.json")
    shutil.rmtree(tmp / "parts")
    (tmp / PLAN).unlink()
    if dest.exists():
        dest.rmdir()  # empty (checked above)
    tmp.rename(dest)
    return summary


def _saved_parts(tmp: Path, plan: dict[str, Any], resume: bool) -> list[list[Relaxation]]:
    """The parts an interrupted run saved under ``tmp`` (empty for a new run, which sets ``tmp`` up).

    Raises:
        CrysgenError: for saved parts without ``resume``, or a saved plan other than ``plan``.
    """
    parts = sorted((tmp / "parts").glob("part_*.json")) if tmp.is_dir() else []
    if parts and not resume:
        raise CrysgenError(f"{tmp} holds {len(parts)} saved part(s) of an interrupted run: pass --resume "
                           f"to continue it, or delete {tmp} to start again")
    if parts:
        try:
            before = json.loads((tmp / PLAN).read_text())
        except (OSError, ValueError) as exc:
            raise CrysgenError(f"{tmp / PLAN} is missing or unreadable ({exc}): cannot resume; "
                               f"delete {tmp} to start again") from exc
        changed = sorted(k for k in plan if before.get(k) != plan[k])
        if changed:
            raise CrysgenError(f"--resume: the interrupted run in {tmp} had other {', '.join(changed)}; "
                               f"resume with its inputs and settings, or delete {tmp} to start again")
        return [_read_part(p) for p in parts]
    if tmp.exists():
        shutil.rmtree(tmp)  # nothing saved: a run interrupted before its first part
    (tmp / "parts").mkdir(parents=True)
    write_text_atomic(tmp / PLAN, json.dumps(plan) + "\n")
    return []


def _relax_in_parts(structures: list[Any], saved: list[list[Relaxation]], parts: Path, o: RelaxOptions,
                    workers: int, progress: bool, relax_cell: bool) -> list[Relaxation]:
    """Relaxations of ``structures`` in order: the ``saved`` parts, then the rest part by part (saved)."""
    from crysgen.evaluation.suite import relax_all

    results = [r for part in saved for r in part]
    for k, start in enumerate(range(len(results), len(structures), RESUME_PART), start=len(saved)):
        if progress:
            print(f"relaxing crystals {start + 1}-{min(start + RESUME_PART, len(structures))} "
                  f"of {len(structures)}", flush=True)
        done = relax_all(structures[start:start + RESUME_PART], o, workers, progress, relax_cell=relax_cell)
        write_text_atomic(parts / f"part_{k:05d}.json", json.dumps([_relaxation_dict(r) for r in done]))
        results += done
    return results


def _relaxation_dict(r: Relaxation) -> dict[str, Any]:
    """A relaxation as JSON-ready values (the structure as pymatgen's dict)."""
    def number(x: Any) -> float | None:
        return None if x is None else float(x)

    return {"initial_energy_per_atom": number(r.initial_energy_per_atom),
            "energy_per_atom": number(r.energy_per_atom), "rmsd": number(r.rmsd), "steps": int(r.steps),
            "converged": bool(r.converged), "seconds": float(r.seconds), "reason": r.reason,
            "structure": None if r.structure is None else r.structure.as_dict()}


def _read_part(path: Path) -> list[Relaxation]:
    """A saved part's relaxations."""
    from pymatgen.core import Structure

    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CrysgenError(f"{path} is unreadable ({exc}): delete it to relax its crystals again") from exc
    return [Relaxation(**{k: v for k, v in row.items() if k != "structure"},
                       structure=None if row["structure"] is None else Structure.from_dict(row["structure"]))
            for row in rows]


def _where(device: str) -> dict[str, str]:
    """The crysgen version, the date (UTC) and the device's name, for the record."""
    import datetime

    import torch

    from crysgen import __version__

    name = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    return {"crysgen_version": __version__, "device_name": name,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows as CSV (missing values empty)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
