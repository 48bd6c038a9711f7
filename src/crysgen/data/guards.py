"""Checks that keep bad input away from native code and say what is wrong with it.

spglib (through pymatgen's ``SpacegroupAnalyzer``) can kill the whole process with a
segmentation fault on a cell with a NaN or infinite length or a 0° angle; pymatgen's CIF parser
silently drops sites of occupancy 0, reads a negative length as positive and returns only the
first data block. Everything in crysgen that reads crystals or calls spglib goes through this
module, so such inputs get a reason (``degenerate_lattice: ...``) instead of a crash or a
silent change.

Reason kinds (the text before the first colon of a reason): see :data:`REASONS`.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    from pymatgen.core import Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

TextFormat = Literal["cif", "poscar"]
"""The text formats of structures that crysgen parses itself."""

MIN_LENGTH = 0.1
"""Shortest accepted cell length (Å); no real crystal has a shorter lattice vector."""
MAX_LENGTH = 1000.0
"""Longest accepted cell length (Å); longer is taken for a unit or typing error."""
MIN_VOLUME = 0.01
"""Smallest accepted cell volume (Å³). (CDVAE's structural validity asks for 0.1 Å³; cells between
the two are read and counted structurally invalid by the metrics.)"""
MIN_FLATNESS = 1e-3
"""Smallest accepted volume / (a·b·c): below it the angles leave (almost) no volume (0° or 180°
angles, or three angles that do not close a cell)."""
MIN_SITE_DISTANCE = 0.5
"""Default tolerance (Å) of ``crysgen data prepare`` for two sites of one crystal (periodic)."""

REASONS = {
    "degenerate_lattice": "non-finite, negative, zero, absurd or flat cell (checked before spglib)",
    "bad_coordinates": "non-finite fractional coordinates",
    "zero_occupancy": "a site with occupancy 0 or below (pymatgen would silently delete it)",
    "unknown_element": "a species that is not a chemical element (e.g. Xx, a dummy species)",
    "close_sites": "two sites closer than the tolerance (coincident atoms)",
    "unparsable": "the text could not be parsed (the parser's message follows)",
    "worker_died": "the process working on the entry died (a crash in native code)",
}


class InputProblem(ValueError):
    """One input that cannot be used, with a reason kind (see :data:`REASONS`) and details."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def short(exc: BaseException | str, limit: int = 200) -> str:
    """An exception (or text) as one line of at most ``limit`` characters."""
    msg = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


# ---------------------------------------------------------------------- lattices
def lattice_problem(lattice: Any) -> str | None:
    """Why a cell cannot be handed to spglib or a neighbour search, or None if it can.

    Args:
        lattice: six parameters (a, b, c in Å, α, β, γ in degrees), a 3×3 matrix of lattice
            vectors (Å, rows), or a pymatgen ``Lattice``.

    Returns:
        A short description (e.g. ``"non-finite length a = nan Å"``), or None.
    """
    matrix = getattr(lattice, "matrix", None)
    arr = np.asarray(matrix if matrix is not None else lattice, dtype=float)
    if arr.shape == (3, 3):
        if not np.isfinite(arr).all():
            return "non-finite lattice vectors"
        lengths = np.linalg.norm(arr, axis=1)
        volume = abs(float(np.linalg.det(arr)))
        params = None
    elif arr.shape == (6,):
        params = arr
        names = ("length a", "length b", "length c", "angle alpha", "angle beta", "angle gamma")
        for name, v in zip(names, arr, strict=True):
            if not math.isfinite(v):
                return f"non-finite {name} = {v}"
        lengths = arr[:3]
        for name, v in zip(names[3:], arr[3:], strict=True):
            if not 0.0 < v < 180.0:
                return f"{name} = {v:g}° (must be strictly between 0 and 180)"
        ca, cb, cg = np.cos(np.radians(arr[3:]))
        factor = 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg
        volume = float(np.prod(lengths) * math.sqrt(max(factor, 0.0)))
    else:
        return f"lattice of shape {arr.shape} (expected 6 parameters or a 3x3 matrix)"
    for axis, v in zip("abc", lengths, strict=True):
        if v <= 0:
            return f"length {axis} = {v:g} Å (must be positive)"
        if v < MIN_LENGTH:
            return f"length {axis} = {v:.3g} Å < {MIN_LENGTH} Å"
        if v > MAX_LENGTH:
            return f"length {axis} = {v:.4g} Å > {MAX_LENGTH:g} Å"
    flat = volume / float(np.prod(lengths))
    if not flat >= MIN_FLATNESS:
        shown = (f"angles {params[3]:g}, {params[4]:g}, {params[5]:g}°" if params is not None
                 else "the lattice vectors")
        return f"{shown} leave no volume (volume / abc = {flat:.2g} < {MIN_FLATNESS:g})"
    if volume < MIN_VOLUME:
        return f"volume {volume:.3g} Å³ < {MIN_VOLUME} Å³"
    return None


