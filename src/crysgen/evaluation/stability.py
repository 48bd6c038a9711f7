"""Stability with the CHGNet universal potential: relaxation, energy above hull, S.U.N.

Without DFT, "stable" means stable according to one ML potential, used the same way for the
generated crystals and for the reference they are compared with:

* **Relaxation** (:func:`relax`): ASE's FIRE on a ``FrechetCellFilter`` (positions and cell)
  with CHGNet's ASE calculator, until max force < ``fmax`` or ``steps``, with a wall-clock limit
  per structure. A structure whose energy is not finite, or whose volume grows or shrinks more
  than ``max_volume_ratio``-fold, is reported as exploded. The RMSD is the root mean square of
  the atoms' displacements (Å, minimum image, in the relaxed cell, rigid translation removed);
  relaxation keeps the atom order, so no structure matching is involved.
* **Reference energies** (:func:`reference_energies`): CHGNet's static energy of every training
  and reference crystal (their geometries are DFT-relaxed already), in batches, cached on disk
  under a key made of the data's hash and the potential's name and version.
* **Terminal (elemental) references** (:func:`elemental_references`): the lowest energy per atom
  among the elemental crystals of the data and CHGNet-relaxed candidates built with ASE (its
  reference crystal structure where it has one, fcc, bcc, and a dimer in a 10 Å box), all
  relaxed together in one lockstep batch and cached under a key of the potentials' versions,
  the relaxation settings and the candidates' version (:func:`elements_cache_path`). Data sets
  such as perov_5 hold no elemental crystal at all, and mp_20 lacks 26 elements, so without
  these no hull could be closed; where the candidates miss the true ground state the terminal
  is too high and E_hull comes out too low (too stable): a stated approximation.
* **Energy above hull** (:meth:`ReferenceHull.e_above_hull`): the energy per atom minus the
  lower convex envelope of the reference entries inside the structure's chemical system plus the
  terminals, at its composition — what a pymatgen ``PhaseDiagram`` gives, computed as a linear
  program (:func:`hull_energy`) because qhull in 6–14-element systems took minutes per system;
  negative values (below the reference hull) are kept. Stable = E_hull ≤ 0.1 eV/atom (MatterGen) and
  ≤ 0.0 (Matbench Discovery), both reported; S.U.N. = stable, unique and novel.

CHGNet's raw energies are used for all entries (no MP2020 corrections): the hull is internally
consistent but not the Materials Project's.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.crystal_set import CrystalSet, write_npz_atomic
from crysgen.errors import CrysgenError
from crysgen.evaluation.chgnet_batch import FORWARD_BATCH, GPA_PER_EV_A3
from crysgen.evaluation.relaxation import (  # noqa: F401  (re-exported: callers import them from here)
    MIN_VOLUME_PER_ATOM,
    RELAX_ENGINES,
    Relaxation,
    RelaxOptions,
    degenerate_cell,
    displacement_rmsd,
    load_chgnet,
    pass_size,
    relax_engine,
    rms_displacement,
    static_pass_size,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pymatgen.core import Structure

    from crysgen.evaluation.timing import StepTimer

STABLE_THRESHOLDS = (0.1, 0.0)
"""eV/atom: MatterGen's stability threshold and Matbench Discovery's."""
PLAUSIBLE_ENERGY = (-20.0, 5.0)
"""eV/atom: the range a potential's energy of a real crystal or element lies in (DFT energies per
atom of Materials Project phases lie between about -13 and 0). An energy outside it is taken for a
hole or blow-up of the potential (SevenNet-0 gave one generated crystal -1.5e10 eV/atom) and is
left out of the hull: as a reference crystal or an elemental terminal it would move the hull of
every sample of its chemical system. A sample with such an energy gets no E_hull."""


def plausible_energy(e: float) -> bool:
    """Whether an energy per atom lies in :data:`PLAUSIBLE_ENERGY` (NaN does not)."""
    return bool(PLAUSIBLE_ENERGY[0] <= e <= PLAUSIBLE_ENERGY[1])


IMPLAUSIBLE_BELOW = -0.5
"""eV/atom: an energy this far below the reference hull is taken for an artefact (a hole of the
potential for an unphysical structure, or a hull that lacks the system's phases) and not counted
as stable; new stable crystals against a Materials Project hull lie within ~0.1 eV/atom of it."""


@contextlib.contextmanager
def inference_grads() -> Any:
    """Forces and stress without the graph of their own gradients, while in the block.

    CHGNet's forward takes forces and stress with ``torch.autograd.grad(..., create_graph=True)``
    so that training can differentiate them; a relaxation never does. Inside this block
    ``torch.autograd.grad`` runs with ``create_graph=False``: the same numbers (within float
    noise), faster and with less memory. Used where CHGNet's own forward runs a relaxation
    (:func:`relax`, through its ASE calculator); :func:`relax_batch` goes through
    :mod:`crysgen.evaluation.chgnet_batch`, which never builds that graph. When the suite still
    relaxed through CHGNet's batching, this took 8 relaxation processes on the diffusion samples
    from 39 GB to 15 GB of GPU memory (``benchmarks/results/gpu_logs/``). The original function
    is restored on exit.
    """
    import torch

    original = torch.autograd.grad

    def grad(*args: Any, **kwargs: Any) -> Any:
        kwargs["create_graph"] = False
        return original(*args, **kwargs)

    torch.autograd.grad = grad
    try:
        yield
    finally:
        torch.autograd.grad = original


def relax(structure: Structure, options: RelaxOptions | None = None, *,
          relax_cell: bool = True) -> Relaxation:
    """Relax one structure with CHGNet (see the module docstring); never raises for bad input."""
    import warnings

    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    o = options or RelaxOptions()
    t0 = time.monotonic()
    initial_e, steps, converged = None, 0, False
    flat = degenerate_cell(structure)
    if flat is not None:
        return flat
    try:
        with warnings.catch_warnings(), inference_grads():
            warnings.simplefilter("ignore")
            atoms = AseAtomsAdaptor.get_atoms(structure)
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the device every time
                atoms.calc = CHGNetCalculator(model=load_chgnet(o.device), use_device=o.device,
                                              on_isolated_atoms="ignore")
            n = len(atoms)
            initial_e = float(atoms.get_potential_energy()) / n
            if not np.isfinite(initial_e):
                return Relaxation(None, None, None, 0, False, time.monotonic() - t0, None,
                                  "exploded: energy is not finite")
            v0 = atoms.get_volume()
            opt = FIRE(FrechetCellFilter(atoms) if relax_cell else atoms, logfile=None)
            reason = None
            for converged in opt.irun(fmax=o.fmax, steps=o.steps):  # noqa: B007 (kept after the loop)
                steps = opt.nsteps
                ratio = atoms.get_volume() / v0
                if not (1 / o.max_volume_ratio < ratio < o.max_volume_ratio):
                    reason = f"exploded: volume changed {ratio:.3g}-fold"
                    break
                if time.monotonic() - t0 > o.time_limit_s:
                    reason = f"time limit {o.time_limit_s:g} s reached after {steps} steps"
                    break
            energy = float(atoms.get_potential_energy()) / n
            if reason is None and not np.isfinite(energy):
                reason = "exploded: energy is not finite"
            relaxed = AseAtomsAdaptor.get_structure(atoms)
    except Exception as exc:  # a structure CHGNet cannot handle gets a reason, not a crash
        return Relaxation(initial_e, None, None, steps, False, time.monotonic() - t0, None,
                          f"relaxation failed: {type(exc).__name__}: {str(exc)[:150]}")
    seconds = time.monotonic() - t0
    if reason is not None and reason.startswith("exploded"):
        return Relaxation(initial_e, None, None, steps, False, seconds, None, reason)
    return Relaxation(initial_e, energy, displacement_rmsd(structure, relaxed), steps,
                      bool(converged) and reason is None, seconds, relaxed, reason)


STRESS_WEIGHT = 1 / GPA_PER_EV_A3
"""GPa → eV/Å³ (CHGNet predicts stress in GPa; ASE wants eV/Å³), as CHGNet's ASE calculator."""


def _predict_batch(model: Any, atoms_list: list[Any], device: str,
                   batch_size: int = FORWARD_BATCH) -> list[dict[str, Any] | str]:
    """CHGNet energy/forces/stress of many structures, batch-wise (a reason per failure).

    Uses :func:`crysgen.evaluation.chgnet_batch.predict_efs` (whole-batch tensors, one gradient
    pass); a failed batch (e.g. out of memory) is retried one structure at a time.
    """
    from pymatgen.io.ase import AseAtomsAdaptor

    from crysgen.evaluation.chgnet_batch import predict_efs

    out: list[dict[str, Any] | str] = []
    graphs, where = [], []
    for k, atoms in enumerate(atoms_list):
        try:
            graphs.append(model.graph_converter(AseAtomsAdaptor.get_structure(atoms)))
            where.append(k)
            out.append("")
        except Exception as exc:
            out.append(f"relaxation failed: {type(exc).__name__}: {str(exc)[:150]}")
    if not graphs:
        return out
    try:
        preds: list[Any] = predict_efs(model, graphs, device, batch_size)
    except Exception:  # e.g. out of memory: free the failed batch's cache, then one at a time
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        preds = []
        for g in graphs:
            try:
                preds.extend(predict_efs(model, [g], device))
            except Exception as exc:
                preds.append(f"relaxation failed: {type(exc).__name__}: {str(exc)[:150]}")
    for k, p in zip(where, preds, strict=True):
        out[k] = p
    return out


def _frechet_filter(atoms: Any) -> Any:
    """ASE's ``FrechetCellFilter`` whose generalised forces are computed once per calculator.

    :func:`relax_batch` reads them for its convergence test and FIRE reads them again in its step;
    each reading takes a matrix logarithm and nine Fréchet derivatives of the exponential
    (scipy); the two readings were 47 % of a relaxation step's time on the H100 machine's CPU
    (``benchmarks/results/profiles/relax_diffusion_default_cuda_chgnet_batch.txt``). The cache
    is keyed on the calculator object, so it holds only while each step's results come in a new
    calculator (as ``relax_batch`` attaches them).
    """
    from ase.filters import FrechetCellFilter

    class _OncePerCalculator(FrechetCellFilter):
        def get_forces(self, *args: Any, **kwargs: Any) -> np.ndarray:
            if getattr(self, "_forces_of", None) is not self.atoms.calc:
                self._forces = super().get_forces(*args, **kwargs)
                self._forces_of = self.atoms.calc
            return self._forces.copy()

    return _OncePerCalculator(atoms)


def relax_batch(structures: list[Structure], options: RelaxOptions | None = None, *,
                relax_cell: bool | Sequence[bool] = True,
                on_done: Callable[[int, Relaxation], Any] | None = None,
                progress: bool = False) -> list[Relaxation]:
    """Relax many structures in lockstep, one batched CHGNet call per FIRE step.

    The same relaxation as :func:`relax` (ASE's FIRE on a ``FrechetCellFilter``, the same
    convergence, step limit, explosion test and reasons) but the model sees all unfinished
    structures of a step together, in forward passes of :func:`pass_size`: per-structure
    calls spend most of their time in kernel launches on a GPU. Each structure's ``seconds`` and
    time limit count its share of each step's wall time. Never raises for bad input.

    Args:
        structures: the structures to relax.
        options: relaxation settings.
        relax_cell: relax the cell as well as the positions; one flag for all, or one per
            structure (elemental candidates mix bulk cells and dimers in a fixed box).
        on_done: called with a structure's index and its result as soon as that structure is
            finished (converged, out of steps or time, failed), while the others go on: a
            caller can save results as they come (:func:`relaxed_candidates` does).
        progress: show a progress bar (the torch engine; ASE's is shown by the caller's workers).

    ``options.engine`` picks the engine (:func:`relax_engine`); "torch" hands the whole call to
    :func:`crysgen.evaluation.fire_relax.relax_batch_torch`.
    """
    import warnings

    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.optimize import FIRE
    from ase.stress import full_3x3_to_voigt_6_stress
    from pymatgen.io.ase import AseAtomsAdaptor

    o = options or RelaxOptions()
    if relax_engine(o) == "torch":
        from crysgen.evaluation.fire_relax import relax_batch_torch

        return relax_batch_torch(structures, o, relax_cell=relax_cell, on_done=on_done,
                                 progress=progress)
    cells = [relax_cell] * len(structures) if isinstance(relax_cell, bool) else list(relax_cell)
    if len(cells) != len(structures):
        raise CrysgenError(f"relax_batch: {len(cells)} relax_cell flags for {len(structures)} structures")
    done: list[Relaxation | None] = [None] * len(structures)
    states: list[dict[str, Any]] = []
    for i, structure in enumerate(structures):
        degenerate = degenerate_cell(structure)
        done[i] = degenerate
        if degenerate is not None:
            if on_done is not None:
                on_done(i, degenerate)
            continue
        atoms = AseAtomsAdaptor.get_atoms(structure)
        target = _frechet_filter(atoms) if cells[i] else atoms
        states.append({"i": i, "atoms": atoms, "target": target, "opt": FIRE(target, logfile=None),
                       "v0": atoms.get_volume(), "initial": None, "energy": None, "steps": 0,
                       "seconds": 0.0, "converged": False, "reason": None})
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model = load_chgnet(o.device)
        model.graph_converter.set_isolated_atom_response("ignore")
        active = states
        while active:
            t0 = time.monotonic()
            preds = _predict_batch(model, [st["atoms"] for st in active], o.device, pass_size(o))
            share = (time.monotonic() - t0) / len(active)
            still = []
            for st, p in zip(active, preds, strict=True):
                st["seconds"] += share
                if isinstance(p, str):
                    st["reason"] = p
                    continue
                atoms, n = st["atoms"], len(st["atoms"])
                e = float(np.asarray(p["e"]).reshape(-1)[0])
                st["initial"] = e if st["initial"] is None else st["initial"]
                if not np.isfinite(e):
                    st["reason"] = "exploded: energy is not finite"
                    continue
                st["energy"] = e
                atoms.calc = SinglePointCalculator(
                    atoms, energy=e * n, forces=np.asarray(p["f"]),
                    stress=full_3x3_to_voigt_6_stress(np.asarray(p["s"]) * STRESS_WEIGHT))
                ratio = atoms.get_volume() / st["v0"]
                if not (1 / o.max_volume_ratio < ratio < o.max_volume_ratio):
                    st["reason"] = f"exploded: volume changed {ratio:.3g}-fold"
                    continue
                if np.sqrt((st["target"].get_forces() ** 2).sum(axis=1).max()) < o.fmax:
                    st["converged"] = True
                    continue
                if st["steps"] >= o.steps:
                    continue
                if st["seconds"] > o.time_limit_s:
                    st["reason"] = f"time limit {o.time_limit_s:g} s reached after {st['steps']} steps"
                    continue
                try:
                    st["opt"].step()
                except Exception as exc:
                    st["reason"] = f"relaxation failed: {type(exc).__name__}: {str(exc)[:150]}"
                    continue
                st["steps"] += 1
                still.append(st)
            going = {id(st) for st in still}
            for st in active:
                if id(st) not in going:  # finished this step: its result now, the others go on
                    done[st["i"]] = _finished(st, structures[st["i"]])
                    if on_done is not None:
                        on_done(st["i"], done[st["i"]])
            active = still
    return [r for r in done if r is not None]


def _finished(st: dict[str, Any], structure: Structure) -> Relaxation:
    """The result of one finished structure of :func:`relax_batch` (its state ``st``)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    reason = st["reason"]
    if st["energy"] is None or (reason is not None and not reason.startswith("time limit")):
        return Relaxation(st["initial"], None, None, st["steps"], False, st["seconds"],
                          None, reason or "relaxation failed: no energy")
    st["atoms"].calc = None
    relaxed = AseAtomsAdaptor.get_structure(st["atoms"])
    return Relaxation(st["initial"], st["energy"], displacement_rmsd(structure, relaxed),
                      st["steps"], st["converged"], st["seconds"], relaxed, reason)


def _cache_key(crystals: CrystalSet, potential: str = "chgnet") -> str:
    """The potential's name and version and the data's hash (static energies: no relax settings)."""
    from crysgen.evaluation.potentials import potential_id
    from crysgen.models.model_dir import data_fingerprint

    return f"{potential_id(potential)}_{data_fingerprint(crystals, '')['sha256'][:20]}"


TERMINALS_VERSION = 2
"""Version of how the elemental candidates are built and relaxed, part of their cache key: bump
it when :func:`_candidates` or the relaxation engine changes the energies. 1: one :func:`relax`
per candidate; 2: all candidates in one lockstep :func:`relax_batch` (energies within float and
FIRE-trajectory noise of 1's, and a time limit counted as a share of each batched step)."""


def relax_key(options: RelaxOptions) -> str:
    """The relaxation settings that change a relaxed energy, for cache keys.

    Force criterion, step limit, explosion ratio and time limit: a short ``--relax-steps`` run
    must not leave terminal energies that a later full run would take for its own. Device, batch
    size and engine change only float noise and speed, and are left out.
    """
    o = options
    return f"fmax{o.fmax:g}_steps{o.steps}_vol{o.max_volume_ratio:g}_t{o.time_limit_s:g}"


def elements_cache_path(cache_dir: str | Path | None, potential: str, options: RelaxOptions) -> Path:
    """Where the elemental candidates' energies under ``potential`` are cached.

    CHGNet's file holds the relaxed candidates (energies and structures); another potential's
    holds its static energies of those CHGNet-relaxed structures, so its name carries both
    potentials' versions. Both names carry everything else that changes the energies: the
    relaxation settings (:func:`relax_key`), :data:`TERMINALS_VERSION` and the ASE version (ASE
    builds the candidates and runs FIRE).
    """
    import ase

    from crysgen.evaluation.potentials import potential_id

    chg = f"{potential_id('chgnet')}_{relax_key(options)}_v{TERMINALS_VERSION}_ase{ase.__version__}"
    name = (f"elements_{chg}.json" if potential == "chgnet"
            else f"elements_{potential_id(potential)}_on_{chg}.json")
    return Path(cache_dir or default_cache_dir()) / "hull" / name


def default_cache_dir() -> Path:
    """``$CRYSGEN_CACHE`` or ``~/.cache/crysgen``."""
    import os

    return Path(os.environ.get("CRYSGEN_CACHE", Path.home() / ".cache" / "crysgen"))


CACHE_READ_ERRORS = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)
"""What reading a damaged ``.npz`` cache raises (a truncated zip is a ``BadZipFile``, which is
not an ``OSError``; a file that is not a zip makes ``np.load`` try pickle: ``ValueError``)."""


def cache_unreadable(path: Path, why: str) -> None:
    """Say on stderr that a cache file is ignored and recomputed (never silently, never a crash).

    Printed rather than ``warnings.warn``: warnings may be filtered out by the time a cache is
    read, and a recomputation can take minutes that the user should be able to account for.
    """
    print(f"warning: cache file {path} {why}; recomputing it (it will be overwritten)",
          file=sys.stderr)


GRAPH_BLOCK = 4096
"""Crystals whose graphs (CHGNet's or SevenNet's) are built in workers before their forward
passes: about 110 MB of CHGNet graphs for mp_20-sized cells, and a progress step."""


def reference_energies(crystals: CrystalSet, *, device: str = "cpu", batch_size: int = FORWARD_BATCH,
                       cache_dir: str | Path | None = None, progress: bool = True,
                       potential: str = "chgnet", workers: int = 1) -> np.ndarray:
    """Static energy per atom (eV/atom) of every crystal with ``potential``, cached on disk.

    The cache key is the potential's name and version and the data's hash; a cache file that
    cannot be read, or holds another number of crystals, is recomputed with a warning on stderr
    (:func:`cache_unreadable`) and overwritten atomically. The potential's graphs are built in
    ``workers`` processes, :data:`GRAPH_BLOCK` crystals at a time, before each block's
    whole-batch forward passes (:func:`crysgen.evaluation.potentials.static_energies`).

    Returns:
        (N,) float64; NaN where the potential failed on a crystal.
    """
    from tqdm.auto import tqdm

    from crysgen.evaluation.chgnet_batch import crystal_rows
    from crysgen.evaluation.potentials import chgnet_energies, static_energies

    cache = Path(cache_dir or default_cache_dir()) / "hull" / f"{_cache_key(crystals, potential)}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                cached = np.asarray(z["energy_per_atom"], float)
            if cached.shape == (len(crystals),):
                return cached
            cache_unreadable(cache, f"holds {cached.shape} energies for {len(crystals)} crystals")
        except CACHE_READ_ERRORS as exc:
            cache_unreadable(cache, f"cannot be read ({type(exc).__name__}: {str(exc)[:100]})")
    if potential == "chgnet":
        load_chgnet(device)  # fails here, before the loop, when the model cannot be loaded
    out = np.full(len(crystals), np.nan)
    label = "CHGNet" if potential == "chgnet" else potential
    bar = tqdm(total=len(crystals), desc=f"{label} reference energies", disable=not progress,
               leave=False)
    for start in range(0, len(crystals), GRAPH_BLOCK):
        idx = list(range(start, min(start + GRAPH_BLOCK, len(crystals))))
        if potential == "chgnet":
            out[idx] = chgnet_energies(crystal_rows(crystals, idx), device, batch_size, workers)
        else:
            out[idx] = static_energies([crystals.to_structure(i) for i in idx], potential,
                                       device=device, batch_size=batch_size, workers=workers)
        bar.update(len(idx))
    bar.close()
    write_npz_atomic(cache, {"energy_per_atom": out})
    return out


def _candidates(symbol: str) -> list[tuple[str, Any, bool]]:
    """ASE-built elemental structures: (label, atoms, relax the cell?)."""
    from ase import Atoms
    from ase.build import bulk
    from ase.data import atomic_numbers, covalent_radii

    r = float(covalent_radii[atomic_numbers[symbol]])
    out: list[tuple[str, Any, bool]] = []
    with contextlib.suppress(Exception):  # ASE has no crystal reference state for some elements
        out.append(("reference", bulk(symbol), True))
    out.append(("fcc", bulk(symbol, "fcc", a=2 * np.sqrt(2) * r * 1.1), True))
    out.append(("bcc", bulk(symbol, "bcc", a=4 * r * 1.1 / np.sqrt(3)), True))
    out.append(("dimer", Atoms(f"{symbol}2", positions=[(5, 5, 5), (5, 5, 5 + 2 * r)],
                               cell=(10, 10, 10), pbc=True), False))
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _read_elements_cache(path: Path) -> dict[str, dict[str, Any]]:
    """An elements cache file (symbol -> label -> entry), or {} when missing or unreadable.

    An entry is a number (an energy, eV/atom) or ``{"energy_per_atom": number, "structure":
    pymatgen dict or None}``. A file that is not such JSON (truncated, edited, another format)
    is reported (:func:`cache_unreadable`) and treated as empty, so everything is recomputed.
    """
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for sym, labels in data.items():
            if not isinstance(labels, dict):
                raise ValueError(f"{sym}: not an object of candidates")
            for label, v in labels.items():
                energy = v.get("energy_per_atom") if isinstance(v, dict) else v
                if not _is_number(energy):
                    raise ValueError(f"{sym} {label}: no energy")
                if isinstance(v, dict) and not isinstance(v.get("structure"), (dict, type(None))):
                    raise ValueError(f"{sym} {label}: structure is not a pymatgen dict")
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        cache_unreadable(path, f"cannot be read ({type(exc).__name__}: {str(exc)[:100]})")
        return {}
    return data


def relaxed_candidates(symbols: set[str], *, options: RelaxOptions | None = None,
                       cache_dir: str | Path | None = None,
                       progress: bool = True) -> dict[str, dict[str, dict[str, Any]]]:
    """CHGNet-relaxed elemental candidates (:func:`_candidates`) of every symbol, cached on disk.

    The candidates of every symbol missing from the cache are relaxed together, in one lockstep
    :func:`relax_batch` (bulk cells with their cell, dimers in their fixed box): on a GPU one
    batched CHGNet call per FIRE step for all of them instead of one relaxation after another.
    The cache (:func:`elements_cache_path`) is rewritten atomically each time every candidate of
    an element has finished, while the others go on, so an interrupted run keeps the elements
    it finished; an element is in the file only with all its candidates.

    Returns:
        symbol -> label -> {"energy_per_atom": eV/atom, "structure": pymatgen dict or None}; a
        candidate whose relaxation failed is left out.
    """
    from pymatgen.io.ase import AseAtomsAdaptor

    from crysgen.crystal_set import write_text_atomic

    o = options or RelaxOptions()
    cache = elements_cache_path(cache_dir, "chgnet", o)
    known: dict[str, dict[str, Any]] = _read_elements_cache(cache)
    missing = sorted(symbols - set(known))
    if missing:
        todo = [(sym, label, AseAtomsAdaptor.get_structure(atoms), cell)
                for sym in missing for label, atoms, cell in _candidates(sym)]
        if progress:
            print(f"CHGNet: relaxing {len(todo)} elemental candidates of {len(missing)} elements "
                  f"in one batch ({o.steps} FIRE steps at most)", file=sys.stderr)
        left = {sym: sum(1 for t in todo if t[0] == sym) for sym in missing}
        found: dict[str, dict[str, Any]] = {sym: {} for sym in missing}

        def keep(k: int, r: Relaxation) -> None:
            if r.energy_per_atom is not None and np.isfinite(r.energy_per_atom):
                found[todo[k][0]][todo[k][1]] = {
                    "energy_per_atom": r.energy_per_atom,
                    "structure": r.structure.as_dict() if r.structure else None}

        def finished(k: int, r: Relaxation) -> None:
            keep(k, r)
            sym = todo[k][0]
            left[sym] -= 1
            if left[sym] == 0:  # the element is complete: save it now
                known[sym] = found[sym]
                write_text_atomic(cache, json.dumps(known, indent=1, sort_keys=True) + "\n")

        results = relax_batch([t[2] for t in todo], o, relax_cell=[t[3] for t in todo],
                              on_done=finished)
        if any(left.values()):  # a relax_batch that did not report every candidate as it went
            for sym in missing:
                found[sym] = {}
            for k, r in enumerate(results):
                keep(k, r)
            known.update(found)
            write_text_atomic(cache, json.dumps(known, indent=1, sort_keys=True) + "\n")
    # a bare number is an energy without its structure (hand-written caches in tests)
    return {sym: {label: v if isinstance(v, dict) else {"energy_per_atom": float(v), "structure": None}
                  for label, v in known[sym].items()} for sym in symbols}


def _rescored_candidates(candidates: dict[str, dict[str, dict[str, Any]]], potential: str, *,
                         options: RelaxOptions, cache_dir: str | Path | None,
                         batch_size: int = FORWARD_BATCH) -> dict[str, dict[str, float]]:
    """``potential``'s static energies of the CHGNet-relaxed candidates, cached per element."""
    from pymatgen.core import Structure

    from crysgen.crystal_set import write_text_atomic
    from crysgen.evaluation.potentials import static_energies

    cache = elements_cache_path(cache_dir, potential, options)
    known: dict[str, dict[str, Any]] = _read_elements_cache(cache)
    todo = [(sym, label, Structure.from_dict(v["structure"]))
            for sym in sorted(set(candidates) - set(known))
            for label, v in sorted(candidates[sym].items()) if v.get("structure")]
    energies = static_energies([t[2] for t in todo], potential, device=options.device,
                               batch_size=batch_size)
    for sym in set(candidates) - set(known):
        known[sym] = {}
    for (sym, label, _), e in zip(todo, energies, strict=True):
        if np.isfinite(e):
            known[sym][label] = float(e)
    if todo:
        write_text_atomic(cache, json.dumps(known, indent=1, sort_keys=True) + "\n")
    return {sym: {label: float(v["energy_per_atom"] if isinstance(v, dict) else v)
                  for label, v in known[sym].items()} for sym in candidates}


def elemental_references(symbols: set[str], data_terminals: dict[str, float], *,
                         options: RelaxOptions | None = None, cache_dir: str | Path | None = None,
                         progress: bool = True, potential: str = "chgnet",
                         batch_size: int = FORWARD_BATCH) -> dict[str, dict[str, Any]]:
    """Lowest energy per atom for each element: the data's elemental crystals or ASE candidates.

    Args:
        symbols: elements needed.
        data_terminals: lowest energy per atom (under ``potential``) among the data's elemental
            crystals.
        options: relaxation settings for the candidates (CHGNet relaxes them for every potential).
        cache_dir: where the candidates' energies are cached (:func:`elements_cache_path`: keyed
            by the potentials' versions and the relaxation settings).
        progress: say on stderr when candidates are relaxed.
        potential: ``"chgnet"`` (the relaxed energies) or the second potential (its static
            energies of the CHGNet-relaxed candidates).
        batch_size: structures per forward pass of the second potential.

    Returns:
        symbol -> {"energy_per_atom", "source"} for every symbol (NaN energy if all failed).
    """
    o = options or RelaxOptions()
    cands = relaxed_candidates(symbols, options=o, cache_dir=cache_dir, progress=progress)
    if potential == "chgnet":
        energies = {sym: {label: v["energy_per_atom"] for label, v in c.items()} for sym, c in cands.items()}
    else:
        energies = _rescored_candidates(cands, potential, options=o, cache_dir=cache_dir,
                                        batch_size=batch_size)
    out = {}
    for sym in sorted(symbols):
        options_e = {f"ase {k}": v for k, v in energies[sym].items()}
        if sym in data_terminals:
            options_e["data"] = data_terminals[sym]
        options_e = {k: v for k, v in options_e.items() if plausible_energy(v)}
        if options_e:
            source = min(options_e, key=options_e.__getitem__)
            out[sym] = {"energy_per_atom": options_e[source], "source": source}
        else:
            out[sym] = {"energy_per_atom": float("nan"), "source": "none"}
    return out


@dataclass
class ReferenceHull:
    """Reference entries (composition, CHGNet energy) and elemental terminals for E_hull."""

    formulas: list[dict[str, float]]
    energy_per_atom: np.ndarray
    terminals: dict[str, dict[str, Any]]
    dropped_implausible: int = 0
    """Reference crystals left out for an energy outside :data:`PLAUSIBLE_ENERGY`."""

    @classmethod
    def build(cls, sets: list[CrystalSet], needed: set[str], *, options: RelaxOptions | None = None,
              batch_size: int = FORWARD_BATCH, cache_dir: str | Path | None = None,
              progress: bool = True, potential: str = "chgnet",
              timer: StepTimer | None = None, workers: int = 1) -> ReferenceHull:
        """Energies of every crystal of ``sets`` plus terminals for every element in ``needed``.

        ``potential`` gives every energy of the hull (reference crystals: static, as they are
        DFT-relaxed; terminals: relaxed by CHGNet, then scored by ``potential``). With a
        ``timer``, the two parts are timed as ``stability.hull_<potential>.reference_energies``
        and ``stability.hull_<potential>.terminals``. ``workers`` processes build CHGNet's graphs
        of the reference crystals (:func:`reference_energies`).
        """
        from pymatgen.core import Element

        from crysgen.evaluation.timing import timed

        o = options or RelaxOptions()
        formulas, energies = [], []
        dropped = 0
        for cs in sets:
            with timed(timer, f"stability.hull_{potential}.reference_energies"):
                e = reference_energies(cs, device=o.device, batch_size=batch_size, cache_dir=cache_dir,
                                       progress=progress, potential=potential, workers=workers)
            for i in range(len(cs)):
                if not np.isfinite(e[i]):
                    continue
                if not plausible_energy(e[i]):
                    dropped += 1
                    continue
                zs, counts = np.unique(cs.atomic_numbers[i, : cs.num_sites[i]], return_counts=True)
                formulas.append({Element.from_Z(int(z)).symbol: float(c)
                                 for z, c in zip(zs, counts, strict=True)})
                energies.append(e[i])
        data_terminals: dict[str, float] = {}
        for f, e in zip(formulas, energies, strict=True):
            if len(f) == 1:
                sym = next(iter(f))
                data_terminals[sym] = min(e, data_terminals.get(sym, np.inf))
        needed = needed | {s for f in formulas for s in f}
        with timed(timer, f"stability.hull_{potential}.terminals"):
            terminals = elemental_references(needed, data_terminals, options=o, cache_dir=cache_dir,
                                             progress=progress, potential=potential,
                                             batch_size=batch_size)
        return cls(formulas, np.asarray(energies, float), terminals, dropped)

    def e_above_hull(self, structures: list[Structure], energies_per_atom: list[float | None],
                     ) -> list[tuple[float | None, str | None]]:
        """E_hull (eV/atom, negative below the reference hull) or a reason, per structure.

        A structure whose own energy is not :func:`plausible_energy` gets a reason, not an E_hull,
        like a reference crystal with such an energy is left out of the hull.
        """
        symbols = sorted({x for f in self.formulas for x in f} | set(self.terminals))
        column = {x: j for j, x in enumerate(symbols)}
        term = [x for x in symbols if np.isfinite(self.terminals.get(x, {}).get("energy_per_atom", np.nan))]
        # every entry as a fractional composition row over ``symbols``; terminals first
        comp = np.zeros((len(term) + len(self.formulas), len(symbols)))
        energy = np.empty(len(comp))
        for k, x in enumerate(term):
            comp[k, column[x]] = 1.0
            energy[k] = self.terminals[x]["energy_per_atom"]
        for k, f in enumerate(self.formulas, start=len(term)):
            total = sum(f.values())
            for x, c in f.items():
                comp[k, column[x]] = c / total
            energy[k] = self.energy_per_atom[k - len(term)]
        out: list[tuple[float | None, str | None]] = []
        for s, e in zip(structures, energies_per_atom, strict=True):
            if e is None or not np.isfinite(e):
                out.append((None, "no relaxed energy"))
                continue
            if not plausible_energy(e):
                out.append((None, f"implausible energy {e:.3g} eV/atom (outside {PLAUSIBLE_ENERGY}: "
                                  "a blow-up of the potential); no E_hull"))
                continue
            target = {el.symbol: float(a) for el, a in s.composition.fractional_composition.items()}
            missing = [x for x in target if x not in term]
            if missing:
                out.append((None, f"no elemental reference for {', '.join(sorted(missing))}"))
                continue
            try:
                out.append((float(e) - hull_energy(target, comp, energy, column), None))
            except Exception as exc:
                out.append((None, f"hull failed: {type(exc).__name__}: {str(exc)[:100]}"))
        return out


def hull_energy(target: dict[str, float], comp: np.ndarray, energy: np.ndarray,
                column: dict[str, int]) -> float:
    """Energy per atom of the convex hull at a composition, by linear programming.

    The hull energy at composition ``c`` is ``min Σ x_k e_k`` over phase fractions ``x ≥ 0`` with
    ``Σ x_k c_k = c`` — the lower convex envelope that pymatgen's ``PhaseDiagram`` builds with
    qhull, evaluated at one point. Solved with scipy's HiGHS; unlike a qhull hull in a
    (n_elements − 1)-dimensional space it stays fast for the 6–14-element compositions that
    generators produce.

    Args:
        target: fractional composition of the structure, element → fraction (sums to 1).
        comp: (n_entries, n_symbols) fractional compositions of the reference entries,
            including one pure-element row for every element of ``target``.
        energy: (n_entries,) energy per atom of each entry, eV/atom.
        column: element symbol → column of ``comp``.

    Returns:
        The hull energy per atom, eV/atom.
    """
    from scipy.optimize import linprog

    outside = [j for x, j in column.items() if x not in target]
    inside = ~(comp[:, outside] > 0).any(axis=1) if outside else np.ones(len(comp), bool)
    cols = [column[x] for x in target]
    a_eq = comp[inside][:, cols].T
    b_eq = np.array([target[x] for x in target])
    res = linprog(energy[inside], A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if not res.success:
        raise CrysgenError(f"hull linear program: {res.message}")
    return float(res.fun)


def threshold_key(thr: float) -> str:
    """The suffix naming a threshold in :func:`stability_rates` keys: 0.1 -> "0p1", 0.0 -> "0"."""
    return f"{thr:g}".replace(".", "p")


def stability_rates(e_hull: np.ndarray, unique_novel: np.ndarray | None, n: int,
                    converged: np.ndarray | None = None) -> dict[str, Any]:
    """Stable (≤ 0.1 and ≤ 0.0 eV/atom) and S.U.N. rates over all ``n`` samples.

    A structure counts as stable when its energy above hull is at most the threshold, at least
    :data:`IMPLAUSIBLE_BELOW`, and (when ``converged`` is given) its relaxation converged: the
    energy of a structure still moving is not that of a minimum. The numbers left out for each
    reason are returned too (``excluded_implausible``, ``excluded_unconverged_<key>``).

    Args:
        e_hull: (n,) energies above hull (eV/atom), NaN where unknown (counts as not stable).
        unique_novel: (n,) bool, or None when novelty was not computed.
        n: number of samples (the denominator).
        converged: (n,) bool, whether each relaxation converged; None: not required.
    """
    e = np.nan_to_num(np.asarray(e_hull, float), nan=np.inf)
    plausible = e >= IMPLAUSIBLE_BELOW
    done = np.ones(len(e), bool) if converged is None else np.asarray(converged, bool)
    out: dict[str, Any] = {"excluded_implausible": int((~plausible).sum())}
    for thr in STABLE_THRESHOLDS:
        below = plausible & (e <= thr)
        stable = stable_mask(e_hull, converged, thr)
        key = threshold_key(thr)
        out[f"stable_{key}"] = float(stable.sum() / n) if n else float("nan")
        out[f"excluded_unconverged_{key}"] = int((below & ~done).sum())
        if unique_novel is not None:
            out[f"sun_{key}"] = float((stable & unique_novel).sum() / n) if n else float("nan")
    return out


def stable_mask(e_hull: np.ndarray, converged: np.ndarray | None = None,
                threshold: float = 0.1) -> np.ndarray:
    """Which samples count as stable at ``threshold`` (eV/atom), by :func:`stability_rates`'s rule.

    E_hull at most ``threshold``, at least :data:`IMPLAUSIBLE_BELOW`, and (when ``converged`` is
    given) a converged relaxation; NaN is not stable.
    """
    e = np.nan_to_num(np.asarray(e_hull, float), nan=np.inf)
    done = np.ones(len(e), bool) if converged is None else np.asarray(converged, bool)
    return (e >= IMPLAUSIBLE_BELOW) & (e <= threshold) & done


def agreement(e_first: np.ndarray, e_second: np.ndarray, converged: np.ndarray | None = None,
              threshold: float = 0.1) -> dict[str, Any]:
    """How two potentials' energies above hull agree, over the samples both could place.

    Args:
        e_first: (n,) E_hull under the first potential (eV/atom), NaN where unknown.
        e_second: (n,) E_hull under the second potential, NaN where unknown.
        converged: (n,) bool, whether each relaxation converged (the stable rule's condition).
        threshold: the stable threshold of the confusion table (eV/atom).

    Returns:
        ``n``: samples with both E_hull finite; ``spearman``: rank correlation of the two E_hull
        over them (NaN below 2 samples or when one side is constant); ``both_stable``,
        ``first_only``, ``second_only``, ``neither``: the 2×2 confusion of the stable verdicts
        (:func:`stable_mask`) over the same samples; ``agree``: the fraction on the diagonal.
    """
    a, b = np.asarray(e_first, float), np.asarray(e_second, float)
    both = np.isfinite(a) & np.isfinite(b)
    n = int(both.sum())
    rho = float("nan")
    if n >= 2 and np.ptp(a[both]) > 0 and np.ptp(b[both]) > 0:
        from scipy.stats import spearmanr

        rho = float(spearmanr(a[both], b[both]).statistic)
    sa = stable_mask(a, converged, threshold)[both]
    sb = stable_mask(b, converged, threshold)[both]
    out = {"n": n, "spearman": rho, "threshold": threshold,
           "both_stable": int((sa & sb).sum()), "first_only": int((sa & ~sb).sum()),
           "second_only": int((~sa & sb).sum()), "neither": int((~sa & ~sb).sum())}
    out["agree"] = (out["both_stable"] + out["neither"]) / n if n else float("nan")
    return out


def check_device(device: str) -> None:
    """Refuse a CUDA device on a machine without one, before any work starts."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CrysgenError("--device cuda: no CUDA device on this machine")
