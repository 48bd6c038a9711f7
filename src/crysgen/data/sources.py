"""Read crystal sources into raw records: CDVAE-style CSVs, CIF folders, ASE-readable files.

Reading a source only splits it into records (an id, the structure text or an already-built
structure, and numeric properties); parsing and standardisation happen in
:mod:`crysgen.data.prepare`, in parallel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crysgen.data.guards import TextFormat, block_ids, decode_text, split_cif_blocks
from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    from pymatgen.core import Structure

_STRUCTURE_COLUMNS: tuple[TextFormat, ...] = ("cif", "poscar")
_ID_COLUMNS = ("material_id", "id", "mp_id", "name")


@dataclass
class RawRecord:
    """One crystal before parsing.

    Attributes:
        id: identifier kept through every later stage.
        text: the structure as CIF or POSCAR text (None when ``structure`` is given).
        fmt: format of ``text``.
        structure: an already-parsed pymatgen Structure (ASE sources).
        properties: numeric per-crystal values (NaN where missing).
        problem: why the record cannot be parsed, when known at read time.
    """

    id: str
    text: str | None = None
    fmt: TextFormat | None = None
    structure: Structure | None = None
    properties: dict[str, float] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class Source:
    """A read source: its records, the property names, and a description for the report."""

    records: list[RawRecord]
    property_names: list[str]
    kind: str
    path: str
    sha256: str


def read_source(source: str | Path, limit: int | None = None) -> Source:
    """Split a crystal source into raw records.

    Args:
        source: a CSV (plain or ``.gz``) with a ``cif`` or ``poscar`` column, a folder of
            ``.cif`` files, a single ``.cif`` file, or any file ASE reads (e.g. extxyz). A CIF
            file with several data blocks gives one record per block, ids ``file:block``.
        limit: keep only the first ``limit`` records.

    Returns:
        The records in source order (folders: sorted file names).

    Raises:
        CrysgenError: if the source does not exist or has no structure column.
    """
    path = Path(source)
    if not path.exists():
        raise CrysgenError(f"source not found: {path}")
    if path.is_dir():
        return _read_cif_folder(path, limit)
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return _read_csv(path, limit)
    if name.endswith(".cif"):
        records = cif_records(path.stem, decode_text(path.read_bytes()))
        records = records[:limit] if limit is not None else records
        return Source(records, [], "cif", str(path), _sha256_file(path))
    return _read_ase(path, limit)


def _read_csv(path: Path, limit: int | None) -> Source:
    import pandas as pd

    try:
        df = pd.read_csv(path, nrows=limit)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CrysgenError(f"cannot read CSV {path}: {exc}") from exc
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed:")]]
    struct_col = next((c for c in _STRUCTURE_COLUMNS if c in df.columns), None)
    if struct_col is None:
        raise CrysgenError(
            f"{path} has no structure column: expected one of {', '.join(_STRUCTURE_COLUMNS)}; "
            f"found {', '.join(map(str, df.columns))}"
        )
    id_col = next((c for c in _ID_COLUMNS if c in df.columns), None)
    ids = df[id_col].astype(str).tolist() if id_col else [str(i) for i in range(len(df))]
    prop_cols = [
        str(c)
        for c in df.columns
        if c not in (struct_col, id_col) and pd.api.types.is_numeric_dtype(df[c])
        and not pd.api.types.is_bool_dtype(df[c])
    ]
    values = {c: df[c].to_numpy(dtype=float) for c in prop_cols}
    texts = df[struct_col].tolist()
    records = []
    for i in range(len(df)):
        text = texts[i] if isinstance(texts[i], str) else ""
        props = {c: float(values[c][i]) for c in prop_cols}
        if struct_col == "cif":  # a cell with several data blocks gives one record per block
            for rec in cif_records(ids[i], text):
                rec.properties = dict(props)
                records.append(rec)
        else:
            records.append(RawRecord(id=ids[i], text=text, fmt=struct_col,
                                     properties=props))
    return Source(records, prop_cols, f"csv:{struct_col}", str(path), _sha256_file(path))


def _read_cif_folder(path: Path, limit: int | None) -> Source:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".cif" and p.is_file())
    if not files:
        raise CrysgenError(f"folder {path} holds no .cif files")
    digest = hashlib.sha256()
    records: list[RawRecord] = []
    for f in files:
        if limit is not None and len(records) >= limit:
            break
        raw = f.read_bytes()
        digest.update(f.name.encode() + b"\0" + raw)
        records += cif_records(f.stem, decode_text(raw))
    records = records[:limit] if limit is not None else records
    return Source(records, [], "cif-folder", str(path), digest.hexdigest())


def cif_records(stem: str, text: str) -> list[RawRecord]:
    """One record per data block of a CIF file: id ``stem``, or ``stem:block`` for several."""
    blocks = split_cif_blocks(text)
    ids = block_ids(stem, [name for name, _ in blocks])
    return [RawRecord(id=i, text=t, fmt="cif") for i, (_, t) in zip(ids, blocks, strict=True)]


def _read_ase(path: Path, limit: int | None) -> Source:
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    index = ":" if limit is None else f":{limit}"
    try:
        frames = ase.io.read(path, index=index)
    except Exception as exc:  # ASE raises many exception types for unknown formats
        raise CrysgenError(
            f"cannot read {path}: not a CSV, CIF or a format ASE understands ({exc})"
        ) from exc
    frames = frames if isinstance(frames, list) else [frames]
    prop_names = sorted(
        {k for a in frames for k, v in a.info.items() if isinstance(v, (int, float, np.number))
         and not isinstance(v, bool) and k not in _ID_COLUMNS}
    )
    records = []
    for i, atoms in enumerate(frames):
        ident = next((str(atoms.info[k]) for k in _ID_COLUMNS if k in atoms.info), None)
        structure, problem = None, None
        if not atoms.pbc.all():
            problem = "not periodic in all three directions"
        else:
            try:
                structure = AseAtomsAdaptor.get_structure(atoms)
            except Exception as exc:  # a frame ASE read but pymatgen cannot build
                problem = f"pymatgen cannot build it: {exc}"
        records.append(
            RawRecord(
                id=ident or f"{path.stem}-{i}",
                structure=structure,
                problem=problem,
                properties={k: float(atoms.info.get(k, np.nan)) for k in prop_names},
            )
        )
    return Source(records, prop_names, "ase", str(path), _sha256_file(path))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
