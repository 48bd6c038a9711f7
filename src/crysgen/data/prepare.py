"""`crysgen data prepare`: parse a source in parallel, standardise cells, filter, report drops.

Every entry either becomes one crystal of the output CrystalSet or is dropped with a reason
(see :data:`DROP_REASONS`). Same input and options give byte-identical ``.npz`` and report.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crysgen.crystal_set import CrystalSet, wrap_unit, write_text_atomic
from crysgen.data.guards import (
    MIN_SITE_DISTANCE,
    InputProblem,
    check_symprec,
    close_sites_problem,
    dumps_strict,
    parse_structure,
    short,
    spacegroup_analyzer,
    structure_problem,
)
from crysgen.data.parallel import robust_map
from crysgen.data.sources import RawRecord, read_source
from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    from pymatgen.core import Structure

CellConvention = Literal["conventional", "primitive", "as-is"]
CELL_CONVENTIONS: tuple[CellConvention, ...] = ("conventional", "primitive", "as-is")

DROP_REASONS = {
    "unparsable": "the structure text could not be parsed (the parser's message follows)",
    "degenerate_lattice": "non-finite, negative, zero, absurd or flat cell (checked before spglib)",
    "bad_coordinates": "non-finite fractional coordinates",
    "zero_occupancy": "a site with occupancy 0 or below (pymatgen would delete it silently)",
    "close_sites": "two sites closer than --min-distance (coincident atoms)",
    "worker_died": "the process working on the entry died (a crash in native code)",
    "disordered": "partial occupancy or mixed-species sites",
    "too_many_sites": "more sites than --max-sites after cell conversion",
    "element_out_of_range": "an element outside Z = 1..max_z (or a dummy species)",
    "symmetry_failed": "spglib could not standardise the cell",
}


@dataclass(frozen=True)
class PrepareOptions:
    """Options of `crysgen data prepare`.

    Attributes:
        cell: cell convention of the output: spglib's conventional standard cell, its
            primitive standard cell, or the cell as given.
        max_sites: drop crystals with more sites than this (after cell conversion).
        max_z: drop crystals with an element beyond this atomic number (99 = paper scaling).
        symprec: spglib distance tolerance in Å for space group and standardisation.
        angle_tolerance: spglib angle tolerance in degrees.
        limit: keep only the first ``limit`` source entries.
        min_distance: drop crystals with two sites closer than this (Å, periodic images
            included; CDVAE's structural validity uses the same 0.5 Å).
    """

    cell: CellConvention = "conventional"
    max_sites: int = 52
    max_z: int = 99
    symprec: float = 0.01
    angle_tolerance: float = 5.0
    limit: int | None = None
    min_distance: float = MIN_SITE_DISTANCE

    def __post_init__(self) -> None:
        check_symprec(self.symprec)
        if not 0 < self.angle_tolerance <= 180:
            raise CrysgenError(f"angle tolerance must be in (0, 180] degrees, got {self.angle_tolerance}")
        if not 0 <= self.min_distance < 10:
            raise CrysgenError(f"--min-distance must be in [0, 10) Å, got {self.min_distance}")
        if self.cell not in CELL_CONVENTIONS:
            raise CrysgenError(
                f"unknown cell convention {self.cell!r}; choose one of {', '.join(CELL_CONVENTIONS)}"
            )
        if self.max_sites < 1:
            raise CrysgenError(f"--max-sites must be at least 1, got {self.max_sites}")
        if not 1 <= self.max_z <= 118:
            raise CrysgenError(f"max_z must be in 1..118, got {self.max_z}")
        if self.limit is not None and self.limit < 1:
            raise CrysgenError(f"--limit must be positive, got {self.limit}")


@dataclass
class PreparedCrystal:
    """One standardised crystal, ready to go into a CrystalSet (sites in pymatgen order)."""

    atomic_numbers: np.ndarray  # (n,) int
    frac_coords: np.ndarray  # (n, 3) in [0, 1)
    lattice: np.ndarray  # (6,) Å and degrees
    space_group: int


@dataclass
class Dropped:
    """A source entry that was not kept."""

    id: str
    reason: str
    detail: str


@dataclass
class PrepareReport:
    """What `prepare` did: counts, every dropped id with its reason, source and options."""

    source: dict[str, Any]
    options: dict[str, Any]
    n_input: int
    n_kept: int
    dropped_by_reason: dict[str, int]
    dropped: list[Dropped] = field(default_factory=list)
    crysgen_version: str = ""

    def to_json(self) -> str:
        """Serialise with sorted keys (byte-reproducible)."""
        return dumps_strict(asdict(self), indent=1, sort_keys=True) + "\n"


def standardize(structure: Structure, options: PrepareOptions) -> tuple[Structure, int]:
    """Convert a structure to the requested cell and find its space group with spglib.

    Args:
        structure: an ordered structure.
        options: cell convention and spglib tolerances.

    Returns:
        The structure in the requested cell, sites sorted in pymatgen's order (increasing
        electronegativity, stable within an element), and its space-group number.

    Raises:
        InputProblem: for a cell spglib cannot be given (checked before it is).
    """
    sga = spacegroup_analyzer(structure, symprec=options.symprec,
                              angle_tolerance=options.angle_tolerance)
    space_group = int(sga.get_space_group_number())
    if options.cell == "conventional":
        structure = sga.get_conventional_standard_structure()
    elif options.cell == "primitive":
        structure = sga.get_primitive_standard_structure()
    return structure.get_sorted_structure(), space_group


def prepare_record(record: RawRecord, options: PrepareOptions) -> PreparedCrystal | Dropped:
    """Parse, check and standardise one record; never raises for a bad entry."""
    structure = record.structure
    if structure is None:
        if record.problem is not None:
            return Dropped(record.id, "unparsable", record.problem)
        try:
            structure = parse_structure(record.text or "", record.fmt or "cif")
        except InputProblem as exc:
            return Dropped(record.id, exc.kind, exc.detail)
        except Exception as exc:  # pymatgen raises many types on broken text
            return Dropped(record.id, "unparsable", short(exc))
    else:
        problem = structure_problem(structure)
        if problem is not None:
            return Dropped(record.id, problem.kind, problem.detail)
    if len(structure) == 0:
        return Dropped(record.id, "unparsable", "no sites")
    if not structure.is_ordered:
        return Dropped(record.id, "disordered", "a site has partial or mixed occupancy")
    zs = [getattr(site.specie, "Z", 0) for site in structure]
    if min(zs) < 1 or max(zs) > options.max_z:
        pairs = zip(structure, zs, strict=True)
        bad = sorted({str(s.specie) for s, z in pairs if z < 1 or z > options.max_z})
        return Dropped(record.id, "element_out_of_range", f"element(s) {', '.join(bad)}")
    problem = close_sites_problem(structure, options.min_distance) if options.min_distance else None
    if problem is not None:
        return Dropped(record.id, problem.kind, problem.detail)
    try:
        structure, space_group = standardize(structure, options)
    except InputProblem as exc:
        return Dropped(record.id, exc.kind, exc.detail)
    except Exception as exc:  # spglib failure on pathological cells
        return Dropped(record.id, "symmetry_failed", short(exc))
    if len(structure) > options.max_sites:
        return Dropped(
            record.id, "too_many_sites",
            f"{len(structure)} sites in the {options.cell} cell > {options.max_sites}",
        )
    lattice = np.array([*structure.lattice.abc, *structure.lattice.angles])
    return PreparedCrystal(
        atomic_numbers=np.array([site.specie.Z for site in structure], dtype=np.int16),
        frac_coords=wrap_unit(structure.frac_coords),
        lattice=lattice,
        space_group=space_group,
    )


_WORKER_OPTIONS: PrepareOptions | None = None


def _init_worker(options: PrepareOptions) -> None:
    global _WORKER_OPTIONS
    _WORKER_OPTIONS = options
    warnings.simplefilter("ignore")


def _work(record: RawRecord) -> PreparedCrystal | Dropped:
    assert _WORKER_OPTIONS is not None
    return prepare_record(record, _WORKER_OPTIONS)


def _died(record: RawRecord, reason: str) -> Dropped:
    kind, _, detail = reason.partition(": ")
    return Dropped(record.id, kind, detail)


def prepare_dataset(
    source: str | Path,
    options: PrepareOptions | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
) -> tuple[CrystalSet, PrepareReport]:
    """Turn a crystal source into a CrystalSet, with a report of what was dropped and why.

    Args:
        source: see :func:`crysgen.data.sources.read_source`.
        options: prepare options (defaults: conventional cell, <= 52 sites).
        workers: parallel parsing processes (1 = in this process).
        progress: show a progress bar on stderr.

    Returns:
        The kept crystals (source order, padded to ``options.max_sites``) and the report.
    """
    from tqdm.auto import tqdm

    from crysgen import __version__

    options = options or PrepareOptions()
    if workers < 1:
        raise CrysgenError(f"--workers must be at least 1, got {workers}")
    src = read_source(source, options.limit)
    records = src.records
    bar = tqdm(total=len(records), desc="prepare", unit="crystal", disable=not progress,
               smoothing=0.05)
    results: list[PreparedCrystal | Dropped] = []
    if workers == 1 or len(records) < 2 * workers:
        _init_worker(options)
        for rec in records:
            results.append(_work(rec))
            bar.update()
    else:  # a worker that dies (native crash) costs its entries a reason, not the run
        chunk = max(1, min(64, len(records) // (workers * 8)))
        results = robust_map(_work, records, workers=workers, died=_died, chunksize=chunk,
                             initializer=_init_worker, initargs=(options,), on_done=bar.update)
    bar.close()

    kept_idx = [i for i, r in enumerate(results) if isinstance(r, PreparedCrystal)]
    dropped = [r for r in results if isinstance(r, Dropped)]
    crystals = _assemble(
        [results[i] for i in kept_idx],  # type: ignore[misc]
        ids=[records[i].id for i in kept_idx],
        properties={
            name: np.array([records[i].properties.get(name, np.nan) for i in kept_idx])
            for name in src.property_names
        },
        max_sites=options.max_sites,
        metadata={
            "source": Path(src.path).name,
            "source_sha256": src.sha256,
            "cell": options.cell,
            "symprec": options.symprec,
            "crysgen_version": __version__,
        },
    )
    report = PrepareReport(
        source={"path": src.path, "kind": src.kind, "sha256": src.sha256},
        options=asdict(options),
        n_input=len(records),
        n_kept=len(kept_idx),
        dropped_by_reason=dict(sorted(Counter(d.reason for d in dropped).items())),
        dropped=dropped,
        crysgen_version=__version__,
    )
    return crystals, report


def _assemble(
    crystals: list[PreparedCrystal],
    *,
    ids: list[str],
    properties: dict[str, np.ndarray],
    max_sites: int,
    metadata: dict[str, Any],
) -> CrystalSet:
    n = len(crystals)
    z = np.zeros((n, max_sites), np.int16)
    f = np.zeros((n, max_sites, 3))
    for i, c in enumerate(crystals):
        k = len(c.atomic_numbers)
        z[i, :k] = c.atomic_numbers
        f[i, :k] = c.frac_coords
    return CrystalSet(
        atomic_numbers=z,
        frac_coords=f,
        lattice=np.array([c.lattice for c in crystals]).reshape(n, 6),
        space_group=np.array([c.space_group for c in crystals], dtype=np.int16),
        num_sites=np.array([len(c.atomic_numbers) for c in crystals], dtype=np.int16),
        ids=np.array(ids, dtype=str),
        properties=properties,
        metadata=metadata,
    )


def write_prepared(crystals: CrystalSet, report: PrepareReport, out: str | Path) -> Path:
    """Write ``out`` (.npz) and ``out`` with suffix ``.report.json``, both atomically.

    Returns:
        The report path.
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise CrysgenError(f"--out must end in .npz, got {out}")
    crystals.save(out)
    return write_text_atomic(out.with_suffix(".report.json"), report.to_json())
