"""Any crystal input a user hands to a command, as (id, Structure or reason) pairs.

Used by commands that read crystals but do not prepare a dataset (``crysgen predict``, and the
evaluation commands): a CIF, several CIFs, a folder of CIFs, a ``crysgen sample`` output folder
(its ``cifs/``), a CrystalSet ``.npz``, a CDVAE-style CSV or an ASE-readable file. A structure
that cannot be parsed keeps its id and gets a reason instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from crysgen.data.guards import InputProblem, element_problem, parse_structure, short, structure_problem
from crysgen.errors import CrysgenError

if TYPE_CHECKING:
    from pymatgen.core import Structure


@dataclass
class InputCrystal:
    """One input crystal: its id, and either the structure or why there is none."""

    id: str
    structure: Structure | None
    problem: str | None = None


def load_inputs(paths: str | Path | Sequence[str | Path], limit: int | None = None) -> list[InputCrystal]:
    """Read crystals from one or more inputs (see the module docstring), in input order.

    Args:
        paths: one input or several.
        limit: only the first ``limit`` crystals (the same as slicing the whole list, but
            without parsing the rest: a 10,000-sample folder took 28 s to parse).

    Raises:
        CrysgenError: if an input does not exist or is of no known kind.
    """
    from crysgen.crystal_set import CrystalSet
    from crysgen.data.sources import read_source

    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[InputCrystal] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise CrysgenError(f"input not found: {path}")
        left = None if limit is None else limit - len(out)
        if left is not None and left <= 0:
            break
        if path.suffix == ".npz":
            cs = CrystalSet.load(path)
            count = len(cs) if left is None else min(len(cs), left)
            out += [_checked(str(cs.ids[i]), partial(cs.to_structure, i)) for i in range(count)]
            continue
        failed: list[InputCrystal] = []
        if path.is_dir() and (path / "cifs").is_dir() and (path / "sample_config.json").is_file():
            failed = _undecoded_samples(path)  # a `crysgen sample` output folder: its failures count
            path = path / "cifs"
            if failed and not any(p.suffix.lower() == ".cif" for p in path.iterdir()):
                out += failed  # nothing decoded: every sample is a failure with its reason
                continue
        start = len(out)
        for rec in read_source(path, limit=left).records:  # CIF names sort as the sample ids
            if rec.structure is None and rec.problem is not None:
                out.append(InputCrystal(rec.id, None, f"unparsable: {rec.problem}"))
            elif rec.structure is not None:
                out.append(_usable(rec.id, rec.structure))
            else:
                out.append(_checked(rec.id, partial(parse_structure, rec.text or "", rec.fmt or "cif")))
        if failed:  # samples in id order, the undecoded ones with their reason
            out[start:] = sorted(out[start:] + failed, key=lambda c: c.id)
    return out if limit is None else out[:limit]


def _checked(ident: str, build: Callable[[], Structure]) -> InputCrystal:
    """An input crystal from ``build()``, or its id with the reason it cannot be used.

    Reasons: the kinds of :mod:`crysgen.data.guards` (``degenerate_lattice``, ``unknown_element``,
    ``zero_occupancy``, ``unparsable`` with the parser's message, ...) and ``disordered``.
    """
    try:
        structure = build()
    except InputProblem as exc:
        return InputCrystal(ident, None, str(exc))
    except Exception as exc:  # a broken file becomes a reason in its row
        return InputCrystal(ident, None, f"unparsable: {short(exc)}")
    return _usable(ident, structure)


def _usable(ident: str, structure: Structure) -> InputCrystal:
    """An input crystal, or its id with the reason its parsed structure cannot be used."""
    problem = structure_problem(structure) or element_problem(structure)
    if problem is not None:
        return InputCrystal(ident, None, str(problem))
    if not structure.is_ordered:
        return InputCrystal(ident, None, "disordered (partial occupancies)")
    return InputCrystal(ident, structure)


def _undecoded_samples(folder: Path) -> list[InputCrystal]:
    """The samples of a `crysgen sample` folder that did not decode (from its samples.csv).

    They are samples all the same: metrics over "all samples" (CDVAE's validity) count them as
    failures, with the decoder's reason.
    """
    import csv

    table = folder / "samples.csv"
    if not table.is_file():
        return []
    with table.open(newline="") as f:
        return [InputCrystal(row["id"], None, f"not decoded: {row['failure']}")
                for row in csv.DictReader(f) if row.get("failure")]