def structure_problem(structure: Structure) -> InputProblem | None:
    """A degenerate cell or non-finite coordinates of a pymatgen structure, or None."""
    detail = lattice_problem(structure.lattice.matrix)
    if detail is None:
        detail = lattice_problem(np.array([*structure.lattice.abc, *structure.lattice.angles]))
    if detail is not None:
        return InputProblem("degenerate_lattice", detail)
    if len(structure) and not np.isfinite(structure.frac_coords).all():
        return InputProblem("bad_coordinates", "non-finite fractional coordinates")
    return None


def element_problem(structure: Structure) -> InputProblem | None:
    """A species that is not a chemical element (unknown symbol, dummy species), or None."""
    from pymatgen.core import Element

    bad = set()
    for site in structure:
        for sp in site.species:
            el = getattr(sp, "element", sp)
            if not isinstance(el, Element):
                bad.add(str(sp))
    return InputProblem("unknown_element", f"not an element: {', '.join(sorted(bad))}") if bad else None


def close_sites_problem(structure: Structure, tolerance: float = MIN_SITE_DISTANCE) -> InputProblem | None:
    """Two sites closer than ``tolerance`` Å (periodic images included), or None."""
    if len(structure) < 2:
        return None
    d = structure.distance_matrix
    iu = np.triu_indices(len(structure), 1)
    k = int(np.argmin(d[iu]))
    dmin = float(d[iu][k])
    if dmin >= tolerance:
        return None
    i, j = iu[0][k], iu[1][k]
    return InputProblem(
        "close_sites",
        f"sites {i} ({structure[i].species_string}) and {j} ({structure[j].species_string}) are "
        f"{dmin:.3g} Å apart (< {tolerance:g} Å)",
    )


# ---------------------------------------------------------------------- spglib
def check_symprec(symprec: float, what: str = "--symprec") -> float:
    """``symprec`` if it is a finite positive tolerance in Å (at most 1 Å); else CrysgenError."""
    value = float(symprec)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise CrysgenError(f"{what} must be a tolerance in Å between 0 (exclusive) and 1, got {symprec}")
    return value


def spacegroup_analyzer(structure: Structure, symprec: float = 0.01,
                        angle_tolerance: float = 5.0) -> SpacegroupAnalyzer:
    """The pymatgen SpacegroupAnalyzer of a structure, after the checks that keep spglib from crashing.

    Every call into spglib in crysgen goes through here.

    Raises:
        InputProblem: ``degenerate_lattice`` / ``bad_coordinates`` for a cell spglib cannot
            take (checked here, before spglib sees it).
        CrysgenError: for a tolerance that is not positive.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    check_symprec(symprec, "symprec")
    if not (math.isfinite(angle_tolerance) and (angle_tolerance > 0 or angle_tolerance == -1)):
        raise CrysgenError(f"angle tolerance must be positive (degrees), got {angle_tolerance}")
    problem = structure_problem(structure)
    if problem is not None:
        raise problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance)


def space_group_number(structure: Structure, symprec: float = 0.1) -> int:
    """The space-group number spglib finds at ``symprec`` Å (raises where it cannot)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(spacegroup_analyzer(structure, symprec).get_space_group_number())


