"""Regenerate the small structure files used by the tests (run from the repository root).

All structures are built here from textbook parameters, so nothing comes from outside.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

HERE = Path(__file__).parent


def structures() -> dict[str, Structure]:
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])
    srtio3 = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                       [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    zno = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.207), ["Zn", "O"],
                                    [[1 / 3, 2 / 3, 0.0], [1 / 3, 2 / 3, 0.382]])
    tric = Structure(Lattice.from_parameters(4.1, 5.3, 6.2, 78.0, 85.0, 101.0),
                     ["Li", "Fe", "P", "O"],
                     [[0.1, 0.2, 0.3], [0.55, 0.45, 0.7], [0.8, 0.1, 0.05], [0.3, 0.75, 0.9]])
    rng = np.random.default_rng(7)
    big = {}
    for n in (52, 53):
        grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
        pick = rng.choice(len(grid), n, replace=False)
        frac = (grid[pick] + 0.5 + rng.uniform(-0.1, 0.1, (n, 3))) / 4
        species = ["Mg" if i % 3 else "O" for i in range(n)]
        big[n] = Structure(Lattice.from_parameters(11.0, 11.5, 12.0, 88.0, 92.0, 95.0),
                           species, frac)
    return {"NaCl": nacl, "SrTiO3": srtio3, "ZnO_wurtzite": zno, "triclinic_LiFePO": tric,
            "P1_52_sites": big[52], "P1_53_sites": big[53]}


def main() -> None:
    for name, st in structures().items():
        CifWriter(st).write_file(HERE / f"{name}.cif")
    disordered = structures()["NaCl"].copy()
    disordered.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    CifWriter(disordered).write_file(HERE / "disordered_NaKCl.cif")
    (HERE / "broken.cif").write_text("data_broken\n_cell_length_a 5.0\nthis is not a CIF\n")


if __name__ == "__main__":
    main()
