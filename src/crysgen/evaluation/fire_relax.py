"""CHGNet relaxations of many structures at once, entirely in tensors (the ``torch`` engine).

:func:`crysgen.evaluation.stability.relax_batch` steps ASE's FIRE on a ``FrechetCellFilter`` per
structure on the CPU and rebuilds each structure's CHGNet graph with CHGNet's converter after
every step: 10 ms of filter and optimiser and 5–10 ms of graph per structure and step, against
about 1 ms of CHGNet on a GPU. :func:`relax_batch_torch` takes the same steps as tensor
operations over the whole batch: the graph from
:func:`crysgen.evaluation.periodic_graph.chgnet_batch_graph`, CHGNet through
:func:`crysgen.evaluation.chgnet_batch.forward_batch`, and ASE's algorithms written batch-wise in
float64:

* **FrechetCellFilter** (ASE ≥ 3.23): the degrees of freedom are the atoms' positions in the
  undeformed cell and ``n_atoms · log F`` of the deformation gradient F (the current cell is
  ``orig_cell @ F.T``); the generalised forces are the atoms' forces times F and
  ``L(log F.T, G) / n_atoms`` with ``G = virial @ inv(F.T)``, where L is the Fréchet derivative of
  the matrix exponential (its adjoint replaces ASE's nine directional derivatives; it is read
  off the exponential of a 6×6 block matrix). ASE recomputes ``logm(F)`` from the cell at every
  step; here ``log F`` is the state itself.
* **FIRE** (``ase.optimize.FIRE`` with its defaults: dt 0.1, maxstep 0.2 Å, dtmax 1.0, Nmin 5,
  finc 1.1, fdec 0.5, astart 0.1, fa 0.99), each structure with its own dt, alpha and count,
  dot products and step lengths over that structure's whole generalised vector.

Convergence (largest generalised force row below ``fmax``), the step limit, the explosion tests,
the time limit (a structure's share of each step's wall time) and the reasons are those of
``relax_batch``; a structure leaves the batch as soon as it is finished. Trajectories agree with
ASE's to float noise over the first steps, and drift apart only where FIRE's branch decisions
flip on rounding (``tests/evaluation/test_fire_relax.py``; the end points are compared by
``benchmarks/relax_engines.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pymatgen.core import Structure

    from crysgen.evaluation.relaxation import Relaxation, RelaxOptions


@dataclass(frozen=True)
class FireParameters:
    """ASE's FIRE defaults (``ase.optimize.FIRE``)."""

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    n_min: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99


def expm_frechet_adjoint(x: Any, g: Any) -> Any:
    """``L(x.T, g)`` for a batch of 3×3 matrices: the gradient ``d <g, expm(x)> / d x``.

    L is the Fréchet derivative of the matrix exponential; ASE's FrechetCellFilter builds the same
    gradient from nine directional derivatives ``expm_frechet(x, E_ij)``.

    Args:
        x: (B, 3, 3) float64.
        g: (B, 3, 3) float64.

    Returns:
        (B, 3, 3): the top-right block of ``expm([[x.T, g], [0, x.T]])``.
    """
    import torch

    b = x.shape[0]
    block = torch.zeros((b, 6, 6), dtype=x.dtype, device=x.device)
    xt = x.transpose(1, 2)
    block[:, :3, :3] = xt
    block[:, 3:, 3:] = xt
    block[:, :3, 3:] = g
    return torch.linalg.matrix_exp(block)[:, :3, 3:]


def _segment_sum(values: Any, owner: Any, n: int) -> Any:
    """Sum of (M,) values per owner (n,)."""
    import torch

    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, owner, values)


@dataclass
class _Batch:
    """The unfinished structures (tensors on the device; atoms crystal after crystal)."""

    index: list[int]          # position of each structure in the caller's list
    z: Any                    # (N,) atomic numbers
    owner: Any                # (N,) structure of each atom
    n_atoms: Any              # (B,) int64
    x: Any                    # (N, 3) positions in the undeformed cell (Å)
    u: Any                    # (B, 3, 3) n_atoms · log F
    orig_cell: Any            # (B, 3, 3) rows
    cell_free: Any            # (B,) bool: the cell relaxes too
    v0: Any                   # (B,) initial volumes
    vel_x: Any                # (N, 3)
    vel_u: Any                # (B, 3, 3)
    dt: Any                   # (B,)
    a: Any                    # (B,)
    n_ok: Any                 # (B,) FIRE's count of downhill steps
    started: bool = False     # FIRE has a velocity (its first step has run; every structure steps together)

    def keep(self, mask: Any) -> _Batch:
        """The structures where ``mask`` (B,) is True, renumbered."""
        import torch

        atom_mask = mask[self.owner]
        new_owner = torch.cumsum(mask.long(), 0) - 1
        per = {k: getattr(self, k)[mask] for k in ("n_atoms", "u", "orig_cell", "cell_free", "v0",
                                                   "vel_u", "dt", "a", "n_ok")}
        atoms = {k: getattr(self, k)[atom_mask] for k in ("z", "x", "vel_x")}
        index = [i for i, m in zip(self.index, mask.tolist(), strict=True) if m]
        return _Batch(index=index, owner=new_owner[self.owner[atom_mask]], started=self.started,
                      **per, **atoms)

    def geometry(self) -> tuple[Any, Any, Any]:
        """Deformation gradients F (B, 3, 3), cells (B, 3, 3) and Cartesian positions (N, 3)."""
        import torch

        f = torch.linalg.matrix_exp(self.u / self.n_atoms[:, None, None].double())
        cell = self.orig_cell @ f.transpose(1, 2)
        pos = torch.einsum("ni,nji->nj", self.x, f[self.owner])  # x @ F.T per atom
        return f, cell, pos