def space_group_number_or_zero(structure: Structure, symprec: float = 0.1) -> int:
    """:func:`space_group_number`, or 0 where the cell is refused or spglib gives up.

    spglib gives up on some generated cells; this is the ``spglib_space_group`` column of
    `crysgen sample`'s samples.csv.
    """
    try:
        return space_group_number(structure, symprec)
    except Exception:
        return 0


# ---------------------------------------------------------------------- CIF text
def decode_text(raw: bytes) -> str:
    """File bytes as text: UTF-16/UTF-8 by their byte-order mark, else UTF-8 (bad bytes replaced)."""
    import codecs

    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16", errors="replace")
    return raw.decode("utf-8-sig", errors="replace")


_DATA_LINE = re.compile(r"^[ \t]*data_(\S*)", re.IGNORECASE)


def split_cif_blocks(text: str) -> list[tuple[str, str]]:
    """Split CIF text into its data blocks: [(block name, text of that block)].

    Comment lines before the first block go with it; ``data_`` inside a semicolon text field
    does not start a block. Text without any ``data_`` line is returned whole (name "").
    """
    lines = text.splitlines(keepends=True)
    starts: list[tuple[int, str]] = []
    in_field = False
    for k, line in enumerate(lines):
        if line.startswith(";"):
            in_field = not in_field
            continue
        if not in_field:
            m = _DATA_LINE.match(line)
            if m:
                starts.append((k, m.group(1)))
    if len(starts) <= 1:
        return [(starts[0][1] if starts else "", text)]
    blocks = []
    for n, (k, name) in enumerate(starts):
        begin = 0 if n == 0 else k
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        blocks.append((name, "".join(lines[begin:end])))
    return blocks


def block_ids(stem: str, names: list[str]) -> list[str]:
    """Ids of the blocks of one file: ``stem`` for a single block, else ``stem:name``.

    A block without a name gets ``stem:<k>``, a repeated name ``stem:name#k`` (k: block index).
    """
    if len(names) <= 1:
        return [stem]
    seen: dict[str, int] = {}
    out = []
    for k, name in enumerate(names):
        label = name or str(k)
        seen[label] = seen.get(label, 0) + 1
        out.append(f"{stem}:{label}" if seen[label] == 1 else f"{stem}:{label}#{k}")
    return out


def _cif_number(value: Any) -> float | None:
    """A CIF numeric field as float (uncertainty in brackets dropped); None if not a number."""
    text = str(value).strip().strip("'\"")
    text = re.sub(r"\(\d*\)$", "", text)
    try:
        return float(text)
    except ValueError:
        return None


