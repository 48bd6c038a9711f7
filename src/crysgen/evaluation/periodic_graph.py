"""CHGNet's crystal graphs of many crystals at once, built with tensor operations on the device.

CHGNet's ``CrystalGraphConverter`` takes one pymatgen ``Structure`` at a time on the CPU
(pymatgen's neighbour search, then its C graph code): 4–10 ms per mp_20 crystal, and a relaxation
needs a new graph after every step. :func:`chgnet_batch_graph` builds the same graph for a whole
batch from tensors, where they already are (on the GPU during a relaxation):

* **atom graph**: every directed pair (i, j, image) of one crystal with
  ``1e-8 < |r_j + image·L - r_i| <= atom_cutoff`` — the pairs of pymatgen's
  ``Structure.get_neighbor_list(r=atom_cutoff, numerical_tol=1e-8)`` that CHGNet's converter keeps;
* **undirected bonds**: (i, j, image) and (j, i, -image) are one bond (``directed2undirected``,
  and ``undirected2directed`` naming one of its two directed bonds);
* **bond graph** (angles): every ordered pair of distinct directed bonds that leave the same atom
  and are both shorter than ``bond_cutoff``, as rows (atom, undirected 1, directed 1,
  undirected 2, directed 2) — CHGNet's ``line_graph_adjacency_list``.

Only the order of the bonds differs from CHGNet's converter, so CHGNet's energies, forces and
stresses agree to float32 summation noise (``tests/evaluation/test_periodic_graph.py``). The
neighbour search is brute force over the periodic images each crystal needs (a few hundred for
mp_20-sized cells), in chunks of crystals that bound the number of candidate pairs.
"""

from __future__ import annotations

from typing import Any

MAX_CANDIDATES = 1 << 24
"""Candidate pairs (atom pairs × images) examined at once; bounds memory (a few hundred MB)."""
NUMERICAL_TOL = 1e-8
"""Å: pairs closer than this are an atom and itself (pymatgen's ``numerical_tol``)."""


def image_ranges(lattice: Any, cutoff: float) -> Any:
    """Periodic images to search along each lattice vector, for wrapped fractional coordinates.

    Args:
        lattice: (B, 3, 3) lattice vectors as rows (Å).
        cutoff: neighbour distance (Å).

    Returns:
        (B, 3) int64 ``n``: images -n..n along each axis hold every neighbour within ``cutoff``
        of atoms whose fractional coordinates lie in [0, 1). A fractional component of a vector v
        is ``v · inv(L)[:, k]``, at most ``|v| · |inv(L)[:, k]|``; the wrapped difference adds 1.
    """
    import torch

    recip = torch.linalg.inv(lattice.double())  # (B, 3, 3); its column k maps a vector to frac k
    return torch.ceil(cutoff * recip.norm(dim=1)).long() + 1


