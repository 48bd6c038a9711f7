from __future__ import annotations

from pymatgen.core import Lattice, Structure

from crysgen.evaluation.validity import close_pairs, structurally_valid
from tests.conftest import load_cif


def test_real_crystals_are_valid():
    assert structurally_valid(load_cif("NaCl")) and structurally_valid(load_cif("triclinic_LiFePO"))


def test_overlapping_atoms_and_flat_cells_are_invalid():
    close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]])  # 0.4 Å apart
    assert not structurally_valid(close)
    assert structurally_valid(Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.2, 0, 0]]))
    flat = Structure(Lattice.from_parameters(0.01, 3, 3, 90, 90, 90), ["Na"], [[0, 0, 0]])
    assert not structurally_valid(flat)


def test_close_pairs_are_the_pairs_that_fail_validity():
    # sites 1, 2: 0.2 Å apart; sites 0, 3: 0.2 Å apart across the cell face
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl", "Cl", "Na"],
                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.55, 0.5, 0.5], [0.95, 0, 0]])
    pairs = close_pairs(s)
    assert [(i, j) for i, j, _ in pairs] == [(0, 3), (1, 2)]
    assert [round(d, 6) for _, _, d in pairs] == [0.2, 0.2]
    assert close_pairs(load_cif("NaCl")) == [] and structurally_valid(load_cif("NaCl"))
    s.remove_sites([2, 3])
    assert close_pairs(s) == [] and structurally_valid(s)
