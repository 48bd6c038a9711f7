"""CHGNet energies, forces and stresses of many crystals with a constant number of GPU kernels.

CHGNet's own batching (``BatchedGraph.from_graphs`` and ``CHGNet.predict_graph``) loops over the
crystals of a batch in Python: per crystal it moves ten tensors to the device, builds the strained
lattice, the Cartesian coordinates, the bond and angle bases, reads the volume back to the host,
and after the forward pass copies energy, forces and stress back one crystal at a time. On a GPU
these hundreds of tiny kernels and synchronisations per crystal — and as many in the backward
pass that gives forces and stress — are the relaxation's cost, not the network: 7–9 ms of
model time per crystal and step on the H100 at batches of 16, 64 and 600
(``benchmarks/results/relax_speed.json``, ``benchmarks/results/profiles/``), 1.0–1.2 ms here.

:func:`predict_efs` does the same computation with whole-batch tensors: the graphs' index arrays
are concatenated (with their offsets) on the host and moved once, the lattices are strained and
applied per atom and per bond by indexing a ``(B, 3, 3)`` stack, CHGNet's own bond and angle
encoders and message-passing layers (``CHGNet._compute``) run once on the batch, and forces and
stress come from one ``torch.autograd.grad`` (without ``create_graph``: nothing differentiates
them further). The numbers are CHGNet's to float32 rounding (``tests/evaluation/test_chgnet_batch.py``
compares them with ``CHGNet.predict_graph``).

Before either, every crystal becomes a CHGNet ``CrystalGraph`` (neighbour lists within 6 Å and
the angle graph within 3 Å): about 3.6–5.4 ms per mp_20 crystal on one CPU core, 90 s for the
24.5k train + test crystals of a cold stability run. CHGNet offers no batched featurisation
(``CHGNet.predict_structure`` converts one structure after another; its training data sets
convert in DataLoader workers), so :func:`build_graphs` converts in worker processes with the
same converter settings and hands the graphs back as numpy arrays, rebuilt here into identical
``CrystalGraph`` objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pymatgen.core import Structure

    from crysgen.crystal_set import CrystalSet

FORWARD_BATCH = 64
"""Crystals per CHGNet forward pass unless told otherwise: the default of every batch size of the
relaxation and of static energies (``RelaxOptions.batch_size``, ``crysgen evaluate --relax-batch``);
it bounds GPU memory (about 1.6 GB on the H100 for 64 of the diffusion model's 22-atom samples,
``benchmarks/results/relax_speed.json``)."""

GPA_PER_EV_A3 = 160.21766208
"""Stress unit conversion, as CHGNet: eV/Å³ → GPa."""


GRAPH_TENSORS = ("atomic_number", "atom_frac_coord", "atom_graph", "neighbor_image",
                 "directed2undirected", "undirected2directed", "bond_graph", "lattice")
"""The tensors of a CHGNet ``CrystalGraph`` (its cut-offs and ids are not tensors)."""
GRAPH_CHUNK_MAX = 32
"""Crystals per task at most when graphs are built in workers (about 0.1–0.2 s of work)."""

CrystalRow = tuple[list[int], np.ndarray, np.ndarray]
"""One crystal of a CrystalSet as (atomic numbers, (n, 3) fractional coordinates, (6,) lattice
parameters in Å and degrees): pickled to a worker instead of a pymatgen Structure."""
ConverterSettings = tuple[float, float, str, str]
"""A CHGNet graph converter's (atom graph cut-off Å, bond graph cut-off Å, algorithm,
isolated-atom response)."""
_CONVERTERS: dict[ConverterSettings, Any] = {}


def crystal_rows(crystals: CrystalSet, index: Sequence[int] | None = None) -> list[CrystalRow]:
    """The crystals ``index`` (default all) of a set as :data:`CrystalRow` tuples."""
    idx = range(len(crystals)) if index is None else index
    return [(crystals.atomic_numbers[i, : int(crystals.num_sites[i])].tolist(),
             crystals.frac_coords[i, : int(crystals.num_sites[i])], crystals.lattice[i]) for i in idx]


def _structure(item: Structure | CrystalRow) -> Structure:
    """A pymatgen Structure as ``CrystalSet.to_structure`` makes it (or the structure given)."""
    if not isinstance(item, tuple):
        return item
    from pymatgen.core import Lattice, Structure

    numbers, frac, lattice = item
    # pymatgen takes atomic numbers as species, though its annotation lists only symbols and objects
    return Structure(Lattice.from_parameters(*lattice), numbers, frac)  # type: ignore[arg-type]


def converter_settings(converter: Any) -> ConverterSettings:
    """The settings that make a ``CrystalGraphConverter`` (a model's ``graph_converter``)."""
    return (float(converter.atom_graph_cutoff), float(converter.bond_graph_cutoff),
            str(converter.algorithm), str(converter.on_isolated_atoms))


def _converter(settings: ConverterSettings) -> Any:
    """A ``CrystalGraphConverter`` with these settings, made once per process."""
    if settings not in _CONVERTERS:
        from chgnet.graph import CrystalGraphConverter

        atom_cut, bond_cut, algorithm, isolated = settings
        _CONVERTERS[settings] = CrystalGraphConverter(atom_graph_cutoff=atom_cut,
                                                      bond_graph_cutoff=bond_cut,
                                                      algorithm=algorithm,  # type: ignore[arg-type]
                                                      on_isolated_atoms=isolated)  # type: ignore[arg-type]
    return _CONVERTERS[settings]


def graph_arrays(item: Structure | CrystalRow, settings: ConverterSettings) -> dict[str, np.ndarray] | str:
    """One crystal's CHGNet graph as numpy arrays (:data:`GRAPH_TENSORS`), or why it failed.

    Runs in worker processes: numpy arrays pickle as plain bytes, where torch tensors would go
    through shared-memory file handles (tens of thousands of them for a data set).
    """
    try:
        graph = _converter(settings)(_structure(item))
        return {k: getattr(graph, k).detach().numpy() for k in GRAPH_TENSORS}
    except Exception as exc:  # e.g. isolated atoms: this crystal has no graph
        return f"{type(exc).__name__}: {str(exc)[:150]}"


def _graph_from_arrays(arrays: dict[str, np.ndarray], settings: ConverterSettings) -> Any:
    """The ``CrystalGraph`` that :func:`graph_arrays` took apart."""
    import torch
    from chgnet.graph import CrystalGraph

    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    t["atom_frac_coord"].requires_grad_(True)  # as the converter makes them
    t["lattice"].requires_grad_(True)
    return CrystalGraph(atomic_number=t["atomic_number"], atom_frac_coord=t["atom_frac_coord"],
                        atom_graph=t["atom_graph"], neighbor_image=t["neighbor_image"],
                        directed2undirected=t["directed2undirected"],
                        undirected2directed=t["undirected2directed"], bond_graph=t["bond_graph"],
                        lattice=t["lattice"], atom_graph_cutoff=settings[0], bond_graph_cutoff=settings[1])


def build_graphs(items: Sequence[Structure | CrystalRow], converter: Any, *, workers: int = 1,
                 progress: bool = False) -> list[Any | None]:
    """CHGNet graphs of many crystals, in ``workers`` processes; None where one failed.

    With one worker ``converter`` converts each crystal here, as CHGNet does. With more, worker
    processes (:func:`crysgen.data.parallel.robust_map`, one thread each) build the graphs with
    a converter of the same settings (:func:`converter_settings`, read now, so a response to
    isolated atoms set on the model's converter holds there too), in chunks of at most
    :data:`GRAPH_CHUNK_MAX`, and the graphs come back in input order, equal tensor for tensor.

    Args:
        items: pymatgen structures or :data:`CrystalRow` tuples.
        converter: the model's ``graph_converter``.
        workers: processes.
        progress: show a progress bar (only when workers build the graphs).

    Returns:
        One ``CrystalGraph`` per item, None where the conversion failed (or its worker died).
    """
    from functools import partial

    if workers <= 1 or len(items) < 2:
        out: list[Any | None] = []
        for item in items:
            try:
                out.append(converter(_structure(item)))
            except Exception:  # e.g. isolated atoms: no graph
                out.append(None)
        return out
    from tqdm.auto import tqdm

    from crysgen.data.parallel import died_with_reason, robust_map

    settings = converter_settings(converter)
    chunk = max(1, min(GRAPH_CHUNK_MAX, len(items) // (workers * 4)))
    with tqdm(total=len(items), desc="CHGNet graphs", disable=not progress, leave=False) as bar:
        done = robust_map(partial(graph_arrays, settings=settings), list(items),
                          workers=min(workers, len(items)),
                          died=died_with_reason, chunksize=chunk, on_done=bar.update)
    return [None if isinstance(d, str) else _graph_from_arrays(d, settings) for d in done]


def _offsets(sizes: list[int]) -> list[int]:
    """Exclusive prefix sums: where each graph's rows start in the concatenation."""
    return [0, *np.cumsum(sizes)[:-1].tolist()] if sizes else []


def _host_batch(graphs: Sequence[Any]) -> dict[str, Any]:
    """The graphs' arrays concatenated on the host, with indices shifted into the batch.

    Returns:
        dict of CPU tensors: ``z`` (N,) atomic numbers, ``frac`` (N, 3), ``lattice`` (B, 3, 3) Å,
        ``owner`` (N,) crystal of each atom, ``atom_graph`` (E, 2) and ``image`` (E, 3) of the
        directed bonds, ``bond_owner`` (E,), ``u2d`` (U,) and ``d2u`` (E,) between directed and
        undirected bonds, ``bond_graph`` (K, 5) of the angles (atom, undirected, directed,
        undirected, directed), and ``n_atoms`` (B,) as a list.
    """
    import torch

    n_atoms = [int(g.atomic_number.shape[0]) for g in graphs]
    atom_graphs = [g.atom_graph.reshape(-1, 2) for g in graphs]
    n_directed = [int(a.shape[0]) for a in atom_graphs]
    n_undirected = [int(g.undirected2directed.shape[0]) for g in graphs]
    atom_off, dir_off, und_off = _offsets(n_atoms), _offsets(n_directed), _offsets(n_undirected)
    bond_graphs = []
    for g, a, d, u in zip(graphs, atom_off, dir_off, und_off, strict=True):
        bg = g.bond_graph.reshape(-1, 5)
        if len(bg):
            bond_graphs.append(bg + bg.new_tensor([a, u, d, u, d]))
    owner = torch.repeat_interleave(torch.arange(len(graphs)), torch.tensor(n_atoms))
    atom_graph = torch.cat([ag + a for ag, a in zip(atom_graphs, atom_off, strict=True)])
    return {
        "z": torch.cat([g.atomic_number for g in graphs]),
        "frac": torch.cat([g.atom_frac_coord for g in graphs]),
        "lattice": torch.stack([g.lattice for g in graphs]),
        "owner": owner,
        "atom_graph": atom_graph,
        "image": torch.cat([g.neighbor_image.reshape(-1, 3) for g in graphs]),
        "bond_owner": owner[atom_graph[:, 0].long()],
        "u2d": torch.cat([g.undirected2directed + d for g, d in zip(graphs, dir_off, strict=True)]),
        "d2u": torch.cat([g.directed2undirected + u for g, u in zip(graphs, und_off, strict=True)]),
        "bond_graph": (torch.cat(bond_graphs) if bond_graphs
                       else torch.zeros((0, 5), dtype=atom_graph.dtype)),
        "n_atoms": n_atoms,
    }


def _forward(model: Any, graphs: Sequence[Any], device: str,
             forces: bool = True) -> tuple[Any, Any, Any, list[int]]:
    """Energy per atom (B,), forces (N, 3) in eV/Å and stress (B, 3, 3) in GPa of one batch.

    With ``forces=False`` only the energy: no gradient pass (forces and stress are None).
    """
    h = _host_batch(graphs)
    t = {k: v.to(device, non_blocking=True) for k, v in h.items() if k != "n_atoms"}
    return forward_batch(model, t, h["n_atoms"], forces)


def forward_batch(model: Any, t: dict[str, Any], n_atoms: list[int],
                  forces: bool = True) -> tuple[Any, Any, Any, list[int]]:
    """CHGNet on one batched graph whose tensors are on the model's device.

    Args:
        model: a loaded ``chgnet.model.CHGNet``.
        t: the tensors of :func:`_host_batch` (or of
            :func:`crysgen.evaluation.periodic_graph.chgnet_batch_graph`), ``n_atoms`` aside.
        n_atoms: atoms per crystal.
        forces: also forces and stress (one gradient pass).

    Returns:
        energy per atom (B,), forces (N, 3) eV/Å, stress (B, 3, 3) GPa (None, None without
        ``forces``), and ``n_atoms``.
    """
    import torch
    from chgnet.model.model import BatchedGraph

    device = t["lattice"].device
    n_batch = len(n_atoms)
    with torch.enable_grad() if forces else torch.no_grad():
        strain = torch.zeros((n_batch, 3, 3), device=device, requires_grad=forces)
        lattice = t["lattice"] @ (torch.eye(3, device=device) + strain)
        volume = torch.linalg.det(lattice).abs()
        cart = torch.einsum("ni,nij->nj", t["frac"], lattice[t["owner"]])
        ag = t["atom_graph"].long()
        neighbor = cart[ag[:, 1]] + torch.einsum("ei,eij->ej", t["image"], lattice[t["bond_owner"]])
        # the image shift is applied above with each bond's own lattice; CHGNet's encoder then
        # adds zero @ identity and expands the lengths exactly as in from_graphs
        bond_ag, bond_bg, bond_vectors = model.bond_basis_expansion(
            center=cart[ag[:, 0]], neighbor=neighbor, undirected2directed=t["u2d"],
            image=torch.zeros_like(t["image"]), lattice=torch.eye(3, device=device))
        bg = t["bond_graph"]
        if len(bg):
            angle_bases = model.angle_basis_expansion(bond_vectors[bg[:, 2].long()],
                                                      bond_vectors[bg[:, 4].long()])
            batched_bond_graph = bg[:, [0, 1, 3]]
        else:
            angle_bases, batched_bond_graph = torch.tensor([]), torch.tensor([])
        batch = BatchedGraph(
            atomic_numbers=t["z"], bond_bases_ag=bond_ag, bond_bases_bg=bond_bg,
            angle_bases=angle_bases, batched_atom_graph=t["atom_graph"],
            batched_bond_graph=batched_bond_graph, atom_owners=t["owner"].to(torch.int32),
            directed2undirected=t["d2u"], atom_positions=[cart], strains=[strain], volumes=volume)
        energy = model._compute(batch)["e"]  # eV/atom when the model is intensive
        n = torch.tensor(n_atoms, device=device, dtype=energy.dtype)
        if forces:
            total = energy * n if model.is_intensive else energy
            grad_pos, grad_strain = torch.autograd.grad(total.sum(), [cart, strain])
    if model.composition_model is not None:
        comp = torch.zeros((n_batch, model.composition_model.max_num_elements), device=device)
        comp.index_put_((t["owner"], t["z"].long() - 1), torch.ones_like(t["frac"][:, 0]),
                        accumulate=True)
        if model.composition_model.is_intensive:
            comp = comp / n[:, None]
        with torch.no_grad():
            energy = energy.detach() + model.composition_model._get_energy(comp)
    if not model.is_intensive:
        energy = energy / n
    if not forces:
        return energy.detach(), None, None, n_atoms
    stress = grad_strain / volume[:, None, None] * GPA_PER_EV_A3
    return energy.detach(), -grad_pos, stress.detach(), n_atoms


def predict_efs(model: Any, graphs: Sequence[Any], device: str = "cpu",
                batch_size: int = FORWARD_BATCH) -> list[dict[str, np.ndarray]]:
    """CHGNet's ``predict_graph(graphs, task="efs")`` computed batch-wise (see module docstring).

    Args:
        model: a loaded ``chgnet.model.CHGNet`` on ``device``.
        graphs: CHGNet ``CrystalGraph`` objects (on the host).
        device: where the model is.
        batch_size: crystals per forward pass.

    Returns:
        one dict per graph, like CHGNet's: ``e`` energy (eV/atom, 0-d array), ``f`` forces
        (n_atoms, 3) eV/Å, ``s`` stress (3, 3) GPa.
    """
    out: list[dict[str, np.ndarray]] = []
    for start in range(0, len(graphs), batch_size):
        energy, forces, stress, n_atoms = _forward(model, graphs[start:start + batch_size], device)
        e, f, s = (x.cpu().numpy() for x in (energy, forces, stress))
        for k, part in enumerate(np.split(f, np.cumsum(n_atoms)[:-1])):
            out.append({"e": e[k], "f": part, "s": s[k]})
    return out


def predict_energies(model: Any, graphs: Sequence[Any], device: str = "cpu",
                     batch_size: int = FORWARD_BATCH) -> np.ndarray:
    """CHGNet's energy per atom (eV/atom) of each graph, batch-wise, without forces or stress.

    The static energies of reference crystals need no gradient: the same whole-batch forward as
    :func:`predict_efs` without the backward pass. Equal to ``CHGNet.predict_graph(task="e")``
    to float32 rounding (``tests/evaluation/test_chgnet_batch.py``).

    Args:
        model: a loaded ``chgnet.model.CHGNet`` on ``device``.
        graphs: CHGNet ``CrystalGraph`` objects (on the host).
        device: where the model is.
        batch_size: crystals per forward pass.

    Returns:
        (len(graphs),) float64 energies per atom.
    """
    out = np.zeros(len(graphs))
    for start in range(0, len(graphs), batch_size):
        energy, _, _, _ = _forward(model, graphs[start:start + batch_size], device, forces=False)
        out[start:start + len(energy)] = energy.cpu().numpy()
    return out