def cif_block_problem(data: dict[str, Any]) -> InputProblem | None:
    """Problems pymatgen's parser would hide, from one block's raw CIF fields.

    Checks the six cell fields as written (pymatgen turns a negative length positive and a NaN
    into a NaN cell) and the occupancies (pymatgen deletes sites of occupancy 0).
    """
    keys = ("_cell_length_a", "_cell_length_b", "_cell_length_c",
            "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
    values = [_cif_number(data[k]) if k in data else None for k in keys]
    for k, v in zip(keys, values, strict=True):
        if v is not None and k.startswith("_cell_length") and math.isfinite(v) and v <= 0:
            return InputProblem("degenerate_lattice", f"{k} = {data[k]} (must be positive)")
    if all(v is not None for v in values):
        detail = lattice_problem(np.array(values, dtype=float))
        if detail is not None:
            return InputProblem("degenerate_lattice", detail)
    occupancies = data.get("_atom_site_occupancy")
    if occupancies is not None:
        occupancies = occupancies if isinstance(occupancies, list) else [occupancies]
        labels = data.get("_atom_site_label") or data.get("_atom_site_type_symbol") or []
        labels = labels if isinstance(labels, list) else [labels]
        for i, occ in enumerate(occupancies):
            v = _cif_number(occ)
            if v is not None and not (v > 0):
                label = labels[i] if i < len(labels) else f"#{i}"
                return InputProblem("zero_occupancy", f"site {label} has occupancy {occ}")
    return None


def parse_structure(text: str, fmt: TextFormat = "cif") -> Structure:
    """Parse one structure (one CIF data block, or POSCAR text) without silent changes.

    Raises:
        InputProblem: ``unparsable`` with the parser's own message (shortened), or one of the
            kinds of :func:`cif_block_problem` and :func:`structure_problem`.
    """
    from pymatgen.core import Structure

    if not text.strip():
        raise InputProblem("unparsable", "empty structure text")
    if "\x00" in text:
        raise InputProblem("unparsable", "not text: it holds NUL bytes (binary data, or UTF-16 "
                           "without a byte-order mark)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt != "cif":
            try:
                structure = Structure.from_str(text, fmt=fmt)
            except Exception as exc:  # pymatgen raises many types on broken text
                raise InputProblem("unparsable", short(exc)) from exc
        else:
            structure = _parse_cif(text)
    problem = structure_problem(structure)
    if problem is not None:
        raise problem
    return structure


def _parse_cif(text: str) -> Structure:
    """Exactly ``Structure.from_str(text, fmt="cif")`` after the raw-field checks."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifParser

    try:
        parser = CifParser.from_str(text)
    except Exception as exc:  # the CIF grammar itself failed
        raise InputProblem("unparsable", short(exc)) from exc
    blocks = list(getattr(getattr(parser, "_cif", None), "data", {}).values())
    for block in blocks:
        problem = cif_block_problem(getattr(block, "data", {}))
        if problem is not None:
            raise problem
    try:
        parsed = parser.parse_structures(primitive=False)[0]
    except Exception as exc:  # "Invalid CIF file with no structures!": say why
        told = [w.replace("No structure parsed for section 1 in CIF.", "").strip()
                for w in getattr(parser, "warnings", [])]
        told = [w for w in told if w]
        raise InputProblem("unparsable", short("; ".join(told) if told else exc)) from exc
    return Structure.from_sites(parsed, properties=parsed.properties)


# ---------------------------------------------------------------------- options and outputs
def check_device(device: str) -> str:
    """``device`` if torch can use it here ("cpu", "cuda", "cuda:N"); else CrysgenError.

    Cheap: torch is imported only for a CUDA device.
    """
    text = str(device).strip()
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if text != "cpu" and m is None:
        raise CrysgenError(f"--device {device!r}: use cpu, cuda or cuda:N")
    if m is not None:
        import torch

        if not torch.cuda.is_available():
            raise CrysgenError(f"--device {device}: no CUDA device on this machine; use --device cpu")
        if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            raise CrysgenError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                               "CUDA device(s)")
    return text


def check_output_file(path: str | Path, what: str = "--out", suffix: str | None = None) -> Path:
    """Refuse an output file path that is a folder, has the wrong suffix or cannot be made."""
    p = Path(path)
    if suffix is not None and p.suffix != suffix:
        raise CrysgenError(f"{what} must end in {suffix}, got {p}")
    if p.is_dir():
        raise CrysgenError(f"{what} {p} is a folder; give a file name")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CrysgenError(f"{what} {p}: {parent} is a file, not a folder")
    return p


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """Refuse an output folder path that is an existing file (or lies below one)."""
    p = Path(path)
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise CrysgenError(f"{what} {p}: {probe} is a file, not a folder")
    return p


def check_input_file(path: str | Path | None, what: str) -> None:
    """Refuse a named input file that does not exist (before any long work)."""
    if path is not None and not Path(path).is_file():
        raise CrysgenError(f"{what}: no such file: {path}")


# ---------------------------------------------------------------------- strict JSON
def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None (JSON null).

    Numpy scalars and arrays become Python values, so ``json.dumps(..., allow_nan=False)`` works.
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`strict_json` (obj) with ``allow_nan=False``: NaN is written null."""
    import json

    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)
