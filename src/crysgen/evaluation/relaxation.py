"""What a relaxation is asked to do and what it gives back, shared by both relaxation engines.

:mod:`crysgen.evaluation.stability` relaxes with ASE (``engine="ase"``) and
:mod:`crysgen.evaluation.fire_relax` with batched tensors (``engine="torch"``); both take
:class:`RelaxOptions`, return :class:`Relaxation` and refuse the same degenerate cells.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.errors import CrysgenError
from crysgen.evaluation.chgnet_batch import FORWARD_BATCH

if TYPE_CHECKING:
    from pymatgen.core import Structure

MIN_VOLUME_PER_ATOM = 3.0
"""Å³: cells with less room per atom are refused before CHGNet sees them (reason "degenerate
cell"). The densest crystals of the mp_20 and perov_5 test sets have 7.2 and 7.5 Å³ per atom
(diamond 5.7); denser generated cells (the voxel VAE's shrunken lattices: median 0.94 Å³/atom)
are not crystals to relax, and their neighbour lists of hundreds of atoms per site made one
relaxation take minutes on the H100 machine. Flat cells (CHGNet's neighbour search on them does
not finish) are refused by the same test."""


@dataclass(frozen=True)
class RelaxOptions:
    """How structures are relaxed.

    Attributes:
        fmax: force convergence criterion (eV/Å).
        steps: FIRE steps at most.
        time_limit_s: wall-clock limit per structure (s); the structure gets a reason when hit.
        max_volume_ratio: the cell may grow or shrink this many times before it counts as exploded.
        device: "cpu" or "cuda".
        batch_size: structures per CHGNet forward pass of a relaxation; bounds memory. None: the
            engine's own (:func:`pass_size`: 64 for ase, 512 for torch).
        engine: how :func:`relax_batch` steps: "ase" (ASE's FIRE and FrechetCellFilter per
            structure, CHGNet's graph converter; the CPU does most of the work), "torch" (the
            same algorithms as batched tensors with graphs built on the device,
            :mod:`crysgen.evaluation.fire_relax`; the same trajectories to float noise) or
            "auto" (torch on a GPU, ase on the CPU; :func:`relax_engine`).

    These defaults are the one place the relaxation's settings are written: ``EvalOptions`` and
    ``crysgen evaluate`` read them from here.
    """

    fmax: float = 0.1
    steps: int = 500
    time_limit_s: float = 120.0
    max_volume_ratio: float = 5.0
    device: str = "cpu"
    batch_size: int | None = None
    engine: str = "auto"


@dataclass
class Relaxation:
    """One structure's relaxation (energies in eV/atom, RMSD in Å, None where not available)."""

    initial_energy_per_atom: float | None
    energy_per_atom: float | None
    rmsd: float | None
    steps: int
    converged: bool
    seconds: float
    structure: Structure | None = None
    reason: str | None = None

    def row(self) -> dict[str, Any]:
        """The per-structure columns."""
        d = asdict(self)
        d.pop("structure")
        return {f"relax_{k}" if k in ("steps", "converged", "seconds", "reason") else k: v
                for k, v in d.items()}


TORCH_PASS = 512
"""Structures per CHGNet pass of the torch engine unless told otherwise: 1,000 mp_20 samples relaxed
in 30 s on an H200 (``benchmarks/results/eval_speed.json``); a pass that does not fit in memory is
split in halves (:mod:`crysgen.evaluation.fire_relax`)."""

RELAX_ENGINES = ("auto", "ase", "torch")
"""The relaxation engines (``RelaxOptions.engine``)."""


def relax_engine(options: RelaxOptions) -> str:
    """The engine ``options`` ask for, "auto" resolved: "torch" on CUDA, "ase" elsewhere.

    Raises:
        CrysgenError: for an unknown engine.
    """
    if options.engine not in RELAX_ENGINES:
        raise CrysgenError(f"unknown relaxation engine {options.engine!r}: "
                           f"choose from {', '.join(RELAX_ENGINES)}")
    if options.engine == "auto":
        return "torch" if options.device.startswith("cuda") else "ase"
    return options.engine


def pass_size(options: RelaxOptions) -> int:
    """Structures per CHGNet pass of a relaxation.

    ``options.batch_size``, else the engine's default: :data:`~crysgen.evaluation.chgnet_batch.FORWARD_BATCH`
    (64) for ase, :data:`TORCH_PASS` (512) for torch.
    """
    if options.batch_size is not None:
        return options.batch_size
    return TORCH_PASS if relax_engine(options) == "torch" else FORWARD_BATCH


def static_pass_size(options: RelaxOptions) -> int:
    """Structures per forward pass of static energies (hull references, a second potential).

    ``options.batch_size``, else :data:`~crysgen.evaluation.chgnet_batch.FORWARD_BATCH` (64) for
    either engine: a failed pass there falls back to one structure at a time, not to halves.
    """
    return options.batch_size or FORWARD_BATCH


_MODEL: dict[str, Any] = {}


def load_chgnet(device: str = "cpu") -> Any:
    """CHGNet's bundled pre-trained model (no network needed), loaded once per process."""
    if device not in _MODEL:
        import warnings

        from chgnet.model import CHGNet

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _MODEL[device] = CHGNet.load(verbose=False, use_device=device)
    return _MODEL[device]


def rms_displacement(frac_a: np.ndarray, frac_b: np.ndarray, matrix: np.ndarray) -> float:
    """RMS displacement (Å) between two (N, 3) fractional coordinate sets of the same atoms.

    Fractional differences are wrapped to the nearest image, mapped into Cartesian space with the
    cell ``matrix`` (3, 3, row vectors, Å), and the mean displacement (rigid translation) is removed.
    """
    df = np.asarray(frac_b, float) - np.asarray(frac_a, float)
    df -= np.round(df)
    d = df @ matrix
    d -= d.mean(axis=0)
    return float(np.sqrt((d ** 2).sum(axis=1).mean()))


def displacement_rmsd(initial: Structure, relaxed: Structure) -> float:
    """RMS displacement (Å) between two orderings of the same atoms, in the relaxed cell.

    See :func:`rms_displacement`.
    """
    return rms_displacement(initial.frac_coords, relaxed.frac_coords, relaxed.lattice.matrix)


def degenerate_cell(structure: Structure) -> Relaxation | None:
    """The "not relaxed" result of a flat or impossibly dense cell; None for a usable cell.

    See :data:`MIN_VOLUME_PER_ATOM`.
    """
    volume = float(abs(np.linalg.det(structure.lattice.matrix))) if len(structure) else 0.0
    if np.isfinite(volume) and volume / max(len(structure), 1) >= MIN_VOLUME_PER_ATOM:
        return None
    return Relaxation(None, None, None, 0, False, 0.0, None,
                      f"degenerate cell: {volume:.3g} Å³ for {len(structure)} atoms "
                      f"(< {MIN_VOLUME_PER_ATOM:g} Å³ per atom)")
