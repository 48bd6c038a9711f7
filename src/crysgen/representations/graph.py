"""Crystal graphs for CGCNN (Xie & Grossman 2018), built the way the original code builds them.

Each atom is a node with the element's feature vector (``atom_init.json``: 92 binary entries per
element); each atom keeps its ``max_neighbors`` nearest periodic neighbours within ``radius`` Å,
sorted by distance (ties: by element, so the result does not depend on site order); an atom
with fewer neighbours pads with neighbour 0 at distance ``radius + 1`` Å (as cgcnn's
``CIFData`` does). Distances are expanded in Gaussians centred on
0, 0.2, ..., 8 Å (41 values, width = step). Neighbour search is pymatgen's vectorised
``get_neighbor_list``; there is no Python loop over pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    import torch
    from pymatgen.core import Structure


@dataclass(frozen=True)
class GraphOptions:
    """How a crystal graph is built (the pre-trained CGCNN models need the defaults).

    Attributes:
        radius: neighbour cut-off in Å.
        max_neighbors: neighbours kept per atom.
        dmin: first Gaussian centre in Å.
        step: spacing and width of the Gaussians in Å.
    """

    radius: float = 8.0
    max_neighbors: int = 12
    dmin: float = 0.0
    step: float = 0.2

    @property
    def centers(self) -> np.ndarray:
        """Gaussian centres in Å, (G,) = dmin .. radius inclusive (41 for the defaults)."""
        return np.arange(self.dmin, self.radius + self.step, self.step)


@dataclass
class CrystalGraph:
    """One crystal as CGCNN reads it.

    Attributes:
        atomic_numbers: int (n,).
        neighbor_index: int (n, M) indices of each atom's neighbours (0 where padded).
        neighbor_distance: float (n, M) distances in Å (radius + 1 where padded).
    """

    atomic_numbers: np.ndarray
    neighbor_index: np.ndarray
    neighbor_distance: np.ndarray


def build_graph(structure: Structure, options: GraphOptions | None = None) -> CrystalGraph:
    """Crystal graph of a pymatgen ``Structure`` (periodic; no loop over pairs).

    Raises:
        CrysgenError: for an empty or disordered structure.
    """
    options = options or GraphOptions()
    n = len(structure)
    if n == 0:
        raise CrysgenError("empty structure")
    if not structure.is_ordered:
        raise CrysgenError("disordered structure (partial occupancies): a crystal graph needs one "
                           "element per site")
    center, neighbor, _, dist = structure.get_neighbor_list(options.radius)
    m = options.max_neighbors
    z = np.array([site.specie.Z for site in structure], dtype=np.int64)
    # sort by (center, distance, neighbour's element, neighbour index): where the 12th neighbour
    # ties with others of another element (SrTiO3's O sees 4 Sr and 8 O at a/sqrt(2)), the kept
    # elements no longer depend on site order or on round-off from the orientation, as they do
    # with cgcnn's distance-only sort
    order = np.lexsort((neighbor, z[neighbor], np.round(dist, 6), center))
    center, neighbor, dist = center[order], neighbor[order], dist[order]
    counts = np.bincount(center, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(center)) - np.repeat(starts, counts)
    keep = rank < m
    idx = np.zeros((n, m), dtype=np.int64)
    d = np.full((n, m), options.radius + 1.0)
    idx[center[keep], rank[keep]] = neighbor[keep]
    d[center[keep], rank[keep]] = dist[keep]
    return CrystalGraph(z, idx, d)


def gaussian_expand(distance: np.ndarray | torch.Tensor, options: GraphOptions | None = None):
    """Gaussian expansion of distances: (..., ) Å -> (..., G), exp(-(d - c)² / step²)."""
    import torch

    options = options or GraphOptions()
    centers = torch.as_tensor(options.centers, dtype=torch.float32)
    d = torch.as_tensor(distance, dtype=torch.float32)
    return torch.exp(-((d[..., None] - centers.to(d.device)) ** 2) / options.step**2)


def load_atom_features(path: str | Path) -> np.ndarray:
    """CGCNN element features from an ``atom_init.json``: float32 (101, F), row Z (row 0 zeros).

    Raises:
        CrysgenError: if the file is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise CrysgenError(f"no atom feature file {path}")
    try:
        table = {int(k): np.asarray(v, dtype=np.float32) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, TypeError) as exc:
        raise CrysgenError(f"{path} is not a CGCNN atom_init.json: {exc}") from exc
    width = len(next(iter(table.values())))
    out = np.zeros((max(table) + 1, width), dtype=np.float32)
    for z, v in table.items():
        out[z] = v
    return out


@dataclass
class GraphBatch:
    """Several crystal graphs concatenated for one forward pass.

    Attributes:
        atomic_numbers: (A,) over all atoms of the batch.
        neighbor_index: (A, M), indices into the batch's atoms.
        neighbor_distance: (A, M) in Å.
        crystal_index: (A,) which crystal each atom belongs to.
        num_crystals: crystals in the batch.
    """

    atomic_numbers: torch.Tensor
    neighbor_index: torch.Tensor
    neighbor_distance: torch.Tensor
    crystal_index: torch.Tensor
    num_crystals: int

    def to(self, device: str | torch.device) -> GraphBatch:
        """The same batch on ``device``."""
        return GraphBatch(self.atomic_numbers.to(device), self.neighbor_index.to(device),
                          self.neighbor_distance.to(device), self.crystal_index.to(device),
                          self.num_crystals)


def collate(graphs: list[CrystalGraph]) -> GraphBatch:
    """Concatenate graphs, shifting each one's neighbour indices by the atoms before it."""
    import torch

    sizes = np.array([len(g.atomic_numbers) for g in graphs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return GraphBatch(
        atomic_numbers=torch.from_numpy(np.concatenate([g.atomic_numbers for g in graphs])),
        neighbor_index=torch.from_numpy(np.concatenate(
            [g.neighbor_index + o for g, o in zip(graphs, offsets, strict=True)])),
        neighbor_distance=torch.from_numpy(np.concatenate(
            [g.neighbor_distance for g in graphs]).astype(np.float32)),
        crystal_index=torch.from_numpy(np.repeat(np.arange(len(graphs)), sizes)),
        num_crystals=len(graphs),
    )