def _start(structures: Sequence[Structure], index: list[int], cells: list[bool], device: str,
           fire: FireParameters) -> _Batch:
    """The batch of ``structures`` (those at ``index``) before the first step."""
    import torch

    f64: dict[str, Any] = {"dtype": torch.float64, "device": device}
    n = torch.tensor([len(structures[i]) for i in index], device=device)
    b = len(index)
    z = torch.tensor(np.concatenate([[site.specie.Z for site in structures[i]] for i in index]),
                     device=device)
    x = torch.tensor(np.concatenate([structures[i].cart_coords for i in index]), **f64)
    cell = torch.tensor(np.stack([structures[i].lattice.matrix for i in index]), **f64)
    return _Batch(index=list(index), z=z, owner=torch.repeat_interleave(torch.arange(b, device=device), n),
                  n_atoms=n, x=x, u=torch.zeros((b, 3, 3), **f64), orig_cell=cell,
                  cell_free=torch.tensor([cells[i] for i in index], device=device),
                  v0=torch.linalg.det(cell).abs(), vel_x=torch.zeros_like(x),
                  vel_u=torch.zeros((b, 3, 3), **f64), dt=torch.full((b,), fire.dt, **f64),
                  a=torch.full((b,), fire.astart, **f64),
                  n_ok=torch.zeros(b, dtype=torch.long, device=device))


def _evaluate(model: Any, batch: _Batch, cell: Any, pos: Any,
              batch_size: int) -> tuple[Any, Any, Any, list[str | None]]:
    """CHGNet energy per atom (B,), forces (N, 3) eV/Å and stress (B, 3, 3) eV/Å³, float64.

    In forward passes of ``batch_size`` structures; a failed pass (e.g. out of memory) is
    repeated in halves, down to single structures, and a structure that still fails gets a reason
    (its energy NaN).
    """
    import torch

    from crysgen.evaluation.chgnet_batch import GPA_PER_EV_A3, forward_batch
    from crysgen.evaluation.periodic_graph import chgnet_batch_graph

    b = len(batch.index)
    device = cell.device
    energy = torch.full((b,), float("nan"), dtype=torch.float64, device=device)
    forces = torch.zeros_like(pos)
    stress = torch.zeros((b, 3, 3), dtype=torch.float64, device=device)
    reasons: list[str | None] = [None] * b
    frac = torch.linalg.solve(cell[batch.owner].transpose(1, 2), pos.unsqueeze(-1)).squeeze(-1)
    starts = torch.cumsum(batch.n_atoms, 0) - batch.n_atoms
    converter = model.graph_converter
    cut = (float(converter.atom_graph_cutoff), float(converter.bond_graph_cutoff))

    def run(lo: int, hi: int) -> None:
        a0 = int(starts[lo])
        a1 = int(starts[hi - 1] + batch.n_atoms[hi - 1])
        graph = chgnet_batch_graph(batch.z[a0:a1], frac[a0:a1], cell[lo:hi], batch.n_atoms[lo:hi],
                                   atom_cutoff=cut[0], bond_cutoff=cut[1])
        t = {k: v for k, v in graph.items() if k != "n_atoms"}
        e, f, s, _ = forward_batch(model, t, graph["n_atoms"])
        energy[lo:hi] = e.double()
        forces[a0:a1] = f.double()
        s = s.double() / GPA_PER_EV_A3
        stress[lo:hi] = (s + s.transpose(1, 2)) / 2  # ASE keeps the symmetric (Voigt) part

    def run_or_split(lo: int, hi: int) -> None:
        try:
            run(lo, hi)
        except Exception as exc:  # e.g. out of memory: free the failed pass, then each half
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if hi - lo == 1:
                reasons[lo] = f"relaxation failed: {type(exc).__name__}: {str(exc)[:150]}"
                return
            mid = (lo + hi) // 2
            run_or_split(lo, mid)
            run_or_split(mid, hi)

    for lo in range(0, b, batch_size):
        run_or_split(lo, min(b, lo + batch_size))
    return energy, forces, stress, reasons