def _candidate_pairs(n_atoms: Any, dims: Any) -> tuple[Any, Any, Any, Any]:
    """Every (crystal, i, j, image) of a few crystals, as flat index tensors.

    Args:
        n_atoms: (C,) atoms per crystal.
        dims: (C, 3) images -n..n per axis (:func:`image_ranges`).

    Returns:
        crystal (P,), local i (P,), local j (P,), image (P, 3) int64.
    """
    import torch

    side = 2 * dims + 1
    m = side.prod(dim=1)
    per = n_atoms * n_atoms * m
    crystal = torch.repeat_interleave(torch.arange(len(n_atoms), device=n_atoms.device), per)
    start = torch.cumsum(per, 0) - per
    local = torch.arange(int(per.sum()), device=n_atoms.device) - start[crystal]
    mc, nc, sc, dc = m[crystal], n_atoms[crystal], side[crystal], dims[crystal]
    img, pair = local % mc, local // mc
    i, j = pair // nc, pair % nc
    a = img // (sc[:, 1] * sc[:, 2])
    b = (img // sc[:, 2]) % sc[:, 1]
    c = img % sc[:, 2]
    image = torch.stack([a, b, c], dim=1) - dc
    return crystal, i, j, image


def neighbor_pairs(frac: Any, lattice: Any, n_atoms: Any, cutoff: float,
                   max_candidates: int = MAX_CANDIDATES) -> tuple[Any, Any, Any, Any]:
    """All directed neighbour pairs within ``cutoff`` of every crystal of a batch.

    Args:
        frac: (N, 3) fractional coordinates of all crystals' atoms, crystal after crystal (any
            values: they are wrapped here and the images refer to the coordinates as given).
        lattice: (B, 3, 3) lattice vectors as rows (Å).
        n_atoms: (B,) int64 atoms per crystal.
        cutoff: Å (pairs at exactly ``cutoff`` included, as pymatgen).
        max_candidates: candidate pairs per chunk of crystals (a crystal needing more is done alone).

    Returns:
        center (E,), neighbor (E,) int64 global atom indices, image (E, 3) int64 (the neighbour
        sits at ``frac[neighbor] + image``), distance (E,) float64 Å; crystal by crystal.
    """
    import torch

    device = frac.device
    frac64 = frac.double()
    shift = torch.floor(frac64)
    wrapped = frac64 - shift
    lat64 = lattice.double()
    dims = image_ranges(lat64, cutoff)
    offsets = torch.cumsum(n_atoms, 0) - n_atoms
    cost = (n_atoms * n_atoms * (2 * dims + 1).prod(dim=1)).tolist()
    parts: list[tuple[Any, Any, Any, Any]] = []
    lo = 0
    while lo < len(cost):
        hi, total = lo + 1, cost[lo]
        while hi < len(cost) and total + cost[hi] <= max_candidates:
            total += cost[hi]
            hi += 1
        crystal, i, j, image = _candidate_pairs(n_atoms[lo:hi], dims[lo:hi])
        crystal = crystal + lo
        gi, gj = offsets[crystal] + i, offsets[crystal] + j
        vec = torch.einsum("pi,pij->pj", wrapped[gj] - wrapped[gi] + image.double(), lat64[crystal])
        dist = vec.norm(dim=1)
        keep = (dist <= cutoff) & (dist > NUMERICAL_TOL)
        gi, gj, image, dist = gi[keep], gj[keep], image[keep], dist[keep]
        image = image + (shift[gi] - shift[gj]).long()  # back to the coordinates as given
        parts.append((gi, gj, image, dist))
        lo = hi
    if not parts:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, torch.zeros((0, 3), dtype=torch.long, device=device), empty.double()
    return tuple(torch.cat([p[k] for p in parts]) for k in range(4))  # type: ignore[return-value]


def undirected_bonds(center: Any, neighbor: Any, image: Any) -> tuple[Any, Any]:
    """Pair each directed bond (i, j, image) with its reverse (j, i, -image).

    Returns:
        directed2undirected (E,) and undirected2directed (U,) int64: the undirected bond of each
        directed bond, and the first directed bond (lowest index) of each undirected bond.

    Raises:
        ValueError: when a directed bond has no reverse (the pair list is not symmetric).
    """
    import torch

    if len(center) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=center.device)
        return empty, empty
    r = int(image.abs().max())
    side = 2 * r + 1
    code = ((image[:, 0] + r) * side + image[:, 1] + r) * side + image[:, 2] + r
    mirror = side ** 3 - 1 - code  # the code of -image
    n = int(torch.maximum(center.max(), neighbor.max())) + 1
    forward = (center < neighbor) | ((center == neighbor) & (code > mirror))
    a = torch.where(forward, center, neighbor)
    b = torch.where(forward, neighbor, center)
    key = (a * n + b) * side ** 3 + torch.where(forward, code, mirror)
    _, d2u, counts = torch.unique(key, return_inverse=True, return_counts=True)
    if bool((counts != 2).any()):
        raise ValueError("neighbour list is not symmetric: a directed bond has no reverse")
    index = torch.arange(len(center), device=center.device)
    u2d = torch.full((len(counts),), len(center), dtype=torch.long, device=center.device)
    u2d = u2d.scatter_reduce(0, d2u, index, reduce="amin")
    return d2u, u2d


