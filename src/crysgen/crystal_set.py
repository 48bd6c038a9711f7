"""CrystalSet: the padded-array hand-off format between every crysgen stage.

A CrystalSet holds N ordered crystals with at most S sites each as plain numpy arrays, so that
representations can be computed on whole batches without Python loops, and so that a prepared
dataset is a small ``.npz`` file any user can open with ``numpy.load``.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    from pymatgen.core import Structure

_PROPERTY_PREFIX = "property:"
_ARRAY_FIELDS = ("atomic_numbers", "frac_coords", "lattice", "space_group", "num_sites", "ids")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class CrystalSet:
    """N crystals as padded arrays.

    Attributes:
        atomic_numbers: int16 (N, S); 0 marks an empty slot. Sites occupy slots 0..num_sites-1.
        frac_coords: float64 (N, S, 3), fractional coordinates in [0, 1); 0 in empty slots.
        lattice: float64 (N, 6): a, b, c in Å and alpha, beta, gamma in degrees.
        space_group: int16 (N,), international number 1-230 (0 = unknown).
        num_sites: int16 (N,).
        ids: str (N,).
        properties: name -> float64 (N,), NaN where unknown.
        metadata: small JSON-serialisable dict (source, cell convention, version, ...).
    """

    atomic_numbers: np.ndarray
    frac_coords: np.ndarray
    lattice: np.ndarray
    space_group: np.ndarray
    num_sites: np.ndarray
    ids: np.ndarray
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int16)
        self.frac_coords = np.asarray(self.frac_coords, dtype=np.float64)
        self.lattice = np.asarray(self.lattice, dtype=np.float64)
        self.space_group = np.asarray(self.space_group, dtype=np.int16)
        self.num_sites = np.asarray(self.num_sites, dtype=np.int16)
        self.ids = np.asarray(self.ids, dtype=str)
        self.properties = {k: np.asarray(v, dtype=np.float64) for k, v in self.properties.items()}
        n, s = self.atomic_numbers.shape if self.atomic_numbers.ndim == 2 else (-1, -1)
        checks = {
            "atomic_numbers": self.atomic_numbers.ndim == 2,
            "frac_coords": self.frac_coords.shape == (n, s, 3),
            "lattice": self.lattice.shape == (n, 6),
            "space_group": self.space_group.shape == (n,),
            "num_sites": self.num_sites.shape == (n,),
            "ids": self.ids.shape == (n,),
        }
        checks.update({f"properties[{k}]": v.shape == (n,) for k, v in self.properties.items()})
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise CrysgenError(f"CrystalSet arrays have inconsistent shapes: {', '.join(bad)}")

    # ------------------------------------------------------------------ basic access
    def __len__(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def max_sites(self) -> int:
        """S, the padded number of site slots."""
        return int(self.atomic_numbers.shape[1])

    @property
    def site_mask(self) -> np.ndarray:
        """Bool (N, S): True where a slot holds a site."""
        return np.arange(self.max_sites)[None, :] < self.num_sites[:, None]

    def subset(self, index: np.ndarray | Sequence[int] | slice) -> CrystalSet:
        """Return the crystals selected by ``index`` (any numpy index) as a new CrystalSet."""
        idx = np.arange(len(self))[index]
        return CrystalSet(
            atomic_numbers=self.atomic_numbers[idx],
            frac_coords=self.frac_coords[idx],
            lattice=self.lattice[idx],
            space_group=self.space_group[idx],
            num_sites=self.num_sites[idx],
            ids=self.ids[idx],
            properties={k: v[idx] for k, v in self.properties.items()},
            metadata=dict(self.metadata),
        )

    def with_max_sites(self, max_sites: int) -> CrystalSet:
        """Return a copy padded (or trimmed) to ``max_sites`` slots.

        Raises:
            CrysgenError: if a crystal has more sites than ``max_sites``.
        """
        if len(self) and int(self.num_sites.max()) > max_sites:
            raise CrysgenError(
                f"a crystal has {int(self.num_sites.max())} sites, more than max_sites={max_sites}"
            )
        n, s = len(self), self.max_sites
        z = np.zeros((n, max_sites), np.int16)
        f = np.zeros((n, max_sites, 3))
        k = min(s, max_sites)
        z[:, :k] = self.atomic_numbers[:, :k]
        f[:, :k] = self.frac_coords[:, :k]
        return CrystalSet(z, f, self.lattice, self.space_group, self.num_sites, self.ids,
                          dict(self.properties), dict(self.metadata))

    # ------------------------------------------------------------------ pymatgen
    @classmethod
    def from_structures(
        cls,
        structures: Sequence[Structure],
        *,
        ids: Sequence[str] | None = None,
        space_groups: Sequence[int] | None = None,
        properties: dict[str, Sequence[float]] | None = None,
        max_sites: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> CrystalSet:
        """Build a CrystalSet from ordered pymatgen structures, keeping their site order.

        Args:
            structures: ordered structures (every site fully occupied by one element).
            ids: one id per structure; defaults to "0", "1", ...
            space_groups: space-group numbers; 0 (unknown) when not given.
            properties: name -> one float per structure.
            max_sites: padded size S; defaults to the largest structure.
            metadata: stored as is.

        Raises:
            CrysgenError: for a disordered structure or one larger than ``max_sites``.
        """
        n = len(structures)
        sizes = [len(s) for s in structures]
        s_max = max_sites if max_sites is not None else max(sizes, default=1)
        if sizes and max(sizes) > s_max:
            raise CrysgenError(f"a structure has {max(sizes)} sites, more than max_sites={s_max}")
        z = np.zeros((n, s_max), np.int16)
        f = np.zeros((n, s_max, 3))
        lat = np.zeros((n, 6))
        for i, st in enumerate(structures):
            if not st.is_ordered:
                raise CrysgenError(f"structure {i} is disordered; CrystalSet holds ordered crystals")
            z[i, : len(st)] = [site.specie.Z for site in st]
            f[i, : len(st)] = wrap_unit(st.frac_coords)
            lat[i] = (*st.lattice.abc, *st.lattice.angles)
        return cls(
            atomic_numbers=z,
            frac_coords=f,
            lattice=lat,
            space_group=np.zeros(n) if space_groups is None else np.asarray(space_groups),
            num_sites=np.asarray(sizes, dtype=np.int16).reshape(n),
            ids=np.asarray([str(i) for i in range(n)] if ids is None else list(ids), dtype=str),
            properties={k: np.asarray(v, float) for k, v in (properties or {}).items()},
            metadata=dict(metadata or {}),
        )

    def to_structure(self, i: int) -> Structure:
        """Return crystal ``i`` as a pymatgen Structure (sites in stored order)."""
        from pymatgen.core import Lattice, Structure

        k = int(self.num_sites[i])
        lattice = Lattice.from_parameters(*self.lattice[i])
        return Structure(lattice, self.atomic_numbers[i, :k].tolist(), self.frac_coords[i, :k])

    def to_structures(self) -> list[Structure]:
        """Return every crystal as a pymatgen Structure."""
        return [self.to_structure(i) for i in range(len(self))]

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write a ``.npz`` file atomically and byte-reproducibly (fixed zip timestamps).

        Returns:
            The path written.
        """
        path = Path(path)
        arrays: dict[str, np.ndarray] = {name: getattr(self, name) for name in _ARRAY_FIELDS}
        for key in sorted(self.properties):
            arrays[_PROPERTY_PREFIX + key] = self.properties[key]
        arrays["metadata"] = np.asarray(json.dumps(self.metadata, sort_keys=True))
        write_npz_atomic(path, arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CrystalSet:
        """Load a CrystalSet written by :meth:`save`.

        Raises:
            CrysgenError: if the file is missing or is not a CrystalSet.
        """
        path = Path(path)
        if not path.is_file():
            raise CrysgenError(f"no such CrystalSet file: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in _ARRAY_FIELDS if k not in data.files]
                if missing:
                    raise CrysgenError(
                        f"{path} is not a CrystalSet (missing {', '.join(missing)}); "
                        "create one with `crysgen data prepare`"
                    )
                arrays = {k: data[k] for k in _ARRAY_FIELDS}
                props = {
                    k[len(_PROPERTY_PREFIX):]: data[k]
                    for k in data.files
                    if k.startswith(_PROPERTY_PREFIX)
                }
                meta = json.loads(data["metadata"].item()) if "metadata" in data.files else {}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CrysgenError(f"cannot read {path} as a CrystalSet: {exc}") from exc
        return cls(**arrays, properties=props, metadata=meta)

    @classmethod
    def concatenate(cls, sets: Iterable[CrystalSet]) -> CrystalSet:
        """Concatenate CrystalSets (padded to the largest S; properties missing -> NaN)."""
        sets = list(sets)
        if not sets:
            raise CrysgenError("nothing to concatenate")
        s_max = max(c.max_sites for c in sets)
        sets = [c.with_max_sites(s_max) for c in sets]
        names = sorted({k for c in sets for k in c.properties})
        props = {
            k: np.concatenate([c.properties.get(k, np.full(len(c), np.nan)) for c in sets])
            for k in names
        }
        return cls(
            atomic_numbers=np.concatenate([c.atomic_numbers for c in sets]),
            frac_coords=np.concatenate([c.frac_coords for c in sets]),
            lattice=np.concatenate([c.lattice for c in sets]),
            space_group=np.concatenate([c.space_group for c in sets]),
            num_sites=np.concatenate([c.num_sites for c in sets]),
            ids=np.concatenate([c.ids for c in sets]),
            properties=props,
            metadata=dict(sets[0].metadata),
        )


def reduced_formula(atomic_numbers: Iterable[int]) -> str:
    """Reduced formula (pymatgen's) of one crystal's atomic numbers, one per site (0: no site)."""
    from collections import Counter

    from pymatgen.core import Composition, Element

    counts = Counter(int(z) for z in atomic_numbers if z)
    return Composition({Element.from_Z(z): c for z, c in counts.items()}).reduced_formula


def wrap_unit(frac: np.ndarray) -> np.ndarray:
    """Wrap fractional coordinates into [0, 1), mapping values that round to 1.0 onto 0.0."""
    out = np.mod(frac, 1.0)
    out[out >= 1.0] = 0.0
    return out


def part_path(path: Path) -> Path:
    """A fresh name beside ``path`` (``<name>.<pid>.<random>.part``) to write before renaming onto ``path``.

    Unique per call, so that concurrent writers of one path (two evaluations filling one cache)
    never write into, or rename away, each other's file. Creates ``path``'s folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.part")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a ``.part`` file and a rename (never half-written)."""
    tmp = part_path(path)
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed-deflate ``.npz`` with fixed timestamps, atomically.

    ``numpy.savez`` stamps the current time into the zip entries; fixing it makes the same
    arrays give the same bytes. The file appears under its name only once complete.
    """
    tmp = part_path(path)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