def _generalised_forces(batch: _Batch, f: Any, cell: Any, forces: Any,
                        stress: Any) -> tuple[Any, Any]:
    """ASE FrechetCellFilter's forces: (N, 3) on the atoms and (B, 3, 3) on ``n · log F``."""
    import torch

    volume = torch.linalg.det(cell).abs()
    virial = -volume[:, None, None] * stress
    g = virial @ torch.linalg.inv(f.transpose(1, 2))
    n = batch.n_atoms.double()[:, None, None]
    g_u = expm_frechet_adjoint(batch.u / n, g) / n
    g_u = torch.where(batch.cell_free[:, None, None], g_u, torch.zeros_like(g_u))
    g_x = torch.einsum("ni,nij->nj", forces, f[batch.owner])  # forces @ F per atom
    return g_x, g_u


def _fire_step(batch: _Batch, g_x: Any, g_u: Any, fire: FireParameters) -> None:
    """One step of ASE's FIRE for every structure of the batch, in place.

    The caller drops the finished structures right after, so their update is never used.
    """
    import torch

    b = len(batch.index)
    own = batch.owner

    def per_structure(ax: Any, au: Any) -> Any:
        return _segment_sum(ax.sum(dim=1), own, b) + au.sum(dim=(1, 2))

    vf = per_structure(g_x * batch.vel_x, g_u * batch.vel_u)
    grad2 = per_structure(g_x * g_x, g_u * g_u)
    vel2 = per_structure(batch.vel_x * batch.vel_x, batch.vel_u * batch.vel_u)
    downhill = (vf > 0) & batch.started
    reset = ~downhill & batch.started
    mix = batch.a * torch.sqrt(vel2) / torch.sqrt(torch.where(downhill, grad2, torch.ones_like(grad2)))
    keep = torch.where(downhill, 1.0 - batch.a, torch.where(reset, 0.0, 1.0))
    add = torch.where(downhill, mix, torch.zeros_like(mix))
    vel_x = keep[own, None] * batch.vel_x + add[own, None] * g_x
    vel_u = keep[:, None, None] * batch.vel_u + add[:, None, None] * g_u
    grow = downhill & (batch.n_ok > fire.n_min)
    dt = torch.where(grow, torch.clamp(batch.dt * fire.finc, max=fire.dtmax), batch.dt)
    a = torch.where(grow, batch.a * fire.fa, batch.a)
    n_ok = torch.where(downhill, batch.n_ok + 1, batch.n_ok)
    dt = torch.where(reset, dt * fire.fdec, dt)
    a = torch.where(reset, torch.full_like(a, fire.astart), a)
    n_ok = torch.where(reset, torch.zeros_like(n_ok), n_ok)
    vel_x = vel_x + dt[own, None] * g_x
    vel_u = vel_u + dt[:, None, None] * g_u
    dr_x, dr_u = dt[own, None] * vel_x, dt[:, None, None] * vel_u
    norm = torch.sqrt(per_structure(dr_x * dr_x, dr_u * dr_u))
    scale = torch.where(norm > fire.maxstep, fire.maxstep / norm.clamp_min(1e-300), torch.ones_like(norm))
    batch.x = batch.x + scale[own, None] * dr_x
    batch.u = batch.u + scale[:, None, None] * dr_u
    batch.vel_x, batch.vel_u, batch.dt, batch.a, batch.n_ok = vel_x, vel_u, dt, a, n_ok
    batch.started = True