def angle_pairs(center: Any, distance: Any, d2u: Any, bond_cutoff: float) -> Any:
    """CHGNet's bond graph: ordered pairs of distinct short bonds leaving the same atom.

    Args:
        center: (E,) atom each directed bond leaves.
        distance: (E,) bond lengths (Å).
        d2u: (E,) undirected bond of each directed bond.
        bond_cutoff: bonds at least this long take part in no angle (Å).

    Returns:
        (K, 5) int64 rows (atom, undirected 1, directed 1, undirected 2, directed 2).
    """
    import torch

    short = torch.nonzero(distance < bond_cutoff).flatten()
    if len(short) == 0:
        return torch.zeros((0, 5), dtype=torch.long, device=center.device)
    order = torch.argsort(center[short], stable=True)
    bonds = short[order]
    atoms = center[bonds]
    _, per_atom = torch.unique_consecutive(atoms, return_counts=True)
    start = torch.repeat_interleave(torch.cumsum(per_atom, 0) - per_atom, per_atom)  # (S,)
    count = torch.repeat_interleave(per_atom, per_atom)
    rank = torch.arange(len(bonds), device=center.device) - start
    first = torch.repeat_interleave(torch.arange(len(bonds), device=center.device), count)
    q = torch.arange(int(count.sum()), device=center.device) - torch.repeat_interleave(
        torch.cumsum(count, 0) - count, count)
    second = start[first] + q
    keep = q != rank[first]
    e1, e2 = bonds[first[keep]], bonds[second[keep]]
    return torch.stack([center[e1], d2u[e1], e1, d2u[e2], e2], dim=1)


def chgnet_batch_graph(z: Any, frac: Any, lattice: Any, n_atoms: Any, *, atom_cutoff: float = 6.0,
                       bond_cutoff: float = 3.0) -> dict[str, Any]:
    """The batched CHGNet graph of many crystals, in the layout of ``chgnet_batch._host_batch``.

    Args:
        z: (N,) atomic numbers, crystal after crystal.
        frac: (N, 3) fractional coordinates.
        lattice: (B, 3, 3) lattice vectors as rows (Å).
        n_atoms: (B,) int64 atoms per crystal (on the same device).
        atom_cutoff: atom graph cut-off (Å), CHGNet's 6.
        bond_cutoff: bond graph cut-off (Å), CHGNet's 3.

    Returns:
        dict of tensors on the inputs' device: ``z`` (N,) int32, ``frac`` (N, 3) and ``lattice``
        (B, 3, 3) float32, ``owner`` (N,), ``atom_graph`` (E, 2) int32, ``image`` (E, 3) float32,
        ``bond_owner`` (E,), ``u2d`` (U,) and ``d2u`` (E,) int32, ``bond_graph`` (K, 5) int32,
        and ``n_atoms`` as a list.
    """
    import torch

    center, neighbor, image, distance = neighbor_pairs(frac, lattice, n_atoms, atom_cutoff)
    d2u, u2d = undirected_bonds(center, neighbor, image)
    bond_graph = angle_pairs(center, distance, d2u, bond_cutoff)
    owner = torch.repeat_interleave(torch.arange(len(n_atoms), device=frac.device), n_atoms)
    i32 = torch.int32
    return {
        "z": z.to(i32),
        "frac": frac.float(),
        "lattice": lattice.float(),
        "owner": owner,
        "atom_graph": torch.stack([center, neighbor], dim=1).to(i32),
        "image": image.float(),
        "bond_owner": owner[center],
        "u2d": u2d.to(i32),
        "d2u": d2u.to(i32),
        "bond_graph": bond_graph.to(i32),
        "n_atoms": n_atoms.tolist(),
    }