def relax_batch_torch(structures: list[Structure], options: RelaxOptions | None = None, *,
                      relax_cell: bool | Sequence[bool] = True,
                      on_done: Callable[[int, Relaxation], Any] | None = None,
                      progress: bool = False) -> list[Relaxation]:
    """Relax many structures with CHGNet, FIRE and the Fréchet cell filter as batched tensors.

    Same arguments, results and reasons as :func:`crysgen.evaluation.stability.relax_batch`
    (see the module docstring for what differs: nothing but float rounding); every unfinished
    structure is evaluated at every step, in CHGNet passes of
    :func:`~crysgen.evaluation.relaxation.pass_size` (512 unless ``options.batch_size`` says).

    Args:
        structures: the structures to relax (ordered).
        options: relaxation settings (``device`` is where everything runs).
        relax_cell: relax the cell too; one flag, or one per structure.
        on_done: called with a structure's index and result as soon as it is finished.
        progress: show a progress bar of finished structures.
    """
    import contextlib
    import io
    import warnings
    from functools import partial

    import torch
    from pymatgen.core import Lattice, Structure
    from tqdm.auto import tqdm

    from crysgen.errors import CrysgenError
    from crysgen.evaluation.relaxation import (
        Relaxation,
        RelaxOptions,
        degenerate_cell,
        displacement_rmsd,
        load_chgnet,
        pass_size,
    )

    o = options or RelaxOptions()
    fire = FireParameters()
    cells = [relax_cell] * len(structures) if isinstance(relax_cell, bool) else list(relax_cell)
    if len(cells) != len(structures):
        raise CrysgenError(f"relax_batch: {len(cells)} relax_cell flags for {len(structures)} structures")
    done: list[Relaxation | None] = [None] * len(structures)
    bar = tqdm(total=len(structures), desc="CHGNet relaxation (torch)", disable=not progress, leave=False)

    def finish(i: int, r: Relaxation) -> None:
        done[i] = r
        bar.update(1)
        if on_done is not None:
            on_done(i, r)

    todo = []
    for i, s in enumerate(structures):
        degenerate = degenerate_cell(s)
        if degenerate is None:
            todo.append(i)
        else:
            finish(i, degenerate)
    if not todo:
        bar.close()
        return [r for r in done if r is not None]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model = load_chgnet(o.device)
    batch = _start(structures, todo, cells, o.device, fire)
    b0 = len(todo)
    initial = [float("nan")] * b0   # by position in todo
    seconds = [0.0] * b0
    steps = [0] * b0
    slot = {i: k for k, i in enumerate(todo)}

    def result(i: int, energy: float, cell: Any, pos: Any, converged: bool,
               reason: str | None) -> None:
        """Finish structure ``i`` with its (3, 3) cell and (n, 3) positions (host arrays)."""
        k = slot[i]
        first = None if not np.isfinite(initial[k]) else initial[k]
        if reason is not None and not reason.startswith("time limit"):
            finish(i, Relaxation(first, None, None, steps[k], False, seconds[k], None, reason))
            return
        relaxed = Structure(Lattice(cell), structures[i].species, pos, coords_are_cartesian=True)
        finish(i, Relaxation(first, energy, displacement_rmsd(structures[i], relaxed), steps[k],
                             converged, seconds[k], relaxed, reason))

    with torch.no_grad():
        while len(batch.index):
            t0 = time.monotonic()
            f, cell, pos = batch.geometry()
            with torch.enable_grad():
                energy, forces, stress, failed = _evaluate(model, batch, cell, pos, pass_size(o))
            g_x, g_u = _generalised_forces(batch, f, cell, forces, stress)
            row_max = torch.zeros(len(batch.index), dtype=torch.float64, device=cell.device).scatter_reduce(
                0, batch.owner, g_x.norm(dim=1), reduce="amax")
            row_max = torch.maximum(row_max, g_u.norm(dim=2).amax(dim=1))
            ratio = torch.linalg.det(cell).abs() / batch.v0
            if cell.device.type == "cuda":
                torch.cuda.synchronize()
            share = (time.monotonic() - t0) / len(batch.index)
            e_host, fmax_host, ratio_host, cell_host, pos_host = (
                t.cpu().numpy() for t in (energy, row_max, ratio, cell, pos))
            bounds = np.cumsum([0, *batch.n_atoms.tolist()])
            move = np.zeros(len(batch.index), dtype=bool)
            for kb, i in enumerate(batch.index):
                k = slot[i]
                seconds[k] += share
                e = float(e_host[kb])
                end = partial(result, i, e, cell_host[kb], pos_host[bounds[kb]:bounds[kb + 1]])
                if failed[kb] is not None:
                    end(False, failed[kb])
                    continue
                if not np.isfinite(initial[k]):
                    initial[k] = e
                if not np.isfinite(e):
                    end(False, "exploded: energy is not finite")
                    continue
                r = float(ratio_host[kb])
                if not (1 / o.max_volume_ratio < r < o.max_volume_ratio):
                    end(False, f"exploded: volume changed {r:.3g}-fold")
                    continue
                if float(fmax_host[kb]) < o.fmax:
                    end(True, None)
                    continue
                if steps[k] >= o.steps:
                    end(False, None)
                    continue
                if seconds[k] > o.time_limit_s:
                    end(False, f"time limit {o.time_limit_s:g} s reached after {steps[k]} steps")
                    continue
                move[kb] = True
                steps[k] += 1
            if move.any():
                _fire_step(batch, g_x, g_u, fire)
            batch = batch.keep(torch.tensor(move, device=cell.device))
    bar.close()
    return [r for r in done if r is not None]
